"""Start `mocktrade up` as a real subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MOCKTRADE = [sys.executable, "-m", "mocktrade.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningPlatform:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/marketdata"
        self.env = {**os.environ, "MOCKTRADE_DATA_DIR": str(data_dir),
                    "MOCKTRADE_FEED_TICKS_PER_SECOND": "100", "MOCKTRADE_FEED_SEED": "7",
                    **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"platform-{self.port}.log"

    def start(self, timeout: float = 60.0) -> "RunningPlatform":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*MOCKTRADE, "up", "--port", str(self.port)], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mocktrade up exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mocktrade up not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*MOCKTRADE, *args], env=self.env, capture_output=True, text=True,
                                timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"mocktrade {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def token(self, user: str) -> str:
        return self.cli("token", user).stdout.strip()

    def client(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10,
                            headers={"Authorization": f"Bearer {self.token(user)}"})

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    running = RunningPlatform(tmp_path_factory.mktemp("platform") / "data").start()
    yield running
    running.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
