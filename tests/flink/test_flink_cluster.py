"""The job file submitted unchanged to a Flink cluster, and a TaskManager lost.

The platform runs `up --distributed --replicas execution=0`: everything but
the execution job, which is submitted with `flink run -py job.py -pyfs src
execution` to a standalone cluster (one JobManager, one TaskManager). Orders
flow through it; then the TaskManager is killed -9 mid-load and another one
started: Flink's own restart strategy restores the job from its latest
checkpoint on the new TaskManager, and every accepted order still has exactly
one outcome (`mocktrade verify`), with no duplicates in history. An order
that cannot be decoded goes to trade_orders.dlq and shows in the operator's
`deadLettered` metric (read from the cluster's REST API).
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import RunningPlatform, wait_for
from tests.flink.standalone import StandaloneFlink
from tests.flink.test_flink_jobs import (USERS, PacedLoad, dead_letter_of_garbage, no_duplicates_anywhere,
                                        pytestmark, verify)

pytestmark = pytestmark  # same gating as the mini-cluster tests


@pytest.fixture(scope="module")
def platform_and_cluster(real_engines, tmp_path_factory):
    root = tmp_path_factory.mktemp("flink-cluster")
    platform = RunningPlatform(root / "data", engines=real_engines,
                               extra_args=("--replicas", "execution=0"))
    platform.start(timeout=240)
    cluster = StandaloneFlink(root / "cluster", platform.env)
    try:
        cluster.start()
        for user in USERS:
            platform.cli("accounts", "create", user, "--cash", "1000000.00")
        yield platform, cluster
    finally:
        cluster.stop()
        platform.stop()


@pytest.fixture(scope="module")
def execution_job(platform_and_cluster) -> str:
    _, cluster = platform_and_cluster
    began = time.monotonic()
    job_id = cluster.submit("execution")
    wait_for(lambda: completed_checkpoints(cluster, job_id) > 0, timeout=180, interval=1)
    print(f"submitted and checkpointing after {time.monotonic() - began:.1f}s")
    return job_id


def completed_checkpoints(cluster: StandaloneFlink, job_id: str) -> int:
    try:
        return cluster.checkpoints(job_id)["counts"]["completed"]
    except (KeyError, OSError, ValueError):  # not scheduled yet, REST busy
        return 0


def restored_checkpoint(cluster: StandaloneFlink, job_id: str) -> dict | None:
    try:
        return (cluster.checkpoints(job_id).get("latest") or {}).get("restored")
    except (OSError, ValueError):
        return None


def test_the_job_file_runs_on_a_cluster_and_survives_losing_its_taskmanager(platform_and_cluster,
                                                                             execution_job):
    platform, cluster = platform_and_cluster
    with PacedLoad(platform) as load:
        wait_for(lambda: len(load.accepted) >= 40, timeout=60)
        assert cluster.kill_taskmanagers()
        time.sleep(3)  # orders keep coming while the job has nowhere to run
        cluster.start_taskmanager()
        time.sleep(3)
    assert len(load.accepted) >= 40
    # Restored from a checkpoint by Flink itself (the JobManager lived on).
    wait_for(lambda: restored_checkpoint(cluster, execution_job), timeout=180, interval=1)
    assert cluster.job(execution_job)["state"] == "RUNNING"
    verify(platform)
    no_duplicates_anywhere(platform)


def dead_lettered(cluster: StandaloneFlink, job_id: str) -> int:
    """The execution operator's deadLettered counter, summed over subtasks."""
    vertex = next(v for v in cluster.job(job_id)["vertices"] if "execute-orders" in v["name"])
    base = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
    names = [m["id"] for m in cluster.rest(base) if m["id"].endswith(".deadLettered")]
    if not names:
        return 0
    return sum(int(float(m["value"])) for m in cluster.rest(f"{base}?get={','.join(names)}"))


def test_an_undecodable_order_is_dead_lettered_and_counted(platform_and_cluster, execution_job):
    platform, cluster = platform_and_cluster
    headers = dead_letter_of_garbage(platform, "trade_orders")
    assert headers["dlq.topic"] == "trade_orders" and headers["dlq.reason"]
    wait_for(lambda: dead_lettered(cluster, execution_job) >= 1, timeout=60, interval=1)
