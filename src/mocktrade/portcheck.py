"""Is a TCP port free to listen on, and if not, who holds it?

Used before binding (a service says in one sentence which port is taken and
by whom, instead of looping on "address already in use") and by the
launcher, which checks its whole plan before starting anything. The owner is
found through /proc/net/tcp{,6} (listening socket -> inode) and
/proc/<pid>/fd (inode -> process); where that is not readable, only the port
is named.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

_LISTEN = "0A"


def is_free(host: str, port: int) -> bool:
    """True when a listener could bind host:port now (as uvicorn does: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen by the kernel."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def owner_pid(port: int) -> int | None:
    """The pid of a process with a socket listening on `port`, if /proc tells."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def describe_process(pid: int, width: int = 90) -> str:
    """`pid 123 (python -m mocktrade.cli serve feed ...)`."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())  # one line
    except OSError:
        command = ""
    if len(command) > width:
        command = command[:width - 3] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def owner(port: int) -> str:
    """Who holds `port`, for a message: a process, or 'another process'."""
    pid = owner_pid(port)
    return describe_process(pid) if pid is not None else "another process (its owner is not visible here)"


def taken_message(host: str, port: int, wanted_by: str) -> str:
    """One sentence: which port is taken, by whom, and who wanted it."""
    return f"{wanted_by} cannot listen on {host}:{port}: the port is taken by {owner(port)}"
