"""PriceCache contract: latest price per symbol (Redis keys) plus updates (pub/sub)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from mocktrade.domain.model import PriceTick

T0 = datetime(2025, 3, 3, 14, 30, 0, 123456, tzinfo=timezone.utc)


def tick(symbol: str, price: str, seconds: float = 0) -> PriceTick:
    return PriceTick(symbol, Decimal(price), T0 + timedelta(seconds=seconds))


async def collect(subscription, count: int, timeout: float = 5.0) -> list[PriceTick]:
    received: list[PriceTick] = []

    async def read() -> None:
        async for update in subscription:
            received.append(update)
            if len(received) == count:
                return

    await asyncio.wait_for(read(), timeout)
    return received


async def test_unknown_symbol_has_no_price(price_cache):
    assert await price_cache.get_price("MOCKNONE") is None
    assert await price_cache.all_prices() == {}


async def test_latest_price_wins(price_cache):
    await price_cache.set_price(tick("MOCKAAPL", "187.2500"))
    await price_cache.set_price(tick("MOCKMSFT", "402.1000"))
    await price_cache.set_price(tick("MOCKAAPL", "187.3100", 1))

    latest = await price_cache.get_price("MOCKAAPL")
    assert latest == tick("MOCKAAPL", "187.3100", 1)
    assert str(latest.price) == "187.3100", "the price keeps its decimal scale"
    assert await price_cache.all_prices() == {
        "MOCKAAPL": tick("MOCKAAPL", "187.3100", 1), "MOCKMSFT": tick("MOCKMSFT", "402.1000")}


async def test_prices_survive_reopening(open_price_cache):
    cache = await open_price_cache()
    await cache.set_price(tick("MOCKAAPL", "187.2500"))
    await cache.set_price(tick("MOCKAAPL", "190.0001", 2))
    await cache.set_price(tick("MOCKKO", "61.5000"))
    await cache.close()

    reopened = await open_price_cache()
    assert await reopened.all_prices() == {
        "MOCKAAPL": tick("MOCKAAPL", "190.0001", 2), "MOCKKO": tick("MOCKKO", "61.5000")}
    assert (await reopened.get_price("MOCKAAPL")).timestamp == T0 + timedelta(seconds=2)


async def test_a_subscriber_gets_every_update_after_subscribing_in_order(price_cache):
    await price_cache.set_price(tick("MOCKAAPL", "1.0000"))
    subscription = price_cache.subscribe()
    sent = [tick("MOCKAAPL" if i % 2 else "MOCKKO", f"{100 + i}.0000", i) for i in range(50)]
    for update in sent:
        await price_cache.set_price(update)
    assert await collect(subscription, 50) == sent
    await subscription.aclose()


async def test_every_subscriber_gets_the_updates(price_cache):
    subscriptions = [price_cache.subscribe() for _ in range(3)]
    sent = [tick("MOCKV", f"{200 + i}.5000", i) for i in range(10)]
    for update in sent:
        await price_cache.set_price(update)
    for subscription in subscriptions:
        assert await collect(subscription, 10) == sent
        await subscription.aclose()


async def test_a_subscriber_that_reads_while_prices_flow(price_cache):
    subscription = price_cache.subscribe()
    reader = asyncio.create_task(collect(subscription, 20))
    sent = []
    for i in range(20):
        sent.append(tick("MOCKJPM", f"{150 + i}.0000", i))
        await price_cache.set_price(sent[-1])
        await asyncio.sleep(0.001)
    assert await reader == sent
    await subscription.aclose()


async def test_a_stalled_subscriber_never_blocks_publishing(price_cache):
    stalled = price_cache.subscribe()  # never read while prices are set
    # More updates than any subscriber buffer holds; each set must still
    # return promptly (the wait_for), however far behind the reader is.
    sent = [tick("MOCKTSLA", f"{i}.0000", i) for i in range(1, 5_001)]
    for update in sent:
        await asyncio.wait_for(price_cache.set_price(update), 1.0)
    assert await price_cache.get_price("MOCKTSLA") == sent[-1]

    # Whatever the subscriber still gets comes in order and ends with the newest.
    received: list[PriceTick] = []
    async def read_until_newest() -> None:
        async for update in stalled:
            received.append(update)
            if update == sent[-1]:
                return
    await asyncio.wait_for(read_until_newest(), 10)
    prices = [u.price for u in received]
    assert prices == sorted(prices) and len(set(prices)) == len(prices)
    if hasattr(stalled, "dropped"):  # the embedded cache counts what it dropped
        assert stalled.dropped == len(sent) - len(received)
    await stalled.aclose()


async def test_aclose_ends_the_iteration(price_cache):
    subscription = price_cache.subscribe()
    reader = asyncio.create_task(collect(subscription, 1000, timeout=10))
    await price_cache.set_price(tick("MOCKHD", "300.0000"))
    await asyncio.sleep(0.05)
    await subscription.aclose()
    # The reader's loop ends instead of waiting for updates that never come.
    done, _ = await asyncio.wait({reader}, timeout=5)
    assert reader in done
    assert reader.result() == [tick("MOCKHD", "300.0000")]
    await price_cache.set_price(tick("MOCKHD", "301.0000", 1))  # nobody listening: fine
