"""The Flink job file: `python job.py execution|persistence` (PyFlink venv).

Run by `mocktrade job NAME --engine flink` on a local mini-cluster, with
PYTHONPATH naming the project's src/ and MOCKTRADE_FLINK_JARS the connector
jars. The same file is submitted unchanged to a Flink 1.20 cluster whose lib/
holds flink-python and the jars of infra/flink/target/lib, and whose
TaskManagers have the MOCKTRADE_* settings in their environment:

    flink run -d -pyclientexec VENV/bin/python -pyexec VENV/bin/python \
        -py src/mocktrade/jobs/flink/job.py -pyfs src execution

(tests/flink/standalone.py builds such a cluster.)

Topology:
  execution: Kafka table source on trade_orders (key: raw STRING, value: raw
  BYTES, partition, offset and headers metadata; group offsets, committed
  first, else earliest) -> DataStream keyed by userId -> ExecuteOrders (the
  shared ExecutionHandler) -> Kafka sink to trade_executed, keyed by userId
  (the same murmur2 partitioning as the project's producers), and a side
  output -> Kafka sink to trade_orders.dlq.
  persistence: the same source on trade_executed -> SQL calling the
  vectorized UDF persist_trades (the shared PersistenceHandler, one call per
  Arrow batch) -> the records it could not decode -> Kafka sink to
  trade_executed.dlq.
  Sinks are at-least-once (flushed at each checkpoint barrier); both sources
  commit their offsets to the group on each completed checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `mocktrade` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from mocktrade.config import Settings  # noqa: E402
from mocktrade.jobs.deadletter import dead_letter_topic  # noqa: E402
from mocktrade.jobs.flink.options import FlinkJobOptions  # noqa: E402


def flink_configuration(options: FlinkJobOptions) -> dict[str, str]:
    conf = {
        "python.execution-mode": options.python_mode,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        # Python embedded in a TaskManager (thread mode) starts from the base
        # interpreter's paths, not this venv's.
        "python.pythonpath": sysconfig.get_paths()["purelib"],
        "parallelism.default": str(options.parallelism),
        "execution.buffer-timeout.interval": f"{options.buffer_timeout_ms} ms",
        "execution.checkpointing.interval": f"{options.checkpoint_interval_ms} ms",
        # Barrier alignment is what unaligned checkpoints need (they stall less
        # behind a backlog); the output is at-least-once either way.
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.unaligned.enabled": "true",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.dir": options.checkpoint_dir,
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "5 min",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
    }
    if options.job == "persistence":
        # A bundle (and the Arrow batch in it, one write) ends at batch_size
        # records, after flush_ms, or at a checkpoint barrier.
        conf.update({"python.fn-execution.bundle.time": str(options.flush_ms),
                     "python.fn-execution.bundle.size": str(options.batch_size),
                     "python.fn-execution.arrow.batch.size": str(options.batch_size)})
    else:
        # Process mode hands records to Python in bundles: the same wait bound.
        conf["python.fn-execution.bundle.time"] = str(options.buffer_timeout_ms)
    if options.restore_from:
        conf["execution.savepoint.path"] = options.restore_from
        conf["execution.savepoint.ignore-unclaimed-state"] = "true"
    jars = os.environ.get("MOCKTRADE_FLINK_JARS", "")
    if jars:
        conf["pipeline.jars"] = jars
    return conf


def _with(props: dict[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())


def source_table_ddl(settings: Settings, options: FlinkJobOptions) -> str:
    props = {
        "connector": "kafka",
        "topic": options.source_topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "properties.group.id": options.group,
        "properties.auto.offset.reset": "earliest",
        "properties.commit.offsets.on.checkpoint": "true",
        "scan.startup.mode": "group-offsets",
        "scan.topic-partition-discovery.interval": "10 s",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TABLE source_records (
  `k` STRING,
  `v` BYTES,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `headers` MAP<STRING, BYTES> METADATA VIRTUAL
) WITH (
  {_with(props)}
)"""


def sink_table_ddl(table: str, topic: str, settings: Settings) -> str:
    props = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "sink.delivery-guarantee": "at-least-once",
        "sink.partitioner": "default",  # by key hash, as Kafka's own producers
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TABLE {table} (
  `k` STRING,
  `v` BYTES,
  `headers` MAP<STRING, BYTES> METADATA
) WITH (
  {_with(props)}
)"""


def ensure_topics(settings: Settings, options: FlinkJobOptions) -> None:
    """Source, output and dead-letter topics exist before the source looks."""
    from mocktrade.adapters.kafka import KafkaEventLog
    from mocktrade.domain.events import TOPIC_TRADE_EXECUTED

    log = KafkaEventLog(settings.kafka_bootstrap, topic_prefix=settings.table_prefix,
                        partitions=settings.kafka_partitions)
    names = {options.source_topic, settings.table_prefix + TOPIC_TRADE_EXECUTED,
             settings.table_prefix + dead_letter_topic(options.source_topic.removeprefix(settings.table_prefix))}
    for name in sorted(names):
        log.ensure_topic_blocking(name)
    log._producer.flush(1)


def write_jvm_pid(path: str) -> None:
    """The mini-cluster runs in the JVM this process started as its gateway."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if fields[1] == me and b"PythonGatewayServer" in cmdline:
            Path(path).write_text(stat.parent.name)
            return


# Every record goes through persist_trades once (one call per Arrow batch);
# those it could not decode come back with their reason, for the dead letters.
PERSISTENCE_SQL = """INSERT INTO dead_letter_sink
SELECT k, v, dead_letter_headers(headers, reason, `partition`, `offset`)
FROM (SELECT k, v, headers, `partition`, `offset`,
             persist_trades(k, v, `partition`, `offset`) AS reason
      FROM source_records)
WHERE reason IS NOT NULL"""


def build(job: str):
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from mocktrade.domain.events import TOPIC_TRADE_EXECUTED
    from mocktrade.jobs.flink.operators import (DEAD_LETTERS, KAFKA_ROW, ExecuteOrders,
                                                dead_letter_headers_udf, persist_batch)

    settings = Settings.from_env(os.environ.get("MOCKTRADE_DATA_DIR"))
    if not settings.kafka_bootstrap:
        raise SystemExit("the Flink jobs read Kafka: set MOCKTRADE_KAFKA_BOOTSTRAP")
    options = FlinkJobOptions.from_env(job, settings)
    ensure_topics(settings, options)
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration.from_dict(flink_configuration(options)) if hasattr(Configuration, "from_dict")
        else _configuration(flink_configuration(options)))
    if os.environ.get("MOCKTRADE_FLINK_JVM_PID_FILE"):
        write_jvm_pid(os.environ["MOCKTRADE_FLINK_JVM_PID_FILE"])
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_table_ddl(settings, options))
    topic = options.source_topic.removeprefix(settings.table_prefix)
    t_env.execute_sql(sink_table_ddl("dead_letter_sink", settings.table_prefix + dead_letter_topic(topic),
                                     settings))
    sinks = t_env.create_statement_set()
    if job == "execution":
        t_env.execute_sql(sink_table_ddl("executed_sink", settings.table_prefix + TOPIC_TRADE_EXECUTED,
                                         settings))
        rows = t_env.to_data_stream(t_env.from_path("source_records"))
        keyed = rows.key_by(lambda row: row["k"] or "", key_type=Types.STRING())
        out = keyed.process(ExecuteOrders(topic), output_type=KAFKA_ROW).name("execute-orders")
        sinks.add_insert("executed_sink", t_env.from_data_stream(out))
        sinks.add_insert("dead_letter_sink", t_env.from_data_stream(out.get_side_output(DEAD_LETTERS)))
    else:
        t_env.create_temporary_function("persist_trades", persist_batch(topic))
        t_env.create_temporary_function("dead_letter_headers", dead_letter_headers_udf(topic))
        sinks.add_insert_sql(PERSISTENCE_SQL)
    sinks.attach_as_datastream()
    return env, options


def _configuration(values: dict[str, str]):
    from pyflink.common import Configuration

    conf = Configuration()
    for key, value in values.items():
        conf.set_string(key, value)
    return conf


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("execution", "persistence"):
        print("usage: job.py execution|persistence", file=sys.stderr)
        return 2
    env, options = build(argv[1])
    print(json.dumps({"event": "flink job submitting", "job": options.job,
                      "restoreFrom": options.restore_from or None,
                      "checkpoints": options.checkpoint_dir}), flush=True)
    env.execute(f"mocktrade-{options.job}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
