"""The docs a new user reads say what the code does."""

from __future__ import annotations

from pathlib import Path

from mocktrade import bootstrap
from mocktrade.stack import DEFAULT_PORTS
from mocktrade.stack.kafka_tools import TOOLS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_documents_the_internal_analytics_identity() -> None:
    readme = (ROOT / "README.md").read_text()
    distributed = readme.split("## Distributed mode", 1)[1].split("\n## ", 1)[0]
    assert f"`{bootstrap.INTERNAL_USER}`" in distributed
    assert "/internal/analytics/" in distributed
    assert "MOCKTRADE_DYNAMODB_REGION" in distributed and "MOCKTRADE_ELASTICSEARCH_REPLICAS" in distributed


def test_infra_readme_describes_the_commands_that_exist() -> None:
    infra = (ROOT / "infra" / "README.md").read_text()
    assert "future" not in infra.lower()
    for action in ("up", "down", "status", "env", "kafka"):
        assert f"mocktrade stack {action}" in infra
    assert f"MOCKTRADE_DYNAMODB_ENDPOINT=http://127.0.0.1:{DEFAULT_PORTS['dynamodb']}" in infra
    for tool in TOOLS:
        assert tool in infra
