"""On the real engines: `mocktrade stack kafka <tool>` runs Kafka's command-line
tools against the stack, a one-node search cluster stays green (trade
indices have no replica by default), and the DynamoDB region of the settings
is the one the tables are made and probed in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from mocktrade.stack import probes

pytestmark = pytest.mark.stack
MOCKTRADE = [sys.executable, "-m", "mocktrade.cli"]


def mocktrade(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MOCKTRADE_")}
    return subprocess.run([*MOCKTRADE, *args], env={**base, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_kafka_tools_run_against_the_stack(real_engines) -> None:
    stack_dir = real_engines["MOCKTRADE_STACK_DIR"]
    topic = f"tools_{uuid.uuid4().hex[:8]}"
    kafka = ["stack", "kafka", "--dir", stack_dir]
    created = mocktrade(*kafka, "topics", "--create", "--topic", topic, "--partitions", "1")
    assert created.returncode == 0, created.stderr
    listed = mocktrade(*kafka, "topics", "--list")
    assert listed.returncode == 0, listed.stderr
    assert {topic, "trade_executed"} <= set(listed.stdout.split())
    produced = mocktrade(*kafka, "console-producer", "--topic", topic, stdin="hello from the tools\n")
    assert produced.returncode == 0, produced.stderr
    consumed = mocktrade(*kafka, "console-consumer", "--topic", topic, "--from-beginning",
                         "--max-messages", "1", "--timeout-ms", "60000", "--group", f"{topic}-group")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["hello from the tools"]
    groups = mocktrade(*kafka, "consumer-groups", "--list")
    assert groups.returncode == 0, groups.stderr
    assert f"{topic}-group" in groups.stdout.split()
    # The same through `mocktrade --data-dir D stack kafka` (the stack of D/stack).
    unknown = mocktrade(*kafka, "no-such-tool")
    assert unknown.returncode == 1 and "no Kafka tool 'no-such-tool'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_stack_kafka_says_when_kafka_is_not_running(tmp_path: Path) -> None:
    result = mocktrade("--data-dir", str(tmp_path), "stack", "kafka", "consumer-groups", "--list")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: kafka is not running in {tmp_path / 'stack'} (stopped): "
                                    "start it with `mocktrade stack up`")


def test_trade_indices_keep_a_one_node_cluster_green(real_engines) -> None:
    from mocktrade.adapters.elasticsearch import ElasticsearchTradeHistory
    from mocktrade.domain.model import Execution, ExecutionStatus, Side

    url = real_engines["MOCKTRADE_ELASTICSEARCH_URL"]
    prefix = f"green{uuid.uuid4().hex[:8]}_"
    # An index made by an older mocktrade (one replica): yellow on one node.
    old = f"{prefix}trading_trades-2020-01"
    assert httpx.put(f"{url}/{old}", json={"settings": {"index": {"number_of_replicas": 1}}},
                     timeout=60).status_code == 200

    async def write() -> None:
        history = ElasticsearchTradeHistory(url, index_prefix=prefix, timeout=60)
        try:
            await history.index([Execution(
                f"o-{uuid.uuid4().hex}", "alice", "MOCKAAPL", Decimal(1), Side.BUY,
                ExecutionStatus.EXECUTED, Decimal("10.00"), datetime.now(timezone.utc))])
        finally:
            await history.close()
    try:
        asyncio.run(write())
        health = httpx.get(f"{url}/_cluster/health/{prefix}trading_trades-*",
                           params={"wait_for_status": "green", "timeout": "30s"}, timeout=60).json()
        assert health["status"] == "green", health
        settings = httpx.get(f"{url}/{prefix}trading_trades-*/_settings", timeout=30).json()
        assert len(settings) == 2
        assert {s["settings"]["index"]["number_of_replicas"] for s in settings.values()} == {"0"}
    finally:
        httpx.delete(f"{url}/{prefix}trading_trades-*", timeout=30)
        httpx.delete(f"{url}/_index_template/{prefix}trading_trades", timeout=30)


def test_the_dynamodb_region_is_honoured(real_engines, tmp_path: Path) -> None:
    endpoint = real_engines["MOCKTRADE_DYNAMODB_ENDPOINT"]
    prefix = f"region{uuid.uuid4().hex[:8]}_"
    region = "eu-west-1"
    (tmp_path / "engines.env").write_text(
        f"MOCKTRADE_DYNAMODB_ENDPOINT={endpoint}\nMOCKTRADE_DYNAMODB_REGION={region}\n"
        f"MOCKTRADE_TABLE_PREFIX={prefix}\n")
    created = mocktrade("--data-dir", str(tmp_path), "accounts", "create", "carol", "--cash", "10.00")
    assert created.returncode == 0, created.stderr
    listed = mocktrade("--data-dir", str(tmp_path), "accounts", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("carol\t"), listed.stderr
    ours = [name for name in probes.dynamodb_list_tables(endpoint, region) if name.startswith(prefix)]
    assert ours, "no table in the configured region"
    assert not [name for name in probes.dynamodb_list_tables(endpoint) if name.startswith(prefix)], \
        "a table was made in us-east-1 although the settings name eu-west-1"
    for name in ours:
        probes.dynamodb_call(endpoint, "DeleteTable", {"TableName": name}, region=region)
