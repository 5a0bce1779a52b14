"""The jobs on Flink (PyFlink, local mini-cluster) in the distributed stack.

`up --distributed` with MOCKTRADE_JOB_ENGINE=flink runs `mocktrade job
execution|persistence|triggers --engine flink` (the `flink_cluster` fixture of
conftest.py, shared with test_flink_orders.py); orders must execute and fill history
and analytics, and a kill -9 of a Flink JVM mid-load must cost nothing: the
job starts again from its last checkpoint, every accepted order has exactly
one outcome, history and analytics hold no duplicates, `mocktrade verify`
passes. Needs MOCKTRADE_TEST_STACK=1 (like tests/e2e/test_distributed.py);
the first run provisions the PyFlink venv and connector jars (~2-3 min).
MOCKTRADE_TEST_FLINK=0 leaves them out of a local run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from decimal import Decimal

import pytest

from tests.e2e.conftest import RunningPlatform, wait_for
from tests.e2e.conftest import verify as verify_platform
from tests.e2e.test_distributed import Load
from tests.flink.conftest import USERS, group_is_at_the_end

pytestmark = [
    pytest.mark.e2e, pytest.mark.stack,
    # Part of every run with the real engines (CI); a developer with a running
    # stack may leave these few slow minutes out.
    pytest.mark.skipif(os.environ.get("MOCKTRADE_TEST_FLINK") == "0",
                       reason="MOCKTRADE_TEST_FLINK=0 leaves the Flink jobs out"),
]


class PacedLoad(Load):
    """Load, paced: the DynamoDB-API engine applies only ~60-90 orders/s, so a
    test that kills a job should not leave minutes of backlog behind."""

    PAUSE = 0.15


def jvm_pid(platform: RunningPlatform, job: str) -> int:
    return int((platform.data_dir / "flink" / job / "jvm.pid").read_text())


def flink_log(platform: RunningPlatform, job: str) -> str:
    path = platform.data_dir / "flink" / job / "flink.log"
    return path.read_text(errors="replace") if path.exists() else ""


def service_starts(platform: RunningPlatform, job: str) -> list[dict]:
    """The `starting flink job` entries of the service's log."""
    path = platform.data_dir / "logs" / f"{job}.log"
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if '"starting flink job"' in line:
            entries.append(json.loads(line))
    return entries


def history_of(platform: RunningPlatform, user: str) -> list[dict]:
    with platform.client(user) as client:
        trades, token = [], None
        while True:
            params = {"limit": 100, **({"pageToken": token} if token else {})}
            page = client.get("/v1/trades/search", params=params).json()
            trades += page["trades"]
            token = page.get("nextPageToken")
            if not token:
                return trades


def analytics_volume(platform: RunningPlatform) -> Decimal:
    with platform.client(USERS[0]) as client:
        body = client.get("/v1/analytics/volume", params={"timeWindow": "24h", "symbol": "MOCKAAPL"}).json()
    return sum((Decimal(row["volume"]) for row in body["symbols"]), Decimal(0))


def executed_volume(platform: RunningPlatform) -> Decimal:
    return sum((Decimal(t["quantity"]) for u in USERS for t in history_of(platform, u)
                if t["status"] == "EXECUTED" and t["symbol"] == "MOCKAAPL"), Decimal(0))


def verify(platform: RunningPlatform) -> None:
    # A restarted job may need minutes to start on a loaded machine.
    verify_platform(platform, wait=240)


def persistence_group_is_at_the_end(platform: RunningPlatform) -> bool:
    return group_is_at_the_end(platform, "trade_executed", "trade-persistence")


def no_duplicates_anywhere(platform: RunningPlatform) -> None:
    ids = [t["orderId"] for u in USERS for t in history_of(platform, u)]
    assert len(ids) == len(set(ids))
    # Analytics agrees with history once persistence has drained.
    wait_for(lambda: analytics_volume(platform) == executed_volume(platform), timeout=60, interval=1)


def test_orders_execute_and_fill_history_and_analytics_on_flink(flink_cluster):
    with flink_cluster.client(USERS[0]) as client:
        accepted = []
        for i in range(20):
            r = client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
            assert r.status_code == 202, r.text
            accepted.append(r.json()["orderId"])
    wait_for(lambda: {t["orderId"] for t in history_of(flink_cluster, USERS[0])} >= set(accepted),
             timeout=120, interval=1)
    wait_for(lambda: analytics_volume(flink_cluster) > 0, timeout=60, interval=1)
    assert '"job": "execution"' in flink_log(flink_cluster, "execution")
    no_duplicates_anywhere(flink_cluster)
    wait_for(lambda: persistence_group_is_at_the_end(flink_cluster), timeout=60, interval=1)
    verify(flink_cluster)


@pytest.mark.parametrize("job", ["execution", "persistence"])
def test_kill_9_the_flink_jvm_mid_load_restarts_from_the_last_checkpoint(flink_cluster, job):
    checkpoints = flink_cluster.data_dir / "flink" / job / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("*/chk-*/_metadata")), timeout=60, interval=0.5)
    starts = len(service_starts(flink_cluster, job))
    with PacedLoad(flink_cluster) as load:
        wait_for(lambda: len(load.accepted) >= 40, timeout=60)
        os.kill(jvm_pid(flink_cluster, job), signal.SIGKILL)
        time.sleep(4)  # orders keep coming while the job is down
    assert len(load.accepted) >= 40
    # The service ran the job again, restored from a retained checkpoint.
    wait_for(lambda: len(service_starts(flink_cluster, job)) > starts, timeout=60, interval=0.5)
    restore = service_starts(flink_cluster, job)[-1]["restoreFrom"]
    assert restore and restore.startswith(f"{checkpoints.as_uri()}/"), restore
    # Verify waits for the restarted job (up to a minute to start on a busy
    # two-core machine) to drain what came in meanwhile.
    verify(flink_cluster)
    no_duplicates_anywhere(flink_cluster)


def dead_letter_of_garbage(platform: RunningPlatform, topic: str) -> dict[str, str]:
    """Publish an undecodable record to `topic`; the headers of its dead letter."""
    from mocktrade.adapters.kafka import KafkaEventLog

    marker = f"garbage-{time.time_ns()}".encode()

    async def round_trip() -> dict[str, str]:
        log = KafkaEventLog(platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"],
                            topic_prefix=platform.env["MOCKTRADE_TABLE_PREFIX"])
        try:
            consumer = log.consumer(f"{topic}.dlq", f"dlq-check-{time.time_ns()}", reset="earliest")
            await log.publish(topic, USERS[0], b"{not json " + marker)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                for record in await consumer.poll(100, 1.0):
                    if marker in record.value:
                        await consumer.close()
                        return dict(record.headers)
            await consumer.close()
            raise AssertionError(f"the undecodable record never reached {topic}.dlq")
        finally:
            await log.close()
    return asyncio.run(round_trip())


def test_an_undecodable_trade_goes_to_the_dead_letter_topic_with_its_reason(flink_cluster):
    headers = dead_letter_of_garbage(flink_cluster, "trade_executed")
    assert headers["dlq.topic"] == "trade_executed" and headers["dlq.reason"]
    assert int(headers["dlq.offset"]) >= 0  # the source table's offset metadata
