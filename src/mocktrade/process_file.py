"""DATA_DIR/processes.json: which processes a running deployment has, and
where they listen, for `mocktrade status` (src/mocktrade/status.py).

Written by `mocktrade up` (embedded: the HTTP process and its job children) and
by the launcher of `up --distributed` (every child), atomically (a temporary
file renamed over the old one), again whenever a child restarts, and removed
on a clean exit. A file whose owner (the `up` process) is gone is stale: a
kill -9 leaves it behind, and `status` treats it as nothing running.

    {"version": 1, "mode": "embedded" | "distributed", "owner": <pid of up>,
     "host": "127.0.0.1", "updated": "<ISO time>",
     "processes": [{"name": "platform", "kind": "http" | "service" | "job",
                    "port": 8000, "pid": 123, "restarts": 0,
                    "log": "/abs/path.log" | null}, ...]}

An embedded job child's entry also lists the jobs it runs ("jobs":
["execution", "triggers"]); it is named as in bootstrap.EMBEDDED_JOB_PROCESSES.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

FILE_NAME = "processes.json"
VERSION = 1


def path_of(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def write(data_dir: Path, mode: str, host: str, processes: Iterable[dict[str, Any]]) -> None:
    """Replace the file in one rename: a reader sees the old or the new one, never half."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    document = {"version": VERSION, "mode": mode, "owner": os.getpid(), "host": host,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "processes": list(processes)}
    handle, temporary = tempfile.mkstemp(prefix=".processes.", suffix=".tmp", dir=data_dir)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, indent=2)
        os.replace(temporary, path_of(data_dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove(data_dir: Path) -> None:
    """On a clean exit: the file goes, if it is still this process's."""
    document = read(data_dir)
    if document is not None and document.get("owner") == os.getpid():
        with contextlib.suppress(OSError):
            path_of(data_dir).unlink()


def read(data_dir: Path) -> dict[str, Any] | None:
    """The document, or None when there is none or it is unreadable."""
    try:
        document = json.loads(path_of(data_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("processes"), list):
        return None
    return document


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A dead child its parent has not reaped yet is a zombie: not running.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def running(data_dir: Path) -> dict[str, Any] | None:
    """The document if its owner still runs, else None (nothing, or stale)."""
    document = read(data_dir)
    if document is None or not pid_alive(document.get("owner")):
        return None
    return document


# -- the writers --------------------------------------------------------------

def record_embedded(data_dir: Path, host: str, port: int,
                    job_processes: Sequence[Any] = ()) -> Callable[[], None]:
    """`mocktrade up`: this HTTP process and its job children (job_process.
    JobProcess), now and at every start of a child. Returns what removes the
    file on exit."""
    data_dir = Path(data_dir).resolve()
    own_log = data_dir / "logs" / "platform.log"

    def update() -> None:
        processes = [{"name": "platform", "kind": "http", "port": port, "pid": os.getpid(),
                      "restarts": 0, "log": str(own_log) if own_log.exists() else None}]
        processes += [{"name": child.name, "kind": "job", "jobs": list(child.jobs),
                       "port": child.port, "pid": child.pid, "restarts": child.restarts,
                       "log": str(Path(child.log_path).resolve())} for child in job_processes]
        with contextlib.suppress(OSError):  # never stops the platform
            write(data_dir, "embedded", host, processes)

    for child in job_processes:
        child.on_started = update
    update()
    return lambda: remove(data_dir)


def record_distributed(data_dir: Path, host: str, children: Iterable[Any]) -> None:
    """The launcher: every child it started (launcher.Child), with its restarts."""
    processes = [{"name": child.name, "kind": "job" if child.args[0] == "job" else "service",
                  "port": child.port, "pid": child.process.pid if child.process else None,
                  "restarts": child.restarts, "log": str(Path(child.log_path).resolve())}
                 for child in children]
    with contextlib.suppress(OSError):
        write(data_dir, "distributed", host, processes)
