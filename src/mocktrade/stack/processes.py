"""Detached engine processes: start, find again through a pid file, stop.

A pid file holds the pid and the process' start time (from /proc), so a pid
the kernel has since given to another program is never taken for the engine.
Each engine leads its own session and process group, so a signal reaches
everything it started.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces or parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (no zombies)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_alive(record: PidRecord) -> bool:
    _reap(record.pid)
    stat = _proc_stat(record.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == record.start_ticks


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), int(data["start_ticks"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def running_record(path: Path) -> PidRecord | None:
    """The live process a pid file names, else None (and a stale file is removed)."""
    record = read_pid_file(path)
    if record is None:
        return None
    if is_alive(record):
        return record
    path.unlink(missing_ok=True)
    return None


def spawn(command: list[str], *, cwd: Path, log_path: Path, pid_path: Path,
          env: dict[str, str] | None = None) -> PidRecord:
    """Start a command detached from the caller's session, logging to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    stat = _proc_stat(process.pid)
    record = PidRecord(process.pid, stat[1] if stat else 0)
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": record.pid, "start_ticks": record.start_ticks,
                               "command": command}))
    tmp.replace(pid_path)
    # The Popen object is dropped on purpose; is_alive() reaps the child.
    process.returncode = 0  # keep Popen.__del__ from warning about a running child
    return record


def signal_group(record: PidRecord, sig: int) -> None:
    """Send a signal to the engine's whole process group."""
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(record.pid, sig)


def rss_kib(record: PidRecord) -> int | None:
    """Resident memory of the process, in KiB."""
    try:
        for line in Path(f"/proc/{record.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
