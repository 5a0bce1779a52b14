"""What every SQLite-backed adapter shares: how a connection is opened, how a
write transaction is taken, and how times and amounts are stored.

Durability: WAL with synchronous=NORMAL. A commit appends to the WAL file with
write(2) before it returns, so once a call has returned its data is in the
operating system's page cache and survives the process being killed (kill -9);
only the WAL checkpoint is fsynced (by a WalCheckpointer thread where the
platform runs one: checkpoints.py). Losing the last commits on a power cut is
the accepted price of microsecond commits for an embedded stand-in.

Several processes may open the same file (the `mocktrade accounts` CLI while
the platform runs): every write takes the write lock up front (BEGIN
IMMEDIATE) so a read-modify-write cannot interleave with another process, and
busy_timeout makes a contended writer wait instead of failing.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from ...ports import DependencyUnavailable

BUSY_TIMEOUT_MS = 5_000

# WAL pages at which a committing connection checkpoints by itself (SQLite's
# default). A checkpoint inside a commit puts its copying and fsync on
# whoever committed: the HTTP process's group commit, the execution batch.
# A process whose platform runs a WalCheckpointer (checkpoints.py) calls
# checkpoints_elsewhere() before opening adapters, and its commits only append.
_auto_checkpoint_pages = 1000

# After a checkpoint has emptied the WAL, the next writer starts it over and
# cuts the file to this size, so one burst does not leave a large file behind.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def checkpoints_elsewhere() -> None:
    """Connections opened by this process from now on never checkpoint in a commit."""
    global _auto_checkpoint_pages
    _auto_checkpoint_pages = 0

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def connect(path: str | Path) -> sqlite3.Connection:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; we say BEGIN ourselves.
    # check_same_thread=False: an adapter may be closed from another thread
    # than the one that opened it; each adapter still uses it from one thread.
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_auto_checkpoint_pages}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


# SQLite result codes that mean "the store cannot serve now" (another process
# kept the lock past busy_timeout, the disk is full or failing), as opposed to
# a bug in our SQL. Callers see them as ports.DependencyUnavailable -> 503.
_UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
                sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY}


@contextmanager
def write_transaction(conn: sqlite3.Connection,
                      dependency: str = "sqlite") -> Iterator[sqlite3.Connection]:
    """One atomic write; the lock is taken at BEGIN so no other writer sneaks in."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise_if_unavailable(exc, dependency)
        raise
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise_if_unavailable(exc, dependency)
        raise


def raise_if_unavailable(exc: sqlite3.OperationalError, dependency: str) -> None:
    if (exc.sqlite_errorcode & 0xFF) in _UNAVAILABLE:
        raise DependencyUnavailable(dependency, str(exc)) from exc


def to_micros(moment: datetime) -> int:
    """Whole microseconds since the epoch: exact, sortable, index-friendly."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; all times are UTC")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)
