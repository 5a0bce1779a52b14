"""The embedded platform's jobs in processes of their own, supervised by `up`.

One event loop serves HTTP and WebSockets; the jobs run in child processes,
so the two cores of a small machine both work. Which jobs share a child is
bootstrap.EMBEDDED_JOB_PROCESSES: execution and triggers in one, persistence
(and chDB, which exactly one process owns) in the other, so the execution
job never waits behind a persistence batch on the same loop and GIL. They
share the data directory: SQLite files take writers from several processes,
and the log wakes consumers across processes (adapters/embedded/wakeup.py).

Each child is restarted when it dies (with a capped backoff) and dies with
its parent: it is started with PR_SET_PDEATHSIG, so even a kill -9 of `up`
takes it along, and a restarted `up` never meets an orphan holding chDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx

log = logging.getLogger("mocktrade.jobprocess")

PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 10.0
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 5.0
STABLE_SECONDS = 30  # a child that ran this long starts the backoff afresh when it dies


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent thread goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class JobProcess:
    """One supervised child running `mocktrade job JOB...`: its log is
    DATA_DIR/logs/<name>.log and its pid DATA_DIR/logs/<name>.pid."""

    def __init__(self, name: str, jobs: Sequence[str], data_dir: Path, port: int,
                 host: str = "127.0.0.1"):
        self.name, self.jobs = name, tuple(jobs)
        self.data_dir, self.port, self.host = data_dir, port, host
        self.url = f"http://{host}:{port}"
        self.log_path = data_dir / "logs" / f"{name}.log"
        self.pid_path = data_dir / "logs" / f"{name}.pid"
        self.restarts = 0
        # Called after each start (process_file: DATA_DIR/processes.json).
        self.on_started: Callable[[], None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def supervise(self) -> None:
        """Run the child until cancelled, starting it again whenever it exits."""
        backoff = FIRST_BACKOFF
        try:
            while True:
                started = time.monotonic()
                await self._start()
                code = await self._process.wait()
                log.warning("job process exited; restarting",
                            extra={"jobProcess": self.name, "code": code, "restarts": self.restarts})
                self.restarts += 1
                if time.monotonic() - started > STABLE_SECONDS:
                    backoff = FIRST_BACKOFF
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            await self._stop()

    async def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MOCKTRADE_DATA_DIR": str(self.data_dir.resolve())}
        with open(self.log_path, "ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mocktrade.cli", "job", *self.jobs, "--host", self.host,
                "--port", str(self.port), env=env, stdout=output, stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent)
        # Operators (and the crash tests) find each child by name here.
        self.pid_path.write_text(str(self._process.pid))
        if self.on_started is not None:
            self.on_started()

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), STOP_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def readiness(self) -> str:
        """"ok" when the child answers ready, else what it says."""
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                answer = await client.get(f"{self.url}/readyz")
        except httpx.HTTPError:
            return f"{self.name} process not answering"
        if answer.status_code == 200:
            return "ok"
        checks = answer.json().get("checks", {})
        return ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok") or "not ready"
