"""The embedded log wakes a consumer in another process at once (not at its
fallback poll), so a job process beside the HTTP process adds no latency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from mocktrade.adapters.embedded import eventlog
from mocktrade.adapters.embedded.eventlog import SqliteEventLog

PUBLISHER = """
import asyncio, sys, time
from mocktrade.adapters.embedded.eventlog import SqliteEventLog
async def main():
    log = SqliteEventLog(sys.argv[1])
    await asyncio.sleep(1.0)  # the consumer is waiting by now
    for i in range(20):
        await log.publish("t", "k", str(time.time()).encode())
        await asyncio.sleep(0.03)
    await log.close()
asyncio.run(main())
"""


async def test_a_publish_in_another_process_wakes_a_waiting_consumer_at_once(tmp_path, monkeypatch):
    # Without the datagram a consumer would see records only every 10 s here.
    monkeypatch.setattr(eventlog, "FALLBACK_POLL_INTERVAL", 10.0)
    path = tmp_path / "log.sqlite3"
    log = SqliteEventLog(path)
    consumer = log.consumer("t", "g")
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(path)])
    delays = []
    try:
        while len(delays) < 20:
            records = await consumer.poll(100, timeout=15)
            assert records, "no wake-up from the other process"
            now = time.time()
            delays += [now - float(r.value) for r in records]
    finally:
        publisher.wait(30)
        await log.close()
    assert sorted(delays)[len(delays) // 2] < 0.5
    assert not list((tmp_path / "wakeups").iterdir())  # both closed: no markers left


async def test_a_closed_peer_is_forgotten(tmp_path):
    a, b = SqliteEventLog(tmp_path / "log.sqlite3"), SqliteEventLog(tmp_path / "log.sqlite3")
    await b.close()
    await a.publish("t", "k", b"v")  # finds b's marker, b's socket is gone
    assert [p.name for p in (tmp_path / "wakeups").iterdir()] == [a._peers._name]
    await a.close()
