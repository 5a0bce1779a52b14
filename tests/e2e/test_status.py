"""`mocktrade status`: the processes of a running deployment, found through
DATA_DIR/processes.json, with health, rates, lag, clients and last error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mocktrade import process_file

from .conftest import MOCKTRADE, RunningPlatform, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    running = RunningPlatform(tmp_path_factory.mktemp("status") / "data").start()
    yield running
    running.stop()


def status_json(platform: RunningPlatform) -> dict:
    result = platform.cli("status", "--json", "--interval", "0.5")
    return json.loads(result.stdout)


def place_orders(platform: RunningPlatform, count: int = 3) -> None:
    with platform.client("alice") as alice:
        # A platform answers /readyz before its first price has come through
        # the feed (distributed: feed -> Kafka -> market data -> Redis).
        wait_for(lambda: alice.get("/v1/prices/MOCKAAPL").status_code == 200, timeout=60)
        for _ in range(count):
            placed = alice.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
            assert placed.status_code == 202, placed.text


def persisted(status: dict) -> float:
    """Trades the persistence child has handled, by its own count."""
    child = next(p for p in status["processes"] if p["name"] == "persistence")
    by_job = (child["events"] or {}).get("by_job", {})
    return (by_job.get("trade-persistence") or {}).get("total", 0)


def test_embedded_json_lists_every_process_healthy(embedded: RunningPlatform):
    place_orders(embedded)
    # Each job child samples its lag every few seconds: wait for both first samples.
    status = wait_for(lambda: (s := status_json(embedded)) and
                      all(p["lag"] for p in s["processes"] if p["kind"] == "job") and s,
                      timeout=30, interval=0.5)
    assert status["mode"] == "embedded"
    processes = {p["name"]: p for p in status["processes"]}
    assert set(processes) == {"platform", "execution", "persistence"}
    for process in processes.values():
        assert process["health"] == "ok", process
        assert process["alive"] is True and process["metrics"] is True
    platform, execution, persistence = (processes[n] for n in ("platform", "execution", "persistence"))
    assert platform["port"] == embedded.port
    assert platform["orders"]["total"] >= 3 and platform["orders"]["per_s"] is not None
    assert platform["ticks"]["total"] > 0 and platform["ticks"]["per_s"] > 0  # 100 ticks/s feed
    assert platform["ws_clients"] == 0
    assert execution["jobs"] == ["execution", "triggers"] and persistence["jobs"] == ["persistence"]
    for child in (execution, persistence):
        assert child["kind"] == "job" and child["pid"] == embedded.pid_of(child["name"])
        assert child["restarts"] == 0
        assert child["log"].endswith(f"{child['name']}.log")
    assert len({platform["pid"], execution["pid"], persistence["pid"]}) == 3
    assert execution["events"]["by_job"]["trade-execution"]["total"] >= 3
    assert set(execution["lag"]["by_group"]) >= {"trade-execution"}
    assert "trade-persistence" not in execution["lag"]["by_group"]
    wait_for(lambda: persisted(status_json(embedded)) >= 3, timeout=30, interval=0.5)
    assert set(persistence["lag"]["by_group"]) >= {"trade-persistence"}
    assert "trade-execution" not in persistence["lag"]["by_group"]


def test_embedded_once_prints_a_plain_table(embedded: RunningPlatform):
    out = embedded.cli("status", "--once", "--interval", "0.5").stdout
    assert "\x1b" not in out  # not a TTY: no ANSI
    lines = out.splitlines()
    assert "PROCESS" in lines[1] and "ORDERS/S" in lines[1] and "LAG" in lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"platform", "execution", "persistence"}
    assert all(" ok " in row for row in rows.values())
    assert rows["platform"].split()[3] == "ok"


def test_last_error_is_the_newest_warning_of_the_log(embedded: RunningPlatform):
    log = embedded.data_dir / "logs" / "persistence.log"
    with open(log, "a") as out:  # as logs.py writes them
        out.write(json.dumps({"time": "2030-01-01T00:00:00.000+00:00", "level": "WARNING",
                              "logger": "mocktrade.test", "message": "disk\nalmost full",
                              "free": "1%"}) + "\n")
    persistence = next(p for p in status_json(embedded)["processes"] if p["name"] == "persistence")
    assert persistence["last_error"] == {"time": "2030-01-01T00:00:00.000+00:00", "level": "WARNING",
                                  "text": "mocktrade.test: disk almost full free=1%"}


def test_a_stopped_platform_removes_its_file(tmp_path):
    running = RunningPlatform(tmp_path / "data").start()
    assert process_file.running(running.data_dir)["owner"] == running.process.pid
    running.stop()
    assert running.process.returncode is not None
    assert not (running.data_dir / "processes.json").exists()


def test_nothing_running_is_one_sentence_and_exit_1(tmp_path):
    for args in (("--json",), ("--once",), ()):
        result = subprocess.run([*MOCKTRADE, "--data-dir", str(tmp_path), "status", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.startswith("mocktrade: nothing runs on")
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_file_left_by_a_killed_up_is_nothing_running(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    process_file.write(tmp_path, "embedded", "127.0.0.1", [{"name": "platform", "port": 1, "pid": gone.pid}])
    document = json.loads((tmp_path / "processes.json").read_text())
    document["owner"] = gone.pid
    (tmp_path / "processes.json").write_text(json.dumps(document))
    result = subprocess.run([*MOCKTRADE, "--data-dir", str(tmp_path), "status", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "nothing runs" in result.stderr


@pytest.mark.stack
def test_distributed_lists_every_child(real_engines, tmp_path_factory):
    running = RunningPlatform(tmp_path_factory.mktemp("status-dist") / "data", engines=real_engines)
    running.start()
    try:
        place_orders(running)
        seen: list[dict] = []

        def settled():
            seen[:] = [status_json(running)]
            s = seen[0]
            return s and all(p["health"] == "ok" for p in s["processes"]) and \
                any(p["lag"] for p in s["processes"] if p["name"] == "execution") and s

        # A loaded CI machine starts seven services and their Kafka consumers
        # slowly; the last status read says which one was not there yet.
        try:
            status = wait_for(settled, timeout=150, interval=1)
        except AssertionError:
            raise AssertionError(f"status never settled; last read: {seen}") from None
        assert status["mode"] == "distributed"
        processes = {p["name"]: p for p in status["processes"]}
        assert {"gateway", "marketdata", "ingestion", "feed", "execution", "persistence",
                "triggers"} <= set(processes)
        for name, process in processes.items():
            assert process["pid"] == running.pid_of(name)
        assert processes["gateway"]["port"] == running.port
        assert processes["gateway"]["orders"]["total"] >= 3
        assert processes["ingestion"]["ticks"]["total"] > 0
        assert processes["execution"]["lag"] is not None, {n: p["lag"] for n, p in processes.items()}
    finally:
        running.stop()
    assert not (running.data_dir / "processes.json").exists()  # removed on a clean stop
