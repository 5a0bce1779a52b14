"""The price simulator: deterministic, exact, well-paced geometric Brownian motion."""

from __future__ import annotations

import asyncio
import math
import statistics
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from mocktrade.domain.money import PRICE_QUANTUM
from mocktrade.feed.simulator import TRADING_SECONDS_PER_YEAR, PriceSimulator

SYMBOLS = ["MOCKAAA", "MOCKBBB", "MOCKCCC"]
FIXED = datetime(2024, 11, 25, 15, 30, tzinfo=timezone.utc)


def simulator(**overrides) -> PriceSimulator:
    args = {"symbols": SYMBOLS, "ticks_per_second": 30.0, "volatility": 0.4, "seed": 7,
            "clock": lambda: FIXED}
    args.update(overrides)
    return PriceSimulator(**args)


def test_same_seed_gives_same_start_prices_and_path():
    first, second = simulator(), simulator()
    assert first.prices() == second.prices()
    assert [first.next_tick() for _ in range(300)] == [second.next_tick() for _ in range(300)]


def test_different_seeds_give_different_markets():
    assert simulator(seed=1).prices() != simulator(seed=2).prices()


def test_start_prices_lie_in_the_configured_range_at_price_scale():
    for price in simulator(symbols=[f"SYM{i}" for i in range(200)]).prices().values():
        assert Decimal(20) <= price <= Decimal(500)
        assert price == price.quantize(PRICE_QUANTUM)


def test_ticks_are_exact_positive_decimals_with_utc_time():
    sim = simulator(clock=lambda: datetime.now(timezone.utc))
    for _ in range(500):
        tick = sim.next_tick()
        assert isinstance(tick.price, Decimal)
        assert tick.price > 0
        assert tick.price.as_tuple().exponent == -4
        assert tick.timestamp.utcoffset().total_seconds() == 0


def test_symbols_take_turns_so_each_gets_an_equal_share_of_the_rate():
    sim = simulator()
    assert [sim.next_tick().symbol for _ in range(6)] == SYMBOLS * 2


def test_a_tick_becomes_the_latest_price_of_its_symbol():
    sim = simulator()
    tick = sim.next_tick()
    assert sim.prices()[tick.symbol] == tick.price


def test_log_returns_have_the_configured_volatility():
    # One symbol at 1 tick/s: each step spans one second of trading time.
    sim = simulator(symbols=["MOCKAAA"], ticks_per_second=1.0, volatility=0.4, seed=3)
    prices = [sim.next_tick().price for _ in range(20_000)]
    returns = [math.log(b / a) for a, b in zip(prices, prices[1:])]
    expected = 0.4 * math.sqrt(1 / TRADING_SECONDS_PER_YEAR)
    assert statistics.stdev(returns) == pytest.approx(expected, rel=0.1)


def test_zero_volatility_keeps_prices_still():
    sim = simulator(volatility=0.0)
    start = sim.prices()
    for _ in range(30):
        sim.next_tick()
    assert sim.prices() == start


def test_a_price_never_reaches_zero():
    sim = simulator(symbols=["MOCKAAA"], ticks_per_second=1e-9, volatility=50.0)
    assert all(sim.next_tick().price >= PRICE_QUANTUM for _ in range(200))


@pytest.mark.parametrize("kwargs, message", [
    ({"symbols": []}, "at least one symbol"),
    ({"symbols": ["A", "A"]}, "unique"),
    ({"ticks_per_second": 0}, "positive"),
    ({"volatility": -0.1}, "negative"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulator(**kwargs)


async def test_stream_paces_ticks_at_the_total_rate():
    sim = simulator(ticks_per_second=200.0)
    count = 0
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def consume():
        nonlocal count
        async for batch in sim.stream():
            count += len(batch)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    task.cancel()
    elapsed = loop.time() - start
    assert 0.8 * 200 * elapsed <= count <= 200 * elapsed + 2


async def test_run_hands_every_batch_to_each_listener_until_removed():
    sim = simulator(ticks_per_second=500.0)
    seen: list = []
    sim.add_listener(seen.extend)
    task = asyncio.create_task(sim.run())
    await asyncio.sleep(0.1)
    sim.remove_listener(seen.extend)
    count = len(seen)
    await asyncio.sleep(0.05)
    task.cancel()
    assert count > 10
    assert len(seen) == count
    assert {t.symbol for t in seen} == set(SYMBOLS)
