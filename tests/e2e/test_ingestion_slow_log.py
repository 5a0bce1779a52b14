"""Ingestion while the event log is slow: the feed is still read, a feed drop
is followed by a prompt reconnect, a publish that hangs is given up and
retried, and what reaches the log is in the order it was accepted.

A scripted exchange (a real `websockets` server on loopback) sends the ticks;
the log is the real embedded one (and, for the reconnect, real Kafka with
MOCKTRADE_TEST_STACK=1), behind a gate the test opens and closes.
Each tick's price is its sequence number plus one (a price must be
positive), so order is easy to check.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict

import orjson
import pytest
import websockets
from prometheus_client import REGISTRY

from mocktrade.adapters.embedded.eventlog import SqliteEventLog
from mocktrade.domain.events import TOPIC_MARKET_DATA, decode_envelope, decode_market_data
from mocktrade.services.ingestion import IngestionService

pytestmark = pytest.mark.e2e

SYMBOLS = ("MOCKAAA", "MOCKBBB", "MOCKCCC")
CLOSE_TRY_AGAIN_LATER = 1013  # what the feed server sends a client too slow to keep up


@pytest.fixture(params=["embedded", "kafka"])
async def any_log(request, tmp_path):
    """The real log of either kind; the caller closes it."""
    if request.param == "kafka":
        from mocktrade.adapters.kafka import KafkaEventLog

        engines = request.getfixturevalue("real_engines")
        return KafkaEventLog(engines["MOCKTRADE_KAFKA_BOOTSTRAP"],
                             topic_prefix=f"ingest{uuid.uuid4().hex[:8]}.", partitions=4)
    return SqliteEventLog(tmp_path / "eventlog.sqlite3")


class GatedLog:
    """The real log, whose publish_many waits at a gate first, and
    whose first `hang_first` calls never return at all (a stuck publish)."""

    def __init__(self, inner, hang_first: int = 0):
        self.inner = inner
        self.gate = asyncio.Event()
        self.hang_first = hang_first
        self.calls: list[int] = []  # batch size of each call
        self.blocked = 0  # ticks in the call waiting at the gate

    async def publish_many(self, topic, records):
        self.calls.append(len(records))
        if len(self.calls) <= self.hang_first:
            await asyncio.Event().wait()
        self.blocked = len(records)
        try:
            await self.gate.wait()
        finally:
            self.blocked = 0
        await self.inner.publish_many(topic, records)


def tick_frame(sequence: int) -> str:
    symbol = SYMBOLS[sequence % len(SYMBOLS)]
    return orjson.dumps([{"type": "tick", "s": symbol, "p": f"{sequence + 1}.0000",
                          "t": time.time_ns() // 1000}]).decode()


async def wait_until(condition, what, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        await asyncio.sleep(0.01)


async def logged_sequences(event_log, expected: int) -> dict[str, list[int]]:
    """Each symbol's sequence numbers in log order."""
    consumer = event_log.consumer(TOPIC_MARKET_DATA, "check")
    by_symbol: dict[str, list[int]] = defaultdict(list)
    deadline, seen = time.monotonic() + 10, 0
    while seen < expected and time.monotonic() < deadline:
        for record in await consumer.poll(1000, 0.2):
            tick = decode_market_data(decode_envelope(record.value).payload)
            assert record.key == tick.symbol
            by_symbol[tick.symbol].append(int(tick.price) - 1)
            seen += 1
    assert not await consumer.poll(1000, 0.2), "more ticks in the log than published"
    return by_symbol


def split_by_symbol(sequences) -> dict[str, list[int]]:
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for sequence in sequences:
        by_symbol[SYMBOLS[sequence % len(SYMBOLS)]].append(sequence)
    return dict(by_symbol)


async def run_ingestion(exchange, log: GatedLog, body, **options) -> IngestionService:
    async with websockets.serve(exchange, "127.0.0.1", 0) as feed_server:
        port = feed_server.sockets[0].getsockname()[1]
        ingestion = IngestionService(f"ws://127.0.0.1:{port}/", log, initial_backoff=0.05,
                                     **options)
        task = asyncio.create_task(ingestion.run())
        try:
            await body(ingestion)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return ingestion


async def test_feed_drop_reconnects_while_a_publish_waits_and_order_is_kept(any_log):
    connections = 0

    async def exchange(ws):
        nonlocal connections
        connections += 1
        if connections == 1:
            for sequence in range(0, 60):
                await ws.send(tick_frame(sequence))
            # As the feed server drops a client that falls behind.
            await ws.close(CLOSE_TRY_AGAIN_LATER, "slow consumer")
            return
        for sequence in range(60, 120):
            await ws.send(tick_frame(sequence))
        await ws.wait_closed()

    event_log = any_log
    log = GatedLog(event_log)

    async def body(ingestion: IngestionService) -> None:
        # The log takes nothing, yet the drop is noticed and the second
        # connection's ticks are read too.
        await wait_until(lambda: ingestion.reconnects >= 1 and connections == 2
                         and ingestion.stats()["ticksWaiting"] + log.blocked == 120,
                         lambda: (ingestion.stats(), log.blocked, connections), timeout=5)
        assert ingestion.ticks_published == 0 and len(log.calls) == 1
        log.gate.set()
        await wait_until(lambda: ingestion.ticks_published == 120, ingestion.stats)

    ingestion = await run_ingestion(exchange, log, body)
    try:
        logged = await logged_sequences(event_log, 120)
    finally:
        await event_log.close()
    assert dict(logged) == split_by_symbol(range(120))  # all, once each, in feed order
    assert ingestion.ticks_dropped == 0
    # What waited behind the blocked batch went out in one batch, not one per frame.
    assert len(log.calls) == 2 and sum(log.calls) == 120


async def test_a_publish_that_hangs_is_given_up_and_its_batch_sent_again_first(tmp_path):
    async def exchange(ws):
        for sequence in range(0, 30):
            await ws.send(tick_frame(sequence))
            await asyncio.sleep(0.005)
        await ws.wait_closed()

    event_log = SqliteEventLog(tmp_path / "eventlog.sqlite3")
    log = GatedLog(event_log, hang_first=1)
    log.gate.set()

    async def body(ingestion: IngestionService) -> None:
        await wait_until(lambda: ingestion.ticks_published == 30, ingestion.stats)

    started = time.monotonic()
    ingestion = await run_ingestion(exchange, log, body, publish_timeout=0.3)
    try:
        logged = await logged_sequences(event_log, 30)
    finally:
        await event_log.close()
    assert time.monotonic() - started < 5
    # The stuck batch was sent again (call 2) before anything newer.
    assert len(log.calls) >= 3 and log.calls[1] == log.calls[0]
    assert dict(logged) == split_by_symbol(range(30))
    assert ingestion.reconnects == 0


async def test_when_the_log_stays_away_the_oldest_waiting_ticks_are_dropped(tmp_path):
    async def exchange(ws):
        for sequence in range(0, 40):
            await ws.send(tick_frame(sequence))
        await ws.wait_closed()

    event_log = SqliteEventLog(tmp_path / "eventlog.sqlite3")
    log = GatedLog(event_log)
    dropped_before = REGISTRY.get_sample_value("mocktrade_feed_ticks_dropped_total") or 0.0

    async def body(ingestion: IngestionService) -> None:
        await wait_until(lambda: log.blocked and ingestion.stats()["ticksWaiting"] == 10
                         and log.blocked + ingestion.ticks_dropped + 10 == 40,
                         lambda: (ingestion.stats(), log.blocked))
        log.gate.set()
        await wait_until(lambda: ingestion.stats()["ticksWaiting"] == 0
                         and ingestion.ticks_published == 40 - ingestion.ticks_dropped,
                         ingestion.stats)

    ingestion = await run_ingestion(exchange, log, body, max_waiting=10)
    first = log.calls[0]
    try:
        logged = await logged_sequences(event_log, first + 10)
    finally:
        await event_log.close()
    # The batch in flight, then the newest ten: nothing accepted is reordered.
    assert dict(logged) == split_by_symbol([*range(first), *range(30, 40)])
    assert ingestion.ticks_dropped == 30 - first > 0
    # An operator sees the drops on /metrics, not only in the log.
    assert REGISTRY.get_sample_value("mocktrade_feed_ticks_dropped_total") - dropped_before \
        == ingestion.ticks_dropped
