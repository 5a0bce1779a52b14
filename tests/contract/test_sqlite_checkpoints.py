"""WAL checkpoints off the request path (adapters/embedded/checkpoints.py):
with automatic checkpoints off, the checkpointer thread keeps the WAL file
bounded under sustained writes, and empties it once writes stop."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from mocktrade.adapters.embedded import _sqlite
from mocktrade.adapters.embedded.checkpoints import WalCheckpointer
from mocktrade.adapters.embedded.eventlog import SqliteEventLog

RECORD = os.urandom(1024)
# ~30 MB in 3 s, ten times the log traffic of 1,000 orders/s
BATCHES, PER_BATCH = 150, 200
MiB = 1024 * 1024


async def write_steadily(log: SqliteEventLog, wal, sizes: list[int]) -> None:
    for i in range(BATCHES):
        await log.publish_many("t", [(f"k{j % 16}", RECORD, None) for j in range(PER_BATCH)])
        sizes.append(wal.stat().st_size)
        await asyncio.sleep(0.02)


async def test_without_auto_checkpoints_the_checkpointer_bounds_the_wal(tmp_path, monkeypatch):
    monkeypatch.setattr(_sqlite, "_auto_checkpoint_pages", 0)
    log = SqliteEventLog(tmp_path / "eventlog.sqlite3", partitions=4)
    assert log._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    wal = tmp_path / "eventlog.sqlite3-wal"
    checkpointer = WalCheckpointer(tmp_path, interval=0.05, idle_after=0.3, restart_above=4 * MiB)
    checkpointer.start()
    try:
        # A consumer reads along, as the jobs do: readers must not pin the WAL.
        consumer = log.consumer("t", "g")
        sizes: list[int] = []
        writer = asyncio.create_task(write_steadily(log, wal, sizes))
        read = 0
        while not writer.done() or read < BATCHES * PER_BATCH:
            records = await consumer.poll(2000, 0.05)
            read += len(records)
            await consumer.commit(records)
        await writer
        assert read == BATCHES * PER_BATCH
        assert max(sizes) < 12 * MiB, f"WAL grew to {max(sizes) / MiB:.1f} MiB"
        assert checkpointer.checkpoints > 0

        # Quiet: the WAL is truncated to nothing.
        for _ in range(100):
            if wal.stat().st_size == 0:
                break
            await asyncio.sleep(0.05)
        assert wal.stat().st_size == 0
        await consumer.close()
    finally:
        checkpointer.stop()
        await log.close()
    # Everything written is in the database file.
    conn = sqlite3.connect(tmp_path / "eventlog.sqlite3")
    assert conn.execute("SELECT count(*) FROM log_records").fetchone()[0] == BATCHES * PER_BATCH
    conn.close()


async def test_without_a_checkpointer_the_same_load_grows_the_wal(tmp_path, monkeypatch):
    """The control: the load above is enough to grow an unattended WAL."""
    monkeypatch.setattr(_sqlite, "_auto_checkpoint_pages", 0)
    log = SqliteEventLog(tmp_path / "eventlog.sqlite3", partitions=4)
    sizes: list[int] = []
    try:
        await write_steadily(log, tmp_path / "eventlog.sqlite3-wal", sizes)
    finally:
        await log.close()
    assert max(sizes) > 24 * MiB
