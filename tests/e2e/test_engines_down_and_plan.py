"""A new user's rough edges, as real processes: commands whose engines are
down say so in one sentence (no traceback), and `up --distributed` checks its
whole plan (engine ports vs service ports) before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import free_port

MOCKTRADE = [sys.executable, "-m", "mocktrade.cli"]


def run(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKTRADE_")}
    return subprocess.run([*MOCKTRADE, "--data-dir", str(data_dir), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def stopped_engines_dir(tmp_path: Path) -> Path:
    """A data dir as `up --distributed` leaves it once it stopped (and took the engines down)."""
    kafka, redis, dynamodb, search = (free_port() for _ in range(4))
    (tmp_path / "engines.env").write_text(
        f"MOCKTRADE_KAFKA_BOOTSTRAP=127.0.0.1:{kafka}\n"
        f"MOCKTRADE_REDIS_URL=redis://127.0.0.1:{redis}/0\n"
        f"MOCKTRADE_DYNAMODB_ENDPOINT=http://127.0.0.1:{dynamodb}\n"
        f"MOCKTRADE_DYNAMODB_REGION=us-east-1\n"
        f"MOCKTRADE_ELASTICSEARCH_URL=http://127.0.0.1:{search}\n")
    return tmp_path


@pytest.mark.parametrize("args", [
    ("verify",), ("accounts", "list"), ("accounts", "create", "carol", "--cash", "10.00"),
    ("accounts", "reset", "alice"), ("accounts", "passwd", "alice", "--password-stdin"),
])
def test_a_command_whose_engines_are_down_says_so_in_one_sentence(stopped_engines_dir: Path, args) -> None:
    begin = time.monotonic()
    result = run(stopped_engines_dir, *args, stdin="a-long-enough-password\n")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mocktrade: ") and "dynamodb at http://127.0.0.1:" in lines[0]
    assert "`mocktrade stack up`" in lines[0]
    assert time.monotonic() - begin < 60


def test_up_distributed_checks_its_plan_before_starting_anything(tmp_path: Path) -> None:
    # --port 9091 would put marketdata on Kafka's 9092 and feed on 9093.
    stack_dir = tmp_path / "stack"
    result = run(tmp_path / "data", "up", "--distributed", "--port", "9091", "--stack-dir", str(stack_dir))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("mocktrade: nothing started: ")
    assert ("marketdata would listen on port 9092, the kafka engine's port (kafka): pick another --port, "
            "or move the engine with `mocktrade stack up --port kafka=N`") in result.stderr
    assert "starting the engines" not in result.stdout
    assert not list(stack_dir.glob("*/*.pid")), "an engine was started"
    assert not (tmp_path / "data" / "logs").exists(), "a service was started"


def test_up_distributed_names_the_process_holding_a_service_port(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket,time\n"
         "s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
         "print(s.getsockname()[1], flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        result = run(tmp_path / "data", "up", "--distributed", "--port", str(port - 4),  # persistence: +4
                     "--stack-dir", str(tmp_path / "stack"))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert (f"persistence cannot listen on 127.0.0.1:{port}: the port is taken by pid {holder.pid} ("
            in result.stderr), result.stderr
    assert not list((tmp_path / "stack").glob("*/*.pid"))
