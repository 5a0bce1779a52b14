"""`up --distributed`: its services never land on an engine's port, a taken port
is named with its owner before anything starts, the banner and the console
never show a raw response body, and httpx does not flood the console."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mocktrade import cli, launcher, logs, portcheck
from mocktrade.config import Settings
from mocktrade.ports import DependencyUnavailable
from mocktrade.stack import DEFAULT_PORTS

ROLES = [name for name, _args, _offset in launcher.LAYOUT]


def settings(port: int = 8000, **changes) -> Settings:
    return Settings(data_dir=Path("/nonexistent-mocktrade"), port=port, **changes)


def engine_ports() -> dict[str, dict[str, int]]:
    from mocktrade.stack import ENGINES
    return {name: dict(zip(engine.port_keys, engine.default_ports)) for name, engine in ENGINES.items()}


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_default_service_ports_never_collide_with_engine_ports(replicas: int) -> None:
    children = launcher.plan(settings(), {}, {role: replicas for role in ROLES}, Path("/tmp"))
    ports = [child.port for child in children]
    assert len(ports) == len(set(ports)), "two services on one port"
    assert not set(ports) & set(DEFAULT_PORTS.values()), \
        f"service ports {sorted(set(ports) & set(DEFAULT_PORTS.values()))} are engine default ports"


def test_plan_check_names_a_service_on_an_engine_port() -> None:
    # --port 9091 puts marketdata (+1) on Kafka's 9092 and feed (+2) on 9093.
    children = launcher.plan(settings(9091), {}, {}, Path("/tmp"))
    problems = launcher.check_plan(children, "127.0.0.1", engine_ports(), running_engines=set(engine_ports()))
    marketdata = [p for p in problems if p.startswith("marketdata ")]
    assert marketdata == ["marketdata would listen on port 9092, the kafka engine's port (kafka): pick another "
                          "--port, or move the engine with `mocktrade stack up --port kafka=N`"]
    assert any(p.startswith("feed would listen on port 9093") for p in problems)


def listener_process() -> tuple[subprocess.Popen, int]:
    """Another process holding a listening port."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time\n"
         "s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
         "print(s.getsockname()[1], flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


def test_plan_check_names_the_process_holding_a_service_port() -> None:
    holder, port = listener_process()
    try:
        children = launcher.plan(settings(port - 1), {}, {}, Path("/tmp"))  # marketdata = base + 1
        problems = launcher.check_plan(children, "127.0.0.1", {}, set())
        assert len(problems) <= 2  # another unrelated port in the plan could be taken too
        sentence = next(p for p in problems if p.startswith("marketdata"))
        assert sentence.startswith(f"marketdata cannot listen on 127.0.0.1:{port}: the port is taken by "
                                   f"pid {holder.pid} (")
        assert "\n" not in sentence
        assert portcheck.owner_pid(port) == holder.pid
        assert not portcheck.is_free("127.0.0.1", port)
    finally:
        holder.kill()
        holder.wait()
    assert portcheck.is_free("127.0.0.1", port)


def test_a_non_mocktrade_answer_is_never_printed_as_a_status() -> None:
    s3_error = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code>"
                "<Message>The AWS Access Key Id you provided does not exist</Message></Error>")
    request = httpx.Request("GET", "http://127.0.0.1:1/readyz")
    described = launcher.describe_readiness(httpx.Response(403, text=s3_error, request=request))
    assert described == "not ready (port answered HTTP 403: not a mocktrade service)"
    assert launcher.describe_readiness(httpx.Response(200, json={"status": "ready"}, request=request)) == "ready"
    not_ready = httpx.Response(503, json={"status": "not_ready", "checks": {
        "startup": "starting", "kafka": "ok", "dynamodb": "unreachable at http://127.0.0.1:9400: refused"}},
        request=request)
    assert launcher.describe_readiness(not_ready) == \
        "not ready (startup: starting; dynamodb: unreachable at http://127.0.0.1:9400: refused)"


def test_console_prints_one_line_per_state_change() -> None:
    out = io.StringIO()
    reporter = launcher.StateReporter(out)
    for name, state in [("feed", "not answering"), ("feed", "not answering"), ("feed", "not ready (startup: starting)"),
                        ("feed", "not ready (kafka: unreachable)"), ("feed", "ready"), ("feed", "ready"),
                        ("gateway", "ready"), ("feed", "not answering")]:
        reporter.update(name, state)
    assert out.getvalue().splitlines() == [
        "feed: not answering", "feed: not ready (startup: starting)", "feed: ready", "gateway: ready",
        "feed: not answering"]


def test_httpx_request_lines_stay_off_the_console(capfd) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO")
        with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(503))) as client:
            for _ in range(20):
                client.get("http://127.0.0.1:8000/readyz")
        assert "HTTP Request" not in capfd.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_engines_env_names_the_dynamodb_region() -> None:
    values = launcher.engines_file(settings(dynamodb_region="eu-west-1"),
                                   {"MOCKTRADE_DYNAMODB_ENDPOINT": "http://127.0.0.1:9400"})
    assert values["MOCKTRADE_DYNAMODB_REGION"] == "eu-west-1"
    child = launcher.plan(settings(dynamodb_region="eu-west-1"), {}, {}, Path("/tmp"))[0]
    assert child.env["MOCKTRADE_DYNAMODB_REGION"] == "eu-west-1"


def test_region_is_read_back_from_engines_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MOCKTRADE_DYNAMODB_REGION", raising=False)
    (tmp_path / "engines.env").write_text("MOCKTRADE_DYNAMODB_REGION=ap-south-1\n")
    assert Settings.from_env(tmp_path).dynamodb_region == "ap-south-1"


def test_an_unavailable_engine_is_one_sentence_not_a_traceback(monkeypatch, capsys) -> None:
    def down(*_args):
        raise DependencyUnavailable("dynamodb", "Could not connect to the endpoint URL: "
                                                "\"http://127.0.0.1:9400/\"\nmore lines")
    monkeypatch.setattr(cli, "_dispatch", down)
    assert cli.main(["--data-dir", "/nonexistent-mocktrade", "token", "alice"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mocktrade: dynamodb is not reachable (")
    assert "`mocktrade stack up`" in err


def test_elasticsearch_replicas_default_to_zero(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MOCKTRADE_ELASTICSEARCH_REPLICAS", raising=False)
    assert Settings.from_env(tmp_path).elasticsearch_replicas == 0
    monkeypatch.setenv("MOCKTRADE_ELASTICSEARCH_REPLICAS", "2")
    assert Settings.from_env(tmp_path).elasticsearch_replicas == 2


def test_a_service_says_who_holds_its_port(tmp_path: Path) -> None:
    """A real `mocktrade serve` on a taken port: one sentence, no retry loop, no traceback."""
    holder, port = listener_process()
    try:
        begin = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mocktrade.cli", "--data-dir", str(tmp_path), "serve", "feed",
             "--port", str(port)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "MOCKTRADE_KAFKA_BOOTSTRAP": ""})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - begin < 30
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mocktrade: feed cannot listen on 127.0.0.1:{port}: the port is taken by "
                               f"pid {holder.pid} (")
