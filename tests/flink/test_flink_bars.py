"""Price bars with the persistence job on Flink.

On the platform of conftest.py (every job on Flink): the persistence job's
second source reads market_data as group `trade-persistence-bars` and hands
the ticks, batch by batch, to analytics' record_ticks, so GET /v1/bars has
bars of the feed's ticks; and a kill -9 of its JVM after ticks were recorded
but before a checkpoint covered them (so the job started again from that
checkpoint reads them again) counts none of them twice in `n`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningPlatform, wait_for
from tests.flink.conftest import USERS, job_ready

pytestmark = [
    pytest.mark.e2e, pytest.mark.stack,
    pytest.mark.skipif(os.environ.get("MOCKTRADE_TEST_FLINK") == "0",
                       reason="MOCKTRADE_TEST_FLINK=0 leaves the Flink jobs out"),
]

SYMBOL = "MOCKAAPL"  # a feed symbol: bars answer only for the platform's symbols
TICK_GROUP = "trade-persistence-bars"


_tokens: dict[int, str] = {}


def bars(platform: RunningPlatform, **params: str) -> list[dict]:
    if platform.port not in _tokens:  # `mocktrade token` once: the test polls tightly
        _tokens[platform.port] = platform.token(USERS[0])
    answer = httpx.get(f"{platform.base}/v1/bars/{SYMBOL}", params={"timeframe": "1m", **params},
                       headers={"Authorization": f"Bearer {_tokens[platform.port]}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["bars"]


def bar_of(platform: RunningPlatform, minute: datetime) -> dict:
    found = bars(platform, start=minute.isoformat(), end=(minute + timedelta(minutes=1)).isoformat())
    return found[0] if found else {"n": 0}


def publish_ticks(platform: RunningPlatform, ticks: list[tuple[datetime, str]]) -> dict[int, int]:
    """Publish ticks of SYMBOL; the end offsets of market_data's partitions after them."""
    from mocktrade.adapters.kafka import KafkaEventLog
    from mocktrade.domain.events import encode, market_data_payload
    from mocktrade.domain.model import PriceTick

    async def send() -> None:
        log = KafkaEventLog(platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"],
                            topic_prefix=platform.env["MOCKTRADE_TABLE_PREFIX"])
        try:
            await log.publish_many("market_data", [
                (SYMBOL, encode("ingestion", market_data_payload(PriceTick(SYMBOL, Decimal(price), at))), None)
                for at, price in ticks])
        finally:
            await log.close()
    asyncio.run(send())
    return end_offsets(platform, "market_data")


def _admin(platform: RunningPlatform):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"]})


def end_offsets(platform: RunningPlatform, topic: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin, topic = _admin(platform), platform.env["MOCKTRADE_TABLE_PREFIX"] + topic
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    return {tp.partition: f.result(10).offset for tp, f in admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}).items()}


def committed_past(platform: RunningPlatform, topic: str, group: str, ends: dict[int, int]) -> bool:
    """The group's committed offsets (Flink commits them on each completed
    checkpoint) stand at or past `ends` on every partition."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    prefix = platform.env["MOCKTRADE_TABLE_PREFIX"]
    admin = _admin(platform)  # held until the answer is in
    answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(prefix + group)])
    committed = {tp.partition: tp.offset for f in answer.values() for tp in f.result(10).topic_partitions
                 if tp.topic == prefix + topic}
    return all(committed.get(p, -1) >= end for p, end in ends.items() if end > 0)


def checkpoints(platform: RunningPlatform) -> set[Path]:
    """The completed checkpoints of the persistence job (any run)."""
    root = platform.data_dir / "flink" / "persistence" / "checkpoints"
    return {m.parent for m in root.glob("*/chk-*/_metadata") if m.is_file()}


def service_starts(platform: RunningPlatform) -> list[dict]:
    path = platform.data_dir / "logs" / "persistence.log"
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
            if '"starting flink job"' in line]


def test_the_feeds_ticks_make_bars(flink_cluster):
    began = time.monotonic()
    found = wait_for(lambda: [b for b in bars(flink_cluster) if b["n"] > 0], timeout=90, interval=1)
    assert all(Decimal(b["l"]) <= Decimal(b["o"]) <= Decimal(b["h"]) for b in found)
    print(f"bars of the feed's ticks after {time.monotonic() - began:.1f}s")


def test_a_restart_from_a_checkpoint_counts_no_tick_twice(flink_cluster):
    platform = flink_cluster
    # A minute of its own (a day ago): only this test's ticks are in its bar.
    minute = (datetime.now(timezone.utc) - timedelta(days=1)).replace(second=0, microsecond=0)
    published: list[tuple[datetime, str]] = []
    for attempt in range(6):
        # Right after a checkpoint completes: the next one is ~1 s away.
        known = checkpoints(platform)
        wait_for(lambda: checkpoints(platform) - known, timeout=30, interval=0.02)
        known = checkpoints(platform)
        batch = [(minute + timedelta(milliseconds=100 * (len(published) + i)), f"{100 + len(published) + i}.00")
                 for i in range(20)]
        ends = publish_ticks(platform, batch)
        published += batch
        # Recorded (the UDF's batch flushed after FLUSH_MS) ...
        wait_for(lambda: bar_of(platform, minute)["n"] == len(published), timeout=30, interval=0.02)
        if checkpoints(platform) - known:
            continue  # ... but a checkpoint covers them already: again
        starts = len(service_starts(platform))
        os.kill(int((platform.data_dir / "flink" / "persistence" / "jvm.pid").read_text()), signal.SIGKILL)
        time.sleep(0.3)
        if not checkpoints(platform) - known:
            break  # killed before any checkpoint covered the last batch
    else:
        pytest.fail("no kill landed between a batch being recorded and the next checkpoint")
    print(f"killed after {attempt + 1} rounds, {len(published)} ticks")

    wait_for(lambda: len(service_starts(platform)) > starts, timeout=60, interval=0.5)
    restore = service_starts(platform)[-1]["restoreFrom"]
    assert restore and Path(restore.removeprefix("file://")) in known, restore
    began = time.monotonic()
    wait_for(lambda: job_ready(platform, "persistence"), timeout=180, interval=1)
    # The restarted job read the last batch again (its checkpoint precedes it) ...
    wait_for(lambda: committed_past(platform, "market_data", TICK_GROUP, ends), timeout=60, interval=0.5)
    print(f"the restarted job re-read the ticks {time.monotonic() - began:.1f}s after its start")
    # ... and recorded it again, counting each tick once.
    bar = bar_of(platform, minute)
    assert bar["n"] == len(published)
    prices = [Decimal(price) for _, price in published]
    assert (Decimal(bar["o"]), Decimal(bar["h"]), Decimal(bar["l"]), Decimal(bar["c"])) == \
        (prices[0], max(prices), min(prices), prices[-1])
