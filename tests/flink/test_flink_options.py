"""The Flink jobs' settings and job-file pieces that need no Flink at all."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mocktrade.config import Settings
from mocktrade.jobs.flink.job import flink_configuration, sink_table_ddl, source_table_ddl
from mocktrade.jobs.flink.options import FlinkJobOptions, latest_checkpoint


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MOCKTRADE_FLINK_"):
            monkeypatch.delenv(key)


def test_defaults_checkpoint_under_the_data_dir_with_prefixed_topic_and_group(tmp_path):
    settings = Settings(data_dir=tmp_path, table_prefix="t1_", kafka_bootstrap="127.0.0.1:9092")
    options = FlinkJobOptions.from_env("execution", settings)
    assert options.source_topic == "t1_trade_orders"
    assert options.group == "t1_trade-execution"  # the consumer runner's group, prefixed
    assert options.checkpoint_dir == (tmp_path.resolve() / "flink" / "execution" / "checkpoints").as_uri()
    assert (options.checkpoint_interval_ms, options.parallelism, options.execution_mode) == (1000, 1, "thread")


def test_settings_come_from_the_environment_and_s3_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCKTRADE_FLINK_CHECKPOINT_DIR", "s3://bucket/mocktrade/cp")
    monkeypatch.setenv("MOCKTRADE_FLINK_CHECKPOINT_INTERVAL_MS", "5000")
    monkeypatch.setenv("MOCKTRADE_FLINK_PARALLELISM", "4")
    options = FlinkJobOptions.from_env("persistence", Settings(data_dir=tmp_path))
    conf = flink_configuration(options)
    assert conf["execution.checkpointing.dir"] == "s3://bucket/mocktrade/cp"
    assert conf["execution.checkpointing.interval"] == "5000 ms"
    assert conf["parallelism.default"] == "4"
    assert conf["restart-strategy.type"] == "exponential-delay"
    assert conf["execution.checkpointing.unaligned.enabled"] == "true"
    assert "execution.savepoint.path" not in conf
    assert latest_checkpoint(options.checkpoint_dir) is None


def test_unknown_job_or_mode_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        FlinkJobOptions.from_env("nope", Settings(data_dir=tmp_path))
    monkeypatch.setenv("MOCKTRADE_FLINK_EXECUTION_MODE", "fast")
    with pytest.raises(ValueError):
        FlinkJobOptions.from_env("execution", Settings(data_dir=tmp_path))


def test_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    root = tmp_path / "cp"
    assert latest_checkpoint(root.as_uri()) is None
    for job_id, n in (("a" * 32, 3), ("b" * 32, 7), ("b" * 32, 8)):
        (root / job_id / f"chk-{n}").mkdir(parents=True)
    (root / ("a" * 32) / "chk-3" / "_metadata").write_bytes(b"x")
    time.sleep(0.01)
    (root / ("b" * 32) / "chk-7" / "_metadata").write_bytes(b"x")
    # chk-8 has no _metadata yet: still being written, never restored from.
    assert latest_checkpoint(root.as_uri()) == (root / ("b" * 32) / "chk-7").as_uri()


def test_restore_path_goes_to_the_savepoint_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MOCKTRADE_FLINK_RESTORE", "file:///x/chk-3")
    conf = flink_configuration(FlinkJobOptions.from_env("execution", Settings(data_dir=tmp_path)))
    assert conf["execution.savepoint.path"] == "file:///x/chk-3"


def test_source_reads_key_value_and_metadata_from_committed_group_offsets(tmp_path):
    settings = Settings(data_dir=tmp_path, table_prefix="p_", kafka_bootstrap="k:9092")
    ddl = source_table_ddl(settings, FlinkJobOptions.from_env("persistence", settings))
    for needle in ("'topic' = 'p_trade_executed'", "'properties.group.id' = 'p_trade-persistence'",
                   "'scan.startup.mode' = 'group-offsets'", "'properties.auto.offset.reset' = 'earliest'",
                   "`headers` MAP<STRING, BYTES> METADATA", "'key.fields' = 'k'"):
        assert needle in ddl


def test_both_jobs_commit_offsets_on_checkpoints_and_persistence_batches_by_bundle(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="k:9092")
    monkeypatch.setenv("MOCKTRADE_FLINK_EXECUTION_MODE", "thread")
    for job in ("execution", "persistence"):
        ddl = source_table_ddl(settings, FlinkJobOptions.from_env(job, settings))
        assert "'properties.commit.offsets.on.checkpoint' = 'true'" in ddl
    conf = flink_configuration(FlinkJobOptions.from_env("persistence", settings))
    # The vectorized UDF needs process mode; a bundle is a batch: 500 records or 200 ms.
    assert conf["python.execution-mode"] == "process"
    assert (conf["python.fn-execution.arrow.batch.size"], conf["python.fn-execution.bundle.size"],
            conf["python.fn-execution.bundle.time"]) == ("500", "500", "200")
    assert flink_configuration(FlinkJobOptions.from_env("execution", settings))["python.execution-mode"] == "thread"


def test_sinks_write_key_value_and_headers_at_least_once_partitioned_by_key(tmp_path):
    settings = Settings(data_dir=tmp_path, table_prefix="p_", kafka_bootstrap="k:9092")
    ddl = sink_table_ddl("executed_sink", "p_trade_executed", settings)
    for needle in ("CREATE TABLE executed_sink", "'topic' = 'p_trade_executed'",
                   "'sink.delivery-guarantee' = 'at-least-once'", "'key.fields' = 'k'",
                   "'sink.partitioner' = 'default'", "`headers` MAP<STRING, BYTES> METADATA\n"):
        assert needle in ddl


async def test_an_outbox_collects_what_a_handler_publishes_and_forgets_a_retried_batch():
    from mocktrade.jobs.outbox import OutboundRecord, Outbox

    outbox = Outbox()
    await outbox.publish("trade_executed", "u1", b"e1", {"traceparent": "t"})
    outbox.discard()
    await outbox.publish("trade_executed", "u1", b"e1", {"traceparent": "t"})
    await outbox.publish("trade_orders.dlq", "u2", b"bad")
    assert outbox.drain() == [OutboundRecord("trade_executed", "u1", b"e1", {"traceparent": "t"}),
                              OutboundRecord("trade_orders.dlq", "u2", b"bad", {})]
    assert outbox.drain() == []


def test_the_job_file_names_a_pinned_pyflink_and_connector():
    infra = Path(__file__).resolve().parents[2] / "infra" / "flink"
    assert "apache-flink==1.20." in (infra / "requirements.txt").read_text()
    assert "3.3.0-1.20" in (infra / "pom.xml").read_text()


def test_a_leftover_run_of_this_job_is_killed_and_a_stranger_with_a_reused_pid_is_not(tmp_path):
    import subprocess

    from mocktrade.jobs.flink.service import FlinkJobRunner, work_dir

    runner = FlinkJobRunner("execution", Settings(data_dir=tmp_path, kafka_bootstrap="k:9092"))
    directory = work_dir(runner.settings, "execution")
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True,
                            env={**os.environ, "MOCKTRADE_FLINK_JVM_PID_FILE": str(directory / "jvm.pid")})
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (directory / "client.pid").write_text(str(ours.pid))
        (directory / "jvm.pid").write_text(str(stranger.pid))
        runner._kill_orphans()
        assert ours.wait(5) == -9
        assert stranger.poll() is None
    finally:
        for process in (ours, stranger):
            process.kill()
            process.wait()


def test_the_trigger_job_reads_ticks_from_its_group_and_every_order_update(tmp_path):
    from mocktrade.jobs.flink.job import output_topics

    settings = Settings(data_dir=tmp_path, table_prefix="p_", kafka_bootstrap="k:9092")
    options = FlinkJobOptions.from_env("triggers", settings)
    assert options.source_topics == ("p_market_data", "p_order_updates")
    assert options.group == "p_trade-triggers"
    assert options.python_mode == "thread"
    ticks = source_table_ddl(settings, options, "market_data_source", "p_market_data", reset="latest")
    updates = source_table_ddl(settings, options, "order_updates_source", "p_order_updates",
                               startup="earliest-offset")
    assert "'scan.startup.mode' = 'group-offsets'" in ticks and "'properties.auto.offset.reset' = 'latest'" in ticks
    # Without a checkpoint to restore, the book is rebuilt from every retained update.
    assert "'scan.startup.mode' = 'earliest-offset'" in updates
    for ddl in (ticks, updates):
        assert "'properties.commit.offsets.on.checkpoint' = 'true'" in ddl
    assert output_topics("triggers") == ("order_commands", "order_updates.dlq")


def test_the_execution_job_reads_orders_and_commands_and_writes_order_updates(tmp_path):
    from mocktrade.jobs.flink.job import output_topics

    settings = Settings(data_dir=tmp_path, kafka_bootstrap="k:9092")
    options = FlinkJobOptions.from_env("execution", settings)
    assert options.source_topics == ("trade_orders", "order_commands")
    assert set(output_topics("execution")) == {"trade_executed", "order_updates", "trade_orders.dlq",
                                               "order_commands.dlq"}
    assert "`topic` STRING METADATA VIRTUAL" in source_table_ddl(settings, options)


def test_the_persistence_job_reads_ticks_as_the_bars_group_from_its_offsets_else_the_latest(tmp_path):
    from mocktrade.jobs.flink.job import TICKS_SQL, output_topics

    settings = Settings(data_dir=tmp_path, table_prefix="p_", kafka_bootstrap="k:9092")
    options = FlinkJobOptions.from_env("persistence", settings)
    assert options.source_topics == ("p_trade_executed", "p_market_data")
    assert options.group_of("p_trade_executed") == options.group == "p_trade-persistence"
    # The consumer-group runner's group for the ticks (TICK_PERSISTENCE_GROUP).
    assert options.group_of("p_market_data") == "p_trade-persistence-bars"
    ticks = source_table_ddl(settings, options, "tick_records", "p_market_data", reset="latest")
    for needle in ("'topic' = 'p_market_data'", "'properties.group.id' = 'p_trade-persistence-bars'",
                   "'properties.client.id.prefix' = 'p_trade-persistence-bars-p_market_data'",
                   "'scan.startup.mode' = 'group-offsets'", "'properties.auto.offset.reset' = 'latest'",
                   "'properties.commit.offsets.on.checkpoint' = 'true'"):
        assert needle in ticks
    assert TICKS_SQL.count("persist_ticks(") == 1  # one call per tick
    assert output_topics("persistence") == ("trade_executed.dlq",)
    # The other jobs' sources all read as the job's group.
    triggers = FlinkJobOptions.from_env("triggers", settings)
    assert {triggers.group_of(t) for t in triggers.source_topics} == {"p_trade-triggers"}


def test_the_mini_clusters_jvm_starts_lean_unless_told_otherwise(tmp_path, monkeypatch):
    """The job's environment hands PyFlink's gateway (which starts the
    mini-cluster's JVM with JVM_ARGS) the serial collector and C1 only: half
    the CPU to start and restore a job on a small machine."""
    import sys

    from mocktrade.jobs.flink.options import DEFAULT_JVM_ARGS
    from mocktrade.jobs.flink.service import job_environment

    settings = Settings(data_dir=tmp_path)

    def jvm_args() -> str:
        options = FlinkJobOptions.from_env("execution", settings)
        return job_environment("execution", settings, sys.executable, (), None, "", options.jvm_args)["JVM_ARGS"]

    assert jvm_args() == DEFAULT_JVM_ARGS
    assert "-XX:+UseSerialGC" in DEFAULT_JVM_ARGS.split() and "-XX:TieredStopAtLevel=1" in DEFAULT_JVM_ARGS.split()
    monkeypatch.setenv("MOCKTRADE_FLINK_JVM_ARGS", "-Xmx512m")
    assert jvm_args() == "-Xmx512m"
    monkeypatch.setenv("MOCKTRADE_FLINK_JVM_ARGS", "none")
    assert jvm_args() == ""
