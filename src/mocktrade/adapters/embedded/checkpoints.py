"""WAL checkpoints off the request path.

With SQLite's automatic checkpoint, the commit that crosses 1,000 WAL pages
copies the WAL back into the database and fsyncs it before it returns: a
group commit of the HTTP process (tens of 202s waiting) or an execution
batch pays milliseconds now and then. The embedded platform turns that off
on its connections (_sqlite.checkpoints_elsewhere) and runs this thread
instead, in the job process, with its own connection per file.

Every `interval` it runs a PASSIVE checkpoint on each database (it never
waits for a lock and never blocks a writer), and a TRUNCATE once the file
has had no write for `idle_after`, and a RESTART when a writer that never
pauses has let the WAL pass `restart_above`,
TRUNCATE and RESTART with a short busy timeout, so that they fall back to a
PASSIVE one on a busy file rather than hold writers back. A WAL whose frames are all checkpointed is reused from
its start by the next writer, so under sustained load the file stays around
what is written in one interval (the test writes far more and checks that).

SQLite releases the GIL while it copies pages, so the thread costs the job
process's event loop nothing but the calls themselves.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("mocktrade.checkpoints")

# Milliseconds a TRUNCATE may wait for readers and writers before it falls
# back to what a PASSIVE checkpoint does; short so no writer waits on it.
TRUNCATE_BUSY_MS = 20

# Bytes per WAL frame (a 4 KiB page and its header), to judge a WAL's size
# from the frame count a checkpoint reports.
_FRAME_ESTIMATE = 4096 + 24


@dataclass
class _WalFile:
    conn: sqlite3.Connection
    frames: int = -1  # WAL frames at the last round
    changed_at: float = field(default_factory=time.monotonic)
    truncated: bool = False


class WalCheckpointer:
    def __init__(self, data_dir: Path, *, interval: float = 0.25, idle_after: float = 2.0,
                 restart_above: int = 16 * 1024 * 1024, pattern: str = "*.sqlite3"):
        self.data_dir, self.interval, self.idle_after, self.pattern = (
            Path(data_dir), interval, idle_after, pattern)
        self.restart_above = restart_above  # bytes of WAL that call for a RESTART
        self.checkpoints = 0  # PASSIVE and TRUNCATE runs, for tests and logs
        self.largest_wal = 0  # bytes: the biggest WAL file seen
        self._files: dict[Path, _WalFile] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for wal in self._files.values():
            wal.conn.close()
        self._files.clear()

    async def astart(self) -> None:  # Process.on_start takes coroutines
        self.start()

    async def astop(self) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def run_once(self) -> None:
        for database in sorted(self.data_dir.glob(self.pattern)):
            try:
                self._checkpoint(database)
            except sqlite3.Error as exc:  # a busy or vanished file: next round
                log.warning("checkpoint failed", extra={"file": database.name, "reason": str(exc)})

    def _checkpoint(self, database: Path) -> None:
        wal_path = database.with_name(database.name + "-wal")
        try:
            self.largest_wal = max(self.largest_wal, wal_path.stat().st_size)
        except FileNotFoundError:
            return
        wal = self._files.get(database)
        if wal is None:
            wal = self._files[database] = _WalFile(self._connect(database))
        # PASSIVE every round: with nothing new it only reads the WAL index.
        # Its frame count tells whether anyone wrote since the last round (the
        # file's size does not: a restarted WAL is overwritten in place).
        _, frames, _ = wal.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        now = time.monotonic()
        if frames != wal.frames:
            wal.frames, wal.changed_at, wal.truncated = frames, now, False
            if frames * _FRAME_ESTIMATE > self.restart_above:
                # A writer that never pauses never finds the WAL fully
                # backfilled, so never starts it over: take the write lock for
                # the little PASSIVE left, so the next writer does.
                wal.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        elif not wal.truncated and now - wal.changed_at >= self.idle_after:
            busy, _, _ = wal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            wal.truncated = busy == 0
            wal.frames = 0 if wal.truncated else frames

    @staticmethod
    def _connect(database: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {TRUNCATE_BUSY_MS}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA synchronous = NORMAL")  # one fsync per checkpoint, as the writers
        return conn
