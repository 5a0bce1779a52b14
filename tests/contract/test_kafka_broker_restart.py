"""A Kafka consumer-group member across a restart of its only broker.

A broker of its own (the shared test broker must stay up for the other
tests): the member commits while the broker is down, and keeps consuming once
it is back. Regression for a CI run in which the persistence member stopped
for good after a broker restart: librdkafka's synchronous commit has no time
limit, and the thread it blocks is the one that must serve the rebalance the
restarted broker asks for.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mocktrade import stack
from mocktrade.adapters.kafka import KafkaEventLog

from ..engines import ENABLED, SKIP_REASON, free_ports

pytestmark = pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)

DELIVERY_TIMEOUT = 2.0


async def _poll_until(consumer, count: int, within: float) -> list:
    records, deadline = [], time.monotonic() + within
    while len(records) < count and time.monotonic() < deadline:
        records += await consumer.poll(count - len(records), 1.0)
    return records


async def test_a_member_commits_while_its_broker_is_down_and_consumes_after_the_restart(tmp_path):
    stack_dir = tmp_path / "stack"
    env = stack.up(stack_dir, ["kafka"], ports=dict(zip(("kafka", "kafka.controller"),
                                                        free_ports(2))))
    log = KafkaEventLog(env["MOCKTRADE_KAFKA_BOOTSTRAP"], topic_prefix="restart-",
                        delivery_timeout=DELIVERY_TIMEOUT)
    try:
        for i in range(20):
            await log.publish("t", f"user{i % 4}", b"before %d" % i)
        consumer = log.consumer("t", "persistence")
        before = await _poll_until(consumer, 20, 60)
        assert len(before) == 20
        await consumer.commit(before[:10])

        await asyncio.to_thread(stack.down, stack_dir, ["kafka"])
        started = time.monotonic()
        await consumer.commit(before[10:])  # unanswered: logged, its records may come again
        waited = time.monotonic() - started
        # Bounded by the delivery timeout (librdkafka's synchronous commit
        # took ~11 s here to give up, and has no bound at all in some states).
        assert waited < DELIVERY_TIMEOUT + 3, f"commit with the broker down waited {waited:.1f} s"

        await asyncio.to_thread(stack.up, stack_dir, ["kafka"])
        for i in range(8):
            await _publish_when_back(log, f"user{i % 4}", b"after %d" % i)
        seen: set[bytes] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not {b"after %d" % i for i in range(8)} <= seen:
            seen.update(r.value for r in await consumer.poll(100, 1.0))
        assert {b"after %d" % i for i in range(8)} <= seen, \
            f"the member consumed {sorted(seen)} after the restart"
        await consumer.close()
    finally:
        await log.close()
        stack.down(stack_dir)


async def _publish_when_back(log: KafkaEventLog, key: str, value: bytes) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await log.publish("t", key, value)
            return
        except Exception:  # noqa: BLE001 - the broker is still starting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
