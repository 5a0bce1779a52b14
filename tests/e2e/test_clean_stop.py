"""SIGTERM (or Ctrl-C) to `up` at any moment stops everything it started:
during start-up, during the readiness wait, and while it runs. No child
outlives its supervisor."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningPlatform, process_alive, wait_for

pytestmark = pytest.mark.e2e


def _children(data_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in (data_dir / "logs").glob("*.pid") if p.read_text().strip()]


def _stop_when(platform: RunningPlatform, moment: str, sig: int) -> list[int]:
    """Start `up`, wait for `moment`, send `sig`; the pids of every child it had."""
    log = open(platform.log_path, "ab")
    platform.data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(platform.command(), env=platform.env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        if moment == "starting":
            time.sleep(0.3)
        elif moment == "waiting for readiness":
            wait_for(lambda: "processes (logs in" in platform.log_path.read_text(errors="replace")
                     or _children(platform.data_dir), timeout=120, interval=0.05)
        else:
            wait_for(lambda: "demo token" in platform.log_path.read_text(errors="replace"),
                     timeout=180, interval=0.1)
        pids = _children(platform.data_dir)
        process.send_signal(sig)
        process.wait(60)
        return pids + _children(platform.data_dir)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("moment, sig", [("starting", signal.SIGTERM), ("running", signal.SIGINT),
                                         ("running", signal.SIGTERM)])
def test_embedded_up_stops_its_job_process(tmp_path, moment, sig):
    platform = RunningPlatform(tmp_path / "data")
    pids = _stop_when(platform, moment, sig)
    for pid in pids:
        wait_for(lambda: not process_alive(pid), timeout=15)


@pytest.mark.parametrize("moment, sig", [("waiting for readiness", signal.SIGTERM),
                                         ("waiting for readiness", signal.SIGINT),
                                         ("running", signal.SIGTERM)])
def test_distributed_up_stops_every_process_it_started(tmp_path, request, moment, sig):
    engines = request.getfixturevalue("real_engines")
    platform = RunningPlatform(tmp_path / "data", engines=engines)
    pids = _stop_when(platform, moment, sig)
    assert pids, "no child was started before the signal"
    for pid in pids:
        wait_for(lambda: not process_alive(pid), timeout=20)


def test_a_killed_supervisor_takes_its_children_along(tmp_path, request):
    engines = request.getfixturevalue("real_engines")
    platform = RunningPlatform(tmp_path / "data", engines=engines).start(timeout=180)
    pids = _children(platform.data_dir)
    platform.kill()  # kill -9: no clean-up code runs
    for pid in pids:
        wait_for(lambda: not process_alive(pid), timeout=20)
