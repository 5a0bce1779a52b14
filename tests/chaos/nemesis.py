"""The nemesis: kill -9, pause (SIGSTOP/SIGCONT) and restart of every process
and engine of the deployment, one fault at a time, each followed by a
measured recovery.

Services and jobs are found through the pid files `up` writes
(DATA_DIR/logs/NAME.pid); each leads its own process group, so a signal
goes to the group (a Flink job's client and JVM, in a session of their own,
die with their service). `up` restarts a killed child by
itself; the nemesis only measures how long until the system works again.
Engines are found through the stack's pid files and restarted by the nemesis
through the stack manager (`mocktrade.stack.up`), as an operator would.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mocktrade import stack
from mocktrade.stack import processes

from .deployment import Deployment, Probe

SERVICES = ("gateway", "marketdata", "ingestion", "feed")
JOBS = ("execution", "persistence", "triggers")  # persistence also owns chDB (the analytics engine)
ENGINES = ("kafka", "redis", "dynamodb", "elasticsearch")
KINDS = ("kill", "pause")


@dataclass
class Fault:
    target: str
    kind: str  # kill | pause
    at: float  # seconds since the run began
    held: float  # seconds the target was down or paused before the heal began
    recovered_after: float | None  # seconds from the fault until the probe succeeded (and a job answered
    # /readyz again); None: not in time
    note: str = ""


def label(target: str) -> str:
    return "persistence (chDB owner)" if target == "persistence" else target


class Nemesis:
    def __init__(self, deployment: Deployment, probe: Probe, seed: int = 1,
                 hold: tuple[float, float] = (1.0, 3.0), recovery_timeout: float = 60.0,
                 targets: tuple[str, ...] = SERVICES + JOBS + ENGINES, kinds: tuple[str, ...] = KINDS):
        self.deployment = deployment
        self.probe = probe
        self.rng = random.Random(seed)
        self.hold = hold
        self.recovery_timeout = recovery_timeout
        self.targets = targets
        self.kinds = kinds
        self.injected: list[Fault] = []
        self.began = time.monotonic()

    def schedule(self):
        """First every target once, with a random kind, in a shuffled order;
        then rounds of every (target, kind) pair, each shuffled."""
        first = [(target, self.rng.choice(self.kinds)) for target in self.targets]
        self.rng.shuffle(first)
        yield from first
        while True:
            round_ = [(target, kind) for target in self.targets for kind in self.kinds]
            self.rng.shuffle(round_)
            yield from round_

    def faults(self, duration: float, gap: float = 1.0):
        """Inject faults until `duration` seconds have passed and every target
        has had one, yielding each once healed and measured."""
        end = time.monotonic() + duration
        for count, (target, kind) in enumerate(self.schedule()):
            if time.monotonic() >= end and count >= len(self.targets):
                return
            yield self.inject(target, kind)
            time.sleep(gap)

    def inject(self, target: str, kind: str) -> Fault:
        at = time.monotonic()
        hold = self.rng.uniform(*self.hold)
        note = ""
        if target in ENGINES:
            record = processes.running_record(self.deployment.stack_dir / target / f"{target}.pid")
            if record is None:
                note = "was not running; started"
                stack.up(self.deployment.stack_dir, [target])
            elif kind == "kill":
                processes.signal_group(record, signal.SIGKILL)
                _wait_gone(lambda: processes.is_alive(record))
                time.sleep(hold)  # down for a while, orders keep coming
                stack.up(self.deployment.stack_dir, [target])
                note = f"restarted by the stack manager after {time.monotonic() - at:.1f}s"
            else:
                self._pause_group(record.pid, hold)
        else:
            pid = self._child_pid(target)
            if kind == "kill":
                os.killpg(pid, signal.SIGKILL)
                new_pid = self._restarted(target, pid)
                note = (f"restarted by up after {time.monotonic() - at:.1f}s" if new_pid
                        else "not restarted by up within 30s")
            else:
                self._pause_group(pid, hold)
        recovered = self.probe.succeeds_within(self.recovery_timeout)
        if recovered is not None and target in JOBS:
            # A market order never passes through the trigger job (nor needs a
            # Flink job's restored run to have checkpointed): a job has
            # recovered once its own /readyz says so too.
            ready = self._ready_within(target, self.recovery_timeout - (time.monotonic() - at))
            recovered = None if ready is None else recovered
            if ready is not None:
                note = f"{note}; ready after {ready - at:.1f}s".lstrip("; ")
        fault = Fault(target, kind, round(at - self.began, 1), round(hold, 1),
                      None if recovered is None else round(time.monotonic() - at, 1), note)
        self.injected.append(fault)
        return fault

    def _child_pid(self, name: str) -> int:
        pid = int((self.deployment.platform.data_dir / "logs" / f"{name}.pid").read_text())
        # `up` starts each child as the leader of its own group; never signal any other group.
        if os.getpgid(pid) != pid:
            raise RuntimeError(f"{name} (pid {pid}) does not lead its process group")
        return pid

    @staticmethod
    def _pause_group(pid: int, seconds: float) -> None:
        os.killpg(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.killpg(pid, signal.SIGCONT)

    def _ready_within(self, name: str, timeout: float) -> float | None:
        """The monotonic time the process answered /readyz 200, None if not within timeout."""
        deadline = time.monotonic() + max(timeout, 0.0)
        port = self.deployment.service_port(name)
        while True:
            if _answers(port, "/readyz"):
                return time.monotonic()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    def _restarted(self, name: str, old_pid: int, timeout: float = 30.0) -> int | None:
        """The new pid once `up` has restarted the child and it answers /readyz."""
        deadline = time.monotonic() + timeout
        pid_file: Path = self.deployment.platform.data_dir / "logs" / f"{name}.pid"
        port = self.deployment.service_port(name)
        while time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text())
            except (FileNotFoundError, ValueError):
                pid = old_pid
            if pid != old_pid and _answers(port):
                return pid
            time.sleep(0.2)
        return None


def _answers(port: int, path: str = "/healthz") -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_gone(alive, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
