"""Kafka only: offsets set for a group none of whose members is running.

The Flink persistence job reads with an assigned-partitions source and moves
the group's offsets itself once a batch is written; a consumer of that group
(the consumer-group runner, or the job started without a checkpoint) must
resume exactly there.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.contract.real_backends_kafka import kafka_event_log

pytestmark = pytest.mark.stack


async def test_a_member_resumes_where_the_offsets_were_set(real_engines):
    log = kafka_event_log(f"{real_engines['MOCKTRADE_KAFKA_BOOTSTRAP']}|t{uuid.uuid4().hex[:12]}")
    try:
        # One key, so one partition: its offsets are 0..9.
        await log.publish_many("trades", [("user-1", f"r{i}".encode(), None) for i in range(10)])
        probe = log.consumer("trades", "probe")
        records = await _poll(probe, 10)
        await probe.close()
        partition = records[0].partition
        await log.commit_group_offsets("persisting", "trades", {partition: 7})
        # Setting them again lower is allowed too (a restore replays a little).
        member = log.consumer("trades", "persisting")
        resumed = await _poll(member, 3)
        assert [r.value for r in resumed] == [b"r7", b"r8", b"r9"]
        await member.close()
    finally:
        await log.close()


async def test_offsets_of_a_group_with_a_running_member_are_refused_not_raised(real_engines, caplog):
    log = kafka_event_log(f"{real_engines['MOCKTRADE_KAFKA_BOOTSTRAP']}|t{uuid.uuid4().hex[:12]}")
    try:
        await log.publish("trades", "user-1", b"r0")
        member = log.consumer("trades", "busy")
        await _poll(member, 1)
        # The broker refuses (the group is not empty); the job logs and goes on.
        await log.commit_group_offsets("busy", "trades", {0: 0, 1: 0, 2: 0, 3: 0})
        assert "group offsets not committed" in caplog.text
        await member.close()
    finally:
        await log.close()


async def _poll(consumer, count: int, within: float = 30.0) -> list:
    records, deadline = [], time.monotonic() + within
    while len(records) < count and time.monotonic() < deadline:
        records += await consumer.poll(100, 1.0)
    assert len(records) >= count, f"only {len(records)} of {count} records arrived"
    return records
