"""A write of the embedded log that waits for another process's write lock
waits on the log's writer thread, never on the event loop: the process's
requests and WebSocket pushes go on meanwhile (adapters/embedded/eventlog.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from mocktrade.adapters.embedded.eventlog import SqliteEventLog

HOLD_SECONDS = 1.0

LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def test_a_publish_waiting_for_another_process_lock_leaves_the_loop_free(tmp_path):
    path = tmp_path / "log.sqlite3"
    log = SqliteEventLog(path)
    await log.publish("t", "k", b"before")  # the topic exists; the writer thread is up
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path), str(HOLD_SECONDS)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ticks = 0
        longest_gap = 0.0

        async def tick() -> None:
            nonlocal ticks, longest_gap
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                longest_gap = max(longest_gap, now - last)
                last = now
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        await asyncio.gather(log.publish("t", "k", b"first"),
                             log.publish_many("t", [("k", b"second", None)]))
        waited = time.monotonic() - started
        ticker.cancel()
        # The publishes waited for the other process's commit...
        assert waited >= HOLD_SECONDS * 0.5
        # ...and the loop turned all along (a blocked loop would show one gap of ~1 s).
        assert longest_gap < HOLD_SECONDS / 2 and ticks > 10
        records = await log.consumer("t", "g").poll(10, timeout=1)
        assert [r.value for r in records] == [b"before", b"first", b"second"]
        assert [r.offset for r in records] == [0, 1, 2]
    finally:
        holder.wait(10)
        await log.close()
