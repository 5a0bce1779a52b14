"""Idempotency keys of POST /v1/orders, in SQLite.

The embedded platform keeps them in a file of their own (bootstrap), not in
the portfolio store's: only the HTTP side writes them, twice per keyed
order, on its event loop, and in the portfolio file each of those writes
queued for the job process's execution-batch transactions (SQLite has one
writer per file), a wait that grew with the ledger (docs/benchmarks.md,
"Soak"). Keys an older version kept in the portfolio file are carried over
once, when the new file is first opened, so a retry across the upgrade still
finds its order. `reserve` is an insert-if-absent: whichever request
inserted first owns the key, and every later request with the same key reads
that record back, within this process or from another one.
"""

from __future__ import annotations

from pathlib import Path

from ...domain.events import format_time
from ...domain.model import utc_now
from ...ports import IdempotencyRecord
from ._sqlite import connect, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    userId TEXT NOT NULL,
    idempotencyKey TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    orderId TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    decline TEXT,
    PRIMARY KEY (userId, idempotencyKey)
) WITHOUT ROWID;
"""


class SqliteIdempotencyStore:
    """ports.IdempotencyStore; SQLite calls are microseconds, so they run on
    the event-loop thread."""

    def __init__(self, path: str | Path, carry_over_from: str | Path | None = None):
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(idempotency_keys)")}
        if "decline" not in columns:  # a file from before declines were remembered
            self._conn.execute("ALTER TABLE idempotency_keys ADD COLUMN decline TEXT")
        if carry_over_from is not None and Path(carry_over_from).exists():
            self._carry_over(Path(carry_over_from))

    def _carry_over(self, old_file: Path) -> None:
        """Copy the keys an older version kept in `old_file`, if this file has none yet."""
        if self._conn.execute("SELECT 1 FROM idempotency_keys LIMIT 1").fetchone():
            return
        self._conn.execute("ATTACH DATABASE ? AS old", (str(old_file),))
        try:
            old_columns = {row[1] for row in self._conn.execute("PRAGMA old.table_info(idempotency_keys)")}
            if not old_columns:
                return
            decline = "decline" if "decline" in old_columns else "NULL"
            with write_transaction(self._conn, "idempotency store") as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO main.idempotency_keys "
                    "(userId, idempotencyKey, fingerprint, orderId, published, created, decline) "
                    "SELECT userId, idempotencyKey, fingerprint, orderId, published, created, "
                    f"{decline} FROM old.idempotency_keys")
        finally:
            self._conn.execute("DETACH DATABASE old")

    async def lookup(self, user_id: str, key: str) -> IdempotencyRecord | None:
        row = self._conn.execute(
            "SELECT orderId, fingerprint, published, decline FROM idempotency_keys "
            "WHERE userId = ? AND idempotencyKey = ?", (user_id, key)).fetchone()
        return IdempotencyRecord(row[0], row[1], bool(row[2]), row[3]) if row else None

    async def reserve(self, user_id: str, key: str, fingerprint: str,
                      order_id: str) -> IdempotencyRecord:
        with write_transaction(self._conn, "idempotency store") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO idempotency_keys "
                "(userId, idempotencyKey, fingerprint, orderId, created) VALUES (?, ?, ?, ?, ?)",
                (user_id, key, fingerprint, order_id, format_time(utc_now())))
            stored_order, stored_fingerprint, published, decline = conn.execute(
                "SELECT orderId, fingerprint, published, decline FROM idempotency_keys "
                "WHERE userId = ? AND idempotencyKey = ?", (user_id, key)).fetchone()
        return IdempotencyRecord(stored_order, stored_fingerprint, bool(published), decline)

    # Both writes go through write_transaction so that a full disk or a held
    # lock is ports.DependencyUnavailable (503), never a raw sqlite3 error (500).
    async def mark_published(self, user_id: str, key: str) -> None:
        with write_transaction(self._conn, "idempotency store") as conn:
            conn.execute(
                "UPDATE idempotency_keys SET published = 1 WHERE userId = ? AND idempotencyKey = ?",
                (user_id, key))

    async def remember_decline(self, user_id: str, key: str, decline: str) -> None:
        with write_transaction(self._conn, "idempotency store") as conn:
            conn.execute(
                "UPDATE idempotency_keys SET decline = ? WHERE userId = ? AND idempotencyKey = ?",
                (decline, user_id, key))

    async def close(self) -> None:
        self._conn.close()
