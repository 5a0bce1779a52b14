"""The platform with every job on Flink, shared by the Flink test modules.

One `up --distributed` with MOCKTRADE_JOB_ENGINE=flink for the whole session:
three Flink mini-clusters (execution, persistence, triggers) take a minute or
more to start on a small machine, so test_flink_jobs.py and
test_flink_orders.py share one run.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import RunningPlatform, wait_for

USERS = ("load1", "load2", "load3", "load4")

# The launcher's ports of the Flink jobs' services, from the gateway's port.
JOB_PORTS = {"execution": 10, "persistence": 4, "triggers": 5}


# Ports for the three jobs' Prometheus reporters, and slack for a restarted
# JVM that binds before the old one's port is released.
METRICS_PORTS = 6


def free_port_range(count: int) -> list[int]:
    """`count` consecutive free loopback ports."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(30000, 50000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + count))
    raise RuntimeError(f"no {count} consecutive free ports")


def job_ready(platform: RunningPlatform, job: str) -> bool:
    """A Flink job service's /readyz says ok once its current run completed a checkpoint."""
    try:
        return httpx.get(f"http://127.0.0.1:{platform.port + JOB_PORTS[job]}/readyz",
                         timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def flink_cluster(real_engines, tmp_path_factory):
    from mocktrade.jobs.flink.provision import flink_runtime

    began = time.monotonic()
    flink_runtime()  # cached after the first run
    print(f"pyflink runtime ready after {time.monotonic() - began:.1f}s")
    metrics_ports = free_port_range(METRICS_PORTS)
    running = RunningPlatform(tmp_path_factory.mktemp("flink") / "data", engines=real_engines,
                              env={"MOCKTRADE_JOB_ENGINE": "flink",
                                   "MOCKTRADE_FLINK_CHECKPOINT_INTERVAL_MS": "1000",
                                   # Each job's mini-cluster: its Prometheus reporter on
                                   # the first free port of the range.
                                   "MOCKTRADE_FLINK_METRICS_PORT":
                                       f"{metrics_ports[0]}-{metrics_ports[-1]}"})
    running.flink_metrics_ports = metrics_ports
    try:
        running.start(timeout=240)
        # The gateway answers before the Flink jobs run.
        for job in JOB_PORTS:
            wait_for(lambda: job_ready(running, job), timeout=300, interval=1)
        print(f"platform with the jobs on flink ready after {time.monotonic() - began:.1f}s")
        for user in USERS:
            running.cli("accounts", "create", user, "--cash", "1000000.00")
    except BaseException:
        running.stop()  # no platform left running behind a failed start
        raise
    yield running
    running.stop()


def group_is_at_the_end(platform: RunningPlatform, topic: str, group: str) -> bool:
    """Flink commits a job's offsets on each completed checkpoint, which covers
    everything read before it; drained, they stand at the end of every
    partition of `topic` (both names unprefixed)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    prefix = platform.env["MOCKTRADE_TABLE_PREFIX"]
    admin = AdminClient({"bootstrap.servers": platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"]})
    topic = prefix + topic
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {tp.partition: info.offset for tp, f in admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}).items()
        for info in [f.result(10)]}
    answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(prefix + group)])
    committed = {tp.partition: tp.offset for f in answer.values() for tp in f.result(10).topic_partitions
                 if tp.topic == topic}
    return all(committed.get(p, 0) >= end for p, end in ends.items() if end > 0)
