"""Start `mocktrade up` as a real subprocess on a free port."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

MOCKTRADE = [sys.executable, "-m", "mocktrade.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int = 50) -> int:
    """A base port whose next `size` ports are all free (distributed mode uses a block)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        try:
            sockets = []
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports")


class RunningPlatform:
    """`mocktrade up`, embedded; or `up --distributed` on the session's real engines."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 engines: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.distributed = engines is not None
        self.port = free_port_block() if self.distributed else free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        ws_port = self.port + 1 if self.distributed else self.port
        self.ws_url = f"ws://127.0.0.1:{ws_port}/v1/marketdata"
        engine_env = {k: v for k, v in (engines or {}).items() if k != "MOCKTRADE_STACK_DIR"}
        if self.distributed:
            # Topics, tables, indices and keys of this platform only.
            engine_env["MOCKTRADE_TABLE_PREFIX"] = f"e2e{uuid.uuid4().hex[:8]}_"
        self.stack_dir = (engines or {}).get("MOCKTRADE_STACK_DIR")
        self.env = {**os.environ, "MOCKTRADE_DATA_DIR": str(data_dir),
                    "MOCKTRADE_FEED_TICKS_PER_SECOND": "100", "MOCKTRADE_FEED_SEED": "7",
                    **engine_env, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"platform-{self.port}.log"

    def command(self) -> list[str]:
        if self.distributed:
            return [*MOCKTRADE, "up", "--distributed", "--keep-stack", "--stack-dir", self.stack_dir,
                    "--port", str(self.port), *self.extra_args]
        return [*MOCKTRADE, "up", "--port", str(self.port)]

    def pid_of(self, name: str) -> int:
        return int((self.data_dir / "logs" / f"{name}.pid").read_text())

    def start(self, timeout: float = 120.0) -> "RunningPlatform":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), env=self.env,
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
        text = self.log_path.read_text(errors="replace")[-5000:]
        for child_log in sorted((self.data_dir / "logs").glob("*.log")):
            text += f"\n--- {child_log.name}\n" + child_log.read_text(errors="replace")[-1500:]
        return text

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
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def platform(request, tmp_path_factory):
    engines = request.getfixturevalue("real_engines") if request.param == "distributed" else None
    running = RunningPlatform(tmp_path_factory.mktemp("platform") / "data", engines=engines).start()
    yield running
    running.stop()


def verify(platform: RunningPlatform, wait: float = 60) -> None:
    """`mocktrade verify --wait WAIT` passes (not platform.cli: its 120 s
    limit is shorter than some waits)."""
    result = subprocess.run([*MOCKTRADE, "verify", "--wait", str(wait)], env=platform.env,
                            capture_output=True, text=True, timeout=wait + 90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def process_alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (dead) parent to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
