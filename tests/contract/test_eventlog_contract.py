"""EventLog contract: what Kafka promises the services, and the embedded log too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mocktrade.ports import LogRecord

TOPIC = "trade_orders"
CHILD = Path(__file__).with_name("_child.py")


async def drain(consumer, idle: float = 0.2) -> list[LogRecord]:
    """Everything the consumer can get until the log stays quiet for `idle` s."""
    records: list[LogRecord] = []
    while batch := await consumer.poll(500, idle):
        records.extend(batch)
    return records


def by_key(records: list[LogRecord]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record.value)
    return grouped


async def test_published_records_are_consumed_with_their_content(event_log):
    before = datetime.now(timezone.utc)
    await event_log.publish(TOPIC, "alice", b"first", {"traceparent": "00-abc-def-01"})
    await event_log.publish(TOPIC, "alice", b"second")
    records = await drain(event_log.consumer(TOPIC, "readers"))

    assert [(r.topic, r.key, r.value) for r in records] == [
        (TOPIC, "alice", b"first"), (TOPIC, "alice", b"second")]
    assert records[0].headers == {"traceparent": "00-abc-def-01"}
    assert records[1].headers == {}
    assert records[0].partition == records[1].partition
    assert [r.offset for r in records] == [0, 1]
    for record in records:
        assert record.timestamp is not None
        assert before - timedelta(seconds=5) <= record.timestamp <= datetime.now(timezone.utc)


async def test_order_is_kept_per_key_and_offsets_are_contiguous(event_log):
    keys = [f"user-{k}" for k in range(10)]
    for i in range(300):
        await event_log.publish(TOPIC, keys[i % 10], f"{i}".encode())
    records = await drain(event_log.consumer(TOPIC, "readers"))

    assert len(records) == 300
    for key, values in by_key(records).items():
        numbers = [int(v) for v in values]
        assert numbers == sorted(numbers), f"{key} out of order"
        assert len(numbers) == 30
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        partitions_of_key[record.key].add(record.partition)
        offsets[record.partition].append(record.offset)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    for partition, seen in offsets.items():
        assert seen == list(range(len(seen))), f"partition {partition} has gaps or disorder"


async def test_poll_honours_max_records_and_returns_empty_on_timeout(event_log):
    for i in range(25):
        await event_log.publish(TOPIC, "k", str(i).encode())
    consumer = event_log.consumer(TOPIC, "readers")
    first = await consumer.poll(max_records=10, timeout=1.0)
    assert [int(r.value) for r in first] == list(range(10))
    rest = await drain(consumer)
    assert [int(r.value) for r in rest] == list(range(10, 25))

    started = time.monotonic()
    assert await consumer.poll(max_records=10, timeout=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2.0


async def _lag_settles_at(consumer, expected: int, within: float = 5.0) -> int:
    """The consumer's total lag once it equals `expected` (Kafka's watermark
    comes with a fetch response), or what it was at the deadline."""
    deadline = time.monotonic() + within
    while True:
        total = sum((await consumer.lag()).values())
        if total == expected or time.monotonic() > deadline:
            return total
        await asyncio.sleep(0.1)


async def test_lag_is_what_the_consumer_has_not_read(event_log):
    """For mocktrade_consumer_lag_records: end offset minus position, per partition."""
    for i in range(25):
        await event_log.publish(TOPIC, f"k{i % 5}", str(i).encode())
    consumer = event_log.consumer(TOPIC, "readers")
    first = await consumer.poll(max_records=10, timeout=2.0)
    assert first
    assert await _lag_settles_at(consumer, 25 - len(first)) == 25 - len(first)
    await drain(consumer)
    assert await _lag_settles_at(consumer, 0) == 0
    assert all(lag >= 0 for lag in (await consumer.lag()).values())


async def test_a_waiting_poll_wakes_up_on_publish(event_log):
    consumer = event_log.consumer(TOPIC, "readers", reset="latest")
    waiting = asyncio.create_task(consumer.poll(10, timeout=10.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await event_log.publish(TOPIC, "k", b"wake")
    records = await asyncio.wait_for(waiting, 5)
    assert [r.value for r in records] == [b"wake"]
    assert time.monotonic() - started < 1.0


async def test_records_from_another_producer_instance_are_seen(open_event_log):
    # Stands in for a producer in another process: no in-process notification.
    reader_log = await open_event_log()
    writer_log = await open_event_log()
    consumer = reader_log.consumer(TOPIC, "readers", reset="latest")
    waiting = asyncio.create_task(consumer.poll(10, timeout=10.0))
    await asyncio.sleep(0.1)
    await writer_log.publish(TOPIC, "k", b"from elsewhere")
    records = await asyncio.wait_for(waiting, 5)
    assert [r.value for r in records] == [b"from elsewhere"]


async def test_topics_are_separate(event_log):
    await event_log.publish("market_data", "MOCKAAPL", b"price")
    await event_log.publish(TOPIC, "alice", b"order")
    assert [r.value for r in await drain(event_log.consumer("market_data", "g"))] == [b"price"]
    assert [r.value for r in await drain(event_log.consumer(TOPIC, "g"))] == [b"order"]


async def test_groups_consume_independently(event_log):
    for i in range(5):
        await event_log.publish(TOPIC, "k", str(i).encode())
    first = event_log.consumer(TOPIC, "execution")
    await first.commit(await drain(first))
    second = event_log.consumer(TOPIC, "audit")
    assert [int(r.value) for r in await drain(second)] == list(range(5))


async def test_uncommitted_records_are_redelivered_after_reopening(open_event_log):
    log = await open_event_log()
    for i in range(10):
        await log.publish(TOPIC, "alice", str(i).encode())
    consumer = log.consumer(TOPIC, "execution")
    records = await drain(consumer)
    assert len(records) == 10
    await consumer.commit(records[:4])
    await consumer.close()
    await log.close()

    reopened = await open_event_log()
    again = await drain(reopened.consumer(TOPIC, "execution"))
    assert [int(r.value) for r in again] == list(range(4, 10))
    assert [r.offset for r in again] == [r.offset for r in records[4:]]


async def test_nothing_committed_means_everything_is_redelivered(open_event_log):
    log = await open_event_log()
    for i in range(3):
        await log.publish(TOPIC, "bob", str(i).encode())
    assert len(await drain(log.consumer(TOPIC, "execution"))) == 3
    await log.close()

    reopened = await open_event_log()
    assert len(await drain(reopened.consumer(TOPIC, "execution"))) == 3


async def test_committed_offsets_survive_reopening(open_event_log):
    log = await open_event_log()
    for i in range(40):
        await log.publish(TOPIC, f"user-{i % 4}", str(i).encode())
    consumer = log.consumer(TOPIC, "execution")
    records = await drain(consumer)
    await consumer.commit(records)
    await log.close()

    reopened = await open_event_log()
    consumer = reopened.consumer(TOPIC, "execution")
    assert await consumer.poll(100, timeout=0.3) == []
    await reopened.publish(TOPIC, "user-1", b"after restart")
    assert [r.value for r in await drain(consumer)] == [b"after restart"]


async def test_reset_latest_skips_the_past_only_without_commits(event_log):
    for i in range(5):
        await event_log.publish(TOPIC, "k", str(i).encode())
    latest = event_log.consumer(TOPIC, "fresh", reset="latest")
    assert await latest.poll(10, timeout=0.2) == []
    await event_log.publish(TOPIC, "k", b"5")
    assert [r.value for r in await drain(latest)] == [b"5"]

    earliest = event_log.consumer(TOPIC, "committed")
    batch = await earliest.poll(2, timeout=1.0)
    await earliest.commit(batch)
    # Leave the group first: with Kafka a second open member would share the
    # partitions with `earliest`, which is a different promise.
    await earliest.close()
    resumed = event_log.consumer(TOPIC, "committed", reset="latest")
    assert [int(r.value) for r in await drain(resumed)] == [2, 3, 4, 5]


def _kill_mid_stream(target: str, location: str, acks_before_kill: int) -> list[int]:
    acked: list[int] = []
    with subprocess.Popen([sys.executable, str(CHILD), "publish", target, location, TOPIC],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            while len(acked) < acks_before_kill:
                line = child.stdout.readline()
                if not line:
                    raise AssertionError(f"publisher died early: {child.stderr.read()}")
                acked.append(int(line))
            os.kill(child.pid, signal.SIGKILL)
            # Lines already in the pipe were printed after their publish returned.
            acked.extend(int(line) for line in child.stdout.read().split())
        finally:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    return acked


async def test_acknowledged_publishes_survive_kill_9(open_event_log):
    backend = open_event_log.backend
    acked = await asyncio.to_thread(_kill_mid_stream, backend.target,
                                    open_event_log.location, 3000)
    log = await open_event_log()
    records = await drain(log.consumer(TOPIC, "audit"))

    found = {int(r.value) for r in records}
    missing = set(acked) - found
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    assert found <= set(range(max(acked) + 2)), "records that were never published"
    for values in by_key(records).values():
        numbers = [int(v) for v in values]
        assert numbers == sorted(numbers)
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        offsets[record.partition].append(record.offset)
    assert all(seen == list(range(len(seen))) for seen in offsets.values())


# -- embedded extras: batch publish and retention (Kafka has its own) ---------

async def test_publish_many_keeps_key_order_and_contiguous_offsets(event_log):
    if not hasattr(event_log, "publish_many"):
        pytest.skip("adapter has no batch publish")
    await event_log.publish(TOPIC, "a", b"-1")
    await event_log.publish_many(TOPIC, [(f"k{i % 3}", str(i).encode(), None) for i in range(30)]
                                 + [("a", b"30", {"h": "v"})])
    records = await drain(event_log.consumer(TOPIC, "g"))
    assert len(records) == 32
    for values in by_key(records).values():
        numbers = [int(v) for v in values]
        assert numbers == sorted(numbers)
    assert [r.headers for r in records if r.key == "a"] == [{}, {"h": "v"}]
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        offsets[record.partition].append(record.offset)
    assert all(seen == list(range(len(seen))) for seen in offsets.values())


async def test_retention_deletes_only_old_records_every_group_committed(event_log):
    if not hasattr(event_log, "apply_retention"):
        pytest.skip("retention belongs to the server")
    for i in range(20):
        await event_log.publish(TOPIC, "k", str(i).encode())
    fast, slow = event_log.consumer(TOPIC, "fast"), event_log.consumer(TOPIC, "slow")
    await fast.commit(await drain(fast))
    await slow.commit((await slow.poll(5, 1.0)))

    assert await event_log.apply_retention() == 0, "records are younger than the period"
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert await event_log.apply_retention(now=later) == 5
    assert await event_log.apply_retention(now=later) == 0

    # The slow group still gets everything it has not committed.
    assert [int(r.value) for r in await drain(slow)] == list(range(5, 20))
    # A new group starts at the oldest record kept, and offsets never restart.
    fresh = await drain(event_log.consumer(TOPIC, "new"))
    assert [r.offset for r in fresh] == list(range(5, 20))
    await event_log.publish(TOPIC, "k", b"20")
    assert [r.offset for r in await drain(fast)] == [20]


async def test_retention_never_restarts_the_offsets(open_event_log):
    log = await open_event_log()
    if not hasattr(log, "apply_retention"):
        pytest.skip("retention belongs to the server")
    for i in range(3):
        await log.publish(TOPIC, "k", str(i).encode())
    consumer = log.consumer(TOPIC, "only")
    await consumer.commit(await drain(consumer))
    assert await log.apply_retention(now=datetime.now(timezone.utc) + timedelta(days=8)) >= 2
    await log.close()

    reopened = await open_event_log()
    await reopened.publish(TOPIC, "k", b"3")
    assert [(r.offset, r.value) for r in await drain(reopened.consumer(TOPIC, "only"))] == [(3, b"3")]
    assert [r.offset for r in await drain(reopened.consumer(TOPIC, "new"))][-1] == 3
