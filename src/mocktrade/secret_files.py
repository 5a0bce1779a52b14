"""Files holding secrets (signing keys, the demo password): created readable
by their owner only, and tightened when found readable by others.

A secret file another user can read is a leaked secret on a shared machine;
an older data dir (or a copy made with a permissive umask) may hold such
files, so every read checks the mode and narrows it to 0600, with a warning
that says which file was exposed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("mocktrade.secrets")

OWNER_ONLY = 0o600


def tighten(path: Path) -> None:
    """Make an existing secret file owner-only, warning when it was not."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        try:
            path.chmod(OWNER_ONLY)
        except OSError as exc:  # not ours to change: say so, loudly
            log.warning("secret file is readable by others and cannot be tightened",
                        extra={"path": str(path), "mode": oct(mode), "reason": str(exc)})
            return
        log.warning("secret file was readable by others; narrowed to 0600",
                    extra={"path": str(path), "was": oct(mode)})


def read_secret(path: Path) -> str:
    tighten(path)
    return path.read_text()


def create_secret(path: Path, content: str) -> bool:
    """Write a new secret file (0600) unless one exists; False if it did.

    Written in full beside it, then linked into place (link fails if the
    name exists): two processes starting together agree on one value, and
    neither ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(path, content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def replace_secret(path: Path, content: str) -> None:
    """Atomically replace a secret file: a 0600 temporary beside it, renamed
    over it, so a reader sees the old content or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(_write_temporary(path, content), path)


def _write_temporary(path: Path, content: str) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary
