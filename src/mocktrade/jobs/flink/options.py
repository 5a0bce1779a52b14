"""Settings of the Flink jobs (MOCKTRADE_FLINK_*), read by both sides.

Pure Python: imported by the launching service (project venv) and by the job
file (PyFlink venv).

  MOCKTRADE_FLINK_CHECKPOINT_INTERVAL_MS  default 1000
  MOCKTRADE_FLINK_CHECKPOINT_DIR          default file://DATA_DIR/flink/JOB/checkpoints;
                                          any Flink file system URI (s3://bucket/path too,
                                          given Flink's s3 plugin on the cluster)
  MOCKTRADE_FLINK_PARALLELISM             default 1
  MOCKTRADE_FLINK_EXECUTION_MODE          execution, triggers: thread (default) or process;
                                          persistence always runs in process mode (its
                                          vectorized UDF needs it)
  MOCKTRADE_FLINK_BUFFER_TIMEOUT_MS       longest a record waits in a network buffer
                                          between operators (10; Flink's default 100 ms
                                          is most of the job's latency)
  MOCKTRADE_FLINK_BATCH_SIZE              persistence: write after this many records (500)
  MOCKTRADE_FLINK_FLUSH_MS                persistence: or after this long (200), or at a
                                          checkpoint barrier
  MOCKTRADE_FLINK_RESTORE                 restore from this checkpoint/savepoint path
                                          (set by the service; empty: from committed offsets)
  MOCKTRADE_FLINK_JVM_ARGS                flags of the local mini-cluster's JVM (default
                                          -XX:+UseSerialGC -XX:TieredStopAtLevel=1
                                          -XX:-UsePerfData: about half the JVM's CPU to start,
                                          plan and restore a job, which is most of the time a
                                          killed job takes to recover on a small machine;
                                          docs/benchmarks.md, chaos); "none": the JVM's own defaults
  MOCKTRADE_FLINK_METRICS_PORT            the mini-cluster's Prometheus reporter: a port or a
                                          range (9250-9259: the first free one); empty (the
                                          default): no reporter. On a cluster the reporter is
                                          the cluster's configuration (docker-compose.yml)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...config import Settings
from ...domain.events import (TOPIC_MARKET_DATA, TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES,
                              TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS)
from ..tick_persistence import TICK_PERSISTENCE_GROUP

JOBS = {
    # job: (source topics, the first one its main input; consumer group)
    "execution": ((TOPIC_TRADE_ORDERS, TOPIC_ORDER_COMMANDS), "trade-execution"),
    # market_data: the ticks for price bars, read as a group of their own
    # (SOURCE_GROUPS), as the consumer-group runner's persistence job does.
    "persistence": ((TOPIC_TRADE_EXECUTED, TOPIC_MARKET_DATA), "trade-persistence"),
    "triggers": ((TOPIC_MARKET_DATA, TOPIC_ORDER_UPDATES), "trade-triggers"),
}

# Sources (job, topic) that read as a group other than the job's.
SOURCE_GROUPS = {("persistence", TOPIC_MARKET_DATA): TICK_PERSISTENCE_GROUP}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MOCKTRADE_FLINK_{name}") or default


@dataclass(frozen=True)
class FlinkJobOptions:
    job: str
    source_topics: tuple[str, ...]  # with the table prefix
    group: str              # with the table prefix, as KafkaEventLog names groups
    checkpoint_interval_ms: int
    checkpoint_dir: str     # a URI
    parallelism: int
    execution_mode: str
    buffer_timeout_ms: int
    batch_size: int
    flush_ms: int
    restore_from: str
    metrics_port: str = ""
    jvm_args: str = ""

    @property
    def source_topic(self) -> str:
        """The main input (with the table prefix)."""
        return self.source_topics[0]

    def group_of(self, topic: str) -> str:
        """The consumer group (prefixed) whose offsets the source on `topic`
        (prefixed) starts from and commits to."""
        prefix = self.group.removesuffix(JOBS[self.job][1])
        name = SOURCE_GROUPS.get((self.job, topic.removeprefix(prefix)))
        return prefix + name if name else self.group

    @property
    def python_mode(self) -> str:
        return "process" if self.job == "persistence" else self.execution_mode

    @classmethod
    def from_env(cls, job: str, settings: Settings) -> "FlinkJobOptions":
        if job not in JOBS:
            raise ValueError(f"no Flink job {job!r}; one of {', '.join(JOBS)}")
        topics, group = JOBS[job]
        default_dir = (Path(settings.data_dir).resolve() / "flink" / job / "checkpoints").as_uri()
        mode = _env("EXECUTION_MODE", "thread")
        if mode not in ("thread", "process"):
            raise ValueError("MOCKTRADE_FLINK_EXECUTION_MODE is thread or process")
        return cls(job=job, source_topics=tuple(settings.table_prefix + t for t in topics),
                   group=settings.table_prefix + group,
                   checkpoint_interval_ms=int(_env("CHECKPOINT_INTERVAL_MS", "1000")),
                   checkpoint_dir=_env("CHECKPOINT_DIR", default_dir),
                   parallelism=int(_env("PARALLELISM", "1")),
                   execution_mode=mode,
                   buffer_timeout_ms=int(_env("BUFFER_TIMEOUT_MS", "10")),
                   batch_size=int(_env("BATCH_SIZE", "500")),
                   flush_ms=int(_env("FLUSH_MS", "200")),
                   restore_from=_env("RESTORE", ""),
                   metrics_port=_env("METRICS_PORT", ""),
                   jvm_args=_jvm_args())


# A job's JVM is a one-task mini-cluster whose hot work is in Python: the
# serial collector (no concurrent GC threads) and C1 only (no C2 compiling in
# the background) halve the CPU its start takes, with no throughput the jobs
# need (measured: docs/benchmarks.md, chaos).
DEFAULT_JVM_ARGS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData"


def _jvm_args() -> str:
    value = _env("JVM_ARGS", DEFAULT_JVM_ARGS).strip()
    return "" if value == "none" else value


def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The newest completed checkpoint under a file:// checkpoint dir, if any.

    Flink writes `<dir>/<job id>/chk-<n>/_metadata` last, so a chk dir with
    its _metadata is complete. Other file systems (s3://): None; there, name
    the checkpoint to restore in MOCKTRADE_FLINK_RESTORE (as `flink run -s`
    does on a cluster). Without one the job starts from the group's committed
    offsets (Flink commits them on each completed checkpoint, which covers
    only records already handled and written), so nothing is lost either way.
    """
    if not checkpoint_dir.startswith("file:"):
        return None
    root = Path(checkpoint_dir.removeprefix("file://").removeprefix("file:"))
    found = [m for m in root.glob("*/chk-*/_metadata") if m.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda m: (m.stat().st_mtime, int(m.parent.name.split("-")[1])))
    return newest.parent.as_uri()
