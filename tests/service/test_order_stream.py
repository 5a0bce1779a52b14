"""The orders channel's reader over the embedded log and portfolio store: it
reads order_updates only while someone is subscribed, and a member gets
every update after its join, in order, however often the reader closed."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from mocktrade.domain.events import TOPIC_TRADE_ORDERS, encode, trade_order_payload
from mocktrade.domain.model import Order, Side
from mocktrade.jobs.execution import ExecutionHandler
from mocktrade.services import order_stream
from mocktrade.services.auth import TokenIssuer
from mocktrade.services.order_stream import OrderStream

from .conftest import NOW


class Subscriber:
    address = "127.0.0.1"

    def __init__(self):
        self.topics: set[str] = set()
        self.pushed: list[int] = []


async def _execute(b, execution, consumer, order_id: str) -> None:
    order = Order(order_id, "alice", "MOCKAAPL", Decimal("1"), Side.BUY, NOW)
    await b.event_log.publish(TOPIC_TRADE_ORDERS, "alice", encode("test", trade_order_payload(order)))
    await execution.handle(await consumer.poll(10, 1.0))


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def quick_idle(monkeypatch):
    monkeypatch.setattr(order_stream, "IDLE_CLOSE", 0.3)


async def test_the_log_is_read_only_while_someone_is_subscribed(backends, quick_idle):
    b = backends
    tokens = TokenIssuer("k" * 32, 3600)
    sub = Subscriber()
    stream = OrderStream(b.event_log, b.portfolios, tokens,
                         lambda s, topic, payload: s.pushed.append(payload["seq"]) or True)
    stop = asyncio.Event()
    reading = asyncio.create_task(stream.consume(stop))
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    orders = b.event_log.consumer(TOPIC_TRADE_ORDERS, "exec")
    try:
        await _execute(b, execution, orders, "before-anyone")
        await asyncio.sleep(0.1)
        assert not stream.reading

        token = tokens.issue("alice")
        joined = await stream.join(sub, "orders:alice", {"token": token})
        assert stream.reading
        await _execute(b, execution, orders, "while-joined")
        await _until(lambda: len(sub.pushed) == 2)  # ACCEPTED and FILLED of that order
        assert sub.pushed == [joined["seq"] + 1, joined["seq"] + 2]

        stream.leave(sub, "orders:alice")
        await _until(lambda: not stream.reading)  # let go after IDLE_CLOSE
        await _execute(b, execution, orders, "while-nobody-reads")

        # A member that comes back with `since` gets what it missed from the
        # store, then the live updates from the new reader, gapless.
        await stream.join(sub, "orders:alice", {"token": token, "since": sub.pushed[-1]})
        assert stream.reading
        await _execute(b, execution, orders, "after-rejoin")
        await _until(lambda: len(sub.pushed) == 6)
        assert sub.pushed == list(range(sub.pushed[0], sub.pushed[0] + 6))
    finally:
        stop.set()
        await orders.close()
        await asyncio.wait_for(reading, 5)
