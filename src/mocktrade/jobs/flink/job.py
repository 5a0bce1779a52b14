"""The Flink job file: `python job.py execution|persistence|triggers` (PyFlink venv).

Run by `mocktrade job NAME --engine flink` on a local mini-cluster, with
PYTHONPATH naming the project's src/ and MOCKTRADE_FLINK_JARS the connector
jars. The same file is submitted unchanged to a Flink 1.20 cluster whose lib/
holds flink-python and the jars of infra/flink/target/lib, and whose
TaskManagers have the MOCKTRADE_* settings in their environment:

    flink run -d -pyclientexec VENV/bin/python -pyexec VENV/bin/python \
        -py src/mocktrade/jobs/flink/job.py -pyfs src execution

(tests/flink/standalone.py builds such a cluster.)

Topology:
  execution: Kafka table sources on trade_orders and order_commands (key: raw
  STRING, value: raw BYTES, topic, partition, offset and headers metadata;
  group offsets, committed first, else earliest), their union -> DataStream
  keyed by userId -> ExecuteOrders (the shared ExecutionHandler) -> Kafka sink
  to trade_executed, keyed by userId (the same murmur2 partitioning as the
  project's producers), and side outputs -> Kafka sinks to order_updates
  (keyed by userId), trade_orders.dlq and order_commands.dlq. The order of
  records across the two topics does not matter: the store makes each
  instruction one atomic, idempotent step, decided in the order it arrives.
  triggers: Kafka table sources on market_data (group offsets, else latest:
  an old tick is no price) and order_updates (from the earliest retained
  record whenever no checkpoint is restored, so a first start or a start
  without a checkpoint rebuilds the whole book) together with, on such a
  start, the portfolio store's OPEN orders as OPEN updates (a one-element
  bounded source -> SeedOpenOrders; SQL UNION ALL with the source table; the
  book keeps the newest seq, so their order does not matter), connected and
  both keyed by the payload's symbol -> TriggerOrders (resting orders in keyed state, the
  shared TriggerBook's matching) -> Kafka sink to order_commands (TRIGGER and,
  from processing-time timers at each DAY order's expires_at, EXPIRE; keyed
  by userId), and a side output -> Kafka sink to order_updates.dlq.
  persistence: the same source on trade_executed -> SQL calling the
  vectorized UDF persist_trades (the shared PersistenceHandler, one call per
  Arrow batch) -> the records it could not decode -> Kafka sink to
  trade_executed.dlq; and market_data (group trade-persistence-bars, else
  latest) -> SQL calling persist_ticks (TickPersistenceHandler: one analytics
  record_ticks call per Arrow batch) -> a blackhole sink.
  Sinks are at-least-once (flushed at each checkpoint barrier); all sources
  commit their offsets to their group on each completed checkpoint.
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


PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


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
    if options.metrics_port:
        # The operators' metrics (jobs/flink/metrics.py) and Flink's own, as
        # Prometheus text on that port. The reporter's jar ships in PyFlink's
        # plugins/; the job service puts it on the class path (service.py).
        conf["metrics.reporter.prom.factory.class"] = PROMETHEUS_REPORTER
        conf["metrics.reporter.prom.port"] = options.metrics_port
    if options.restore_from:
        conf["execution.savepoint.path"] = options.restore_from
        conf["execution.savepoint.ignore-unclaimed-state"] = "true"
    jars = os.environ.get("MOCKTRADE_FLINK_JARS", "")
    if jars:
        conf["pipeline.jars"] = jars
    return conf


def _with(props: dict[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())


def source_table_ddl(settings: Settings, options: FlinkJobOptions, table: str = "source_records",
                     topic: str | None = None, startup: str = "group-offsets",
                     reset: str = "earliest") -> str:
    """A Kafka source table on `topic` (prefixed; default the job's main input).

    startup group-offsets: from the group's committed offsets, else `reset`;
    earliest-offset: from the oldest retained record. Either way a restored
    checkpoint's offsets win, and offsets are committed on each checkpoint.
    """
    topic = topic or options.source_topic
    group = options.group_of(topic)
    props = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "properties.group.id": group,
        # Several sources of one job may share its group: distinct client ids.
        "properties.client.id.prefix": f"{group}-{topic}",
        "properties.auto.offset.reset": reset,
        "properties.commit.offsets.on.checkpoint": "true",
        "scan.startup.mode": startup,
        "scan.topic-partition-discovery.interval": "10 s",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TABLE {table} (
  `k` STRING,
  `v` BYTES,
  `topic` STRING METADATA VIRTUAL,
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


def output_topics(job: str) -> tuple[str, ...]:
    """The topics (unprefixed) a job's sinks write."""
    from mocktrade.domain.events import (TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES,
                                         TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS)

    return {
        "execution": (TOPIC_TRADE_EXECUTED, TOPIC_ORDER_UPDATES, dead_letter_topic(TOPIC_TRADE_ORDERS),
                      dead_letter_topic(TOPIC_ORDER_COMMANDS)),
        "persistence": (dead_letter_topic(TOPIC_TRADE_EXECUTED),),
        "triggers": (TOPIC_ORDER_COMMANDS, dead_letter_topic(TOPIC_ORDER_UPDATES)),
    }[job]


def ensure_topics(settings: Settings, options: FlinkJobOptions) -> None:
    """Source, output and dead-letter topics exist before the sources look."""
    from mocktrade.adapters.kafka import KafkaEventLog

    log = KafkaEventLog(settings.kafka_bootstrap, topic_prefix=settings.table_prefix,
                        partitions=settings.kafka_partitions)
    names = {*options.source_topics, *(settings.table_prefix + t for t in output_topics(options.job))}
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
PERSISTENCE_SQL = """INSERT INTO {sink}
SELECT k, v, dead_letter_headers(headers, reason, `partition`, `offset`)
FROM (SELECT k, v, headers, `partition`, `offset`,
             persist_trades(k, v, `partition`, `offset`) AS reason
      FROM source_records)
WHERE reason IS NOT NULL"""

# Every tick goes through persist_ticks once (one record_ticks call per Arrow
# batch, flushed like the trades' before each checkpoint barrier). Its result
# (always NULL: the market-data service dead-letters undecodable ticks) goes
# to a blackhole: a pipeline needs a sink, and a filter on it would make the
# planner call the UDF twice.
TICKS_SQL = """INSERT INTO {sink}
SELECT persist_ticks(k, v, `partition`, `offset`) FROM {source}"""


def discard_table_ddl(table: str) -> str:
    return f"CREATE TABLE {table} (`reason` STRING) WITH ('connector' = 'blackhole')"


def build(job: str):
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from mocktrade.jobs.flink.operators import dead_letter_headers_udf, persist_batch, persist_ticks

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
    prefix = settings.table_prefix
    sink_tables = {}
    for topic in output_topics(job):
        table = topic.replace(".", "_") + "_sink"
        t_env.execute_sql(sink_table_ddl(table, prefix + topic, settings))
        sink_tables[topic] = table
    sinks = t_env.create_statement_set()

    def sink(topic: str, stream) -> None:
        sinks.add_insert(sink_tables[topic], t_env.from_data_stream(stream))

    if job == "execution":
        _execution(t_env, settings, options, sink)
    elif job == "triggers":
        _triggers(env, t_env, settings, options, sink)
    else:
        t_env.execute_sql(source_table_ddl(settings, options))
        topic = options.source_topic.removeprefix(prefix)
        t_env.create_temporary_function("persist_trades", persist_batch(topic))
        t_env.create_temporary_function("dead_letter_headers", dead_letter_headers_udf(topic))
        sinks.add_insert_sql(PERSISTENCE_SQL.format(sink=sink_tables[dead_letter_topic(topic)]))
        # market_data -> analytics ticks (price bars), as group trade-persistence-bars:
        # from its committed offsets, else the latest (bars of a new group start now).
        ticks_topic = options.source_topics[1]
        t_env.execute_sql(source_table_ddl(settings, options, "tick_records", ticks_topic, reset="latest"))
        t_env.create_temporary_function("persist_ticks", persist_ticks(ticks_topic.removeprefix(prefix)))
        t_env.execute_sql(discard_table_ddl("ticks_discarded"))
        sinks.add_insert_sql(TICKS_SQL.format(sink="ticks_discarded", source="tick_records"))
    sinks.attach_as_datastream()
    return env, options


def _source(t_env, settings: Settings, options: FlinkJobOptions, topic: str, **how):
    """A source table on `topic` (prefixed) as a DataStream of its rows."""
    table = topic.removeprefix(settings.table_prefix) + "_source"
    t_env.execute_sql(source_table_ddl(settings, options, table, topic, **how))
    return t_env.to_data_stream(t_env.from_path(table))


def _execution(t_env, settings: Settings, options: FlinkJobOptions, sink) -> None:
    from pyflink.common import Types

    from mocktrade.domain.events import TOPIC_TRADE_EXECUTED
    from mocktrade.jobs.flink.operators import KAFKA_ROW, ExecuteOrders, output_tag

    orders, commands = (_source(t_env, settings, options, topic) for topic in options.source_topics)
    sides = tuple(t for t in output_topics("execution") if t != TOPIC_TRADE_EXECUTED)
    keyed = orders.union(commands).key_by(lambda row: row["k"] or "", key_type=Types.STRING())
    out = keyed.process(ExecuteOrders(settings.table_prefix, sides), output_type=KAFKA_ROW) \
        .uid("execute-orders").name("execute-orders")
    sink(TOPIC_TRADE_EXECUTED, out)
    for topic in sides:
        sink(topic, out.get_side_output(output_tag(topic)))


def _triggers(env, t_env, settings: Settings, options: FlinkJobOptions, sink) -> None:
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from mocktrade.domain.events import TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES

    from mocktrade.jobs.flink.operators import (KAFKA_ROW, SOURCE_ROW, SeedOpenOrders, TriggerOrders,
                                                output_tag, payload_symbol)

    ticks_topic, updates_topic = options.source_topics
    ticks = _source(t_env, settings, options, ticks_topic, reset="latest")
    # The store's OPEN orders as OPEN updates (with their stored seq), beside
    # the log's: orders older than order_updates' retention rest too. One
    # bounded source element makes one load; a checkpoint records the source
    # finished, so only a start without a checkpoint to restore loads (the
    # book keeps the newest seq per order: a load, or the log after it, is
    # harmless to see twice).
    t_env.execute_sql(source_table_ddl(settings, options, "order_updates_source", updates_topic,
                                       startup="earliest-offset"))
    seed = env.from_source(NumberSequenceSource(0, 0), WatermarkStrategy.no_watermarks(), "open-orders-load") \
        .uid("open-orders-load") \
        .flat_map(SeedOpenOrders(updates_topic), output_type=SOURCE_ROW) \
        .uid("seed-open-orders").name("seed-open-orders").set_parallelism(1)
    t_env.create_temporary_view("open_orders_seed", t_env.from_data_stream(seed))
    # One stream of updates (a SQL union: the source table's rows and the
    # function's have different Java type infos).
    updates = t_env.to_data_stream(t_env.sql_query(
        "SELECT * FROM open_orders_seed UNION ALL SELECT * FROM order_updates_source"))
    out = ticks.connect(updates).key_by(payload_symbol, payload_symbol, key_type=Types.STRING()) \
        .process(TriggerOrders(settings.table_prefix), output_type=KAFKA_ROW) \
        .uid("trigger-orders").name("trigger-orders")
    sink(TOPIC_ORDER_COMMANDS, out)
    dead_letters = dead_letter_topic(TOPIC_ORDER_UPDATES)
    sink(dead_letters, out.get_side_output(output_tag(dead_letters)))


def _configuration(values: dict[str, str]):
    from pyflink.common import Configuration

    conf = Configuration()
    for key, value in values.items():
        conf.set_string(key, value)
    return conf


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("execution", "persistence", "triggers"):
        print("usage: job.py execution|persistence|triggers", file=sys.stderr)
        return 2
    env, options = build(argv[1])
    print(json.dumps({"event": "flink job submitting", "job": options.job,
                      "restoreFrom": options.restore_from or None,
                      "checkpoints": options.checkpoint_dir}), flush=True)
    env.execute(f"mocktrade-{options.job}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
