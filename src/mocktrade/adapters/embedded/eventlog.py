"""The embedded stand-in for Kafka: a partitioned, durable log in one SQLite file.

Topics are created on first use with a fixed partition count; the key picks
the partition (crc32 % partitions, stable across processes and restarts) and
each partition numbers its records 0, 1, 2, ... without gaps. Consumer groups
keep committed offsets in the same file, so a restarted consumer resumes after
what it committed and gets every uncommitted record again (at-least-once).

Reads run synchronously on the event-loop thread: an indexed range read is
a few microseconds, far less than a thread hop, and WAL readers never wait
for a lock. Writes (appends and offset commits) run on one writer thread
per log, with a connection of its own: a write takes SQLite's write lock,
which another process (the job process beside the HTTP one) may hold, and
waiting for it on the loop thread would stall every request and WebSocket
push of this process for as long. Appends of one process queue up while
its writer is busy and go in the next transaction together (group commit),
in the order they were called, so a key keeps its order whichever of
`publish` or `publish_many` wrote it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Mapping, Sequence

import orjson

from ...domain.model import utc_now
from ...ports import LogRecord, OutgoingRecord, offsets_after
from ._sqlite import connect, from_micros, to_micros, write_transaction
from .wakeup import CrossProcessWakeup

DEFAULT_RETENTION = timedelta(days=7)

# How often a waiting consumer looks at the file even without an in-process
# wake-up, so that records written by another process are seen promptly.
FALLBACK_POLL_INTERVAL = 0.05

# Retention deletes in slices so that the event loop is never held for long.
RETENTION_SLICE = 5_000


_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_topics (
    topic TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_records (
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    headers BLOB,
    timestamp_us INTEGER NOT NULL,
    PRIMARY KEY (topic, part, log_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, part)
) WITHOUT ROWID;
"""

# The next offset is computed inside the write transaction from the
# partition's highest offset (one primary-key seek): correct with several
# writing processes and cheaper than keeping a counter row. Retention never
# deletes a partition's newest record, so the numbering never restarts.
_APPEND = (
    "INSERT INTO log_records (topic, part, log_offset, key, value, headers, timestamp_us) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)")
_HIGHEST = "SELECT max(log_offset) FROM log_records WHERE topic = ? AND part = ?"


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class SqliteEventLog:
    """ports.EventLog over one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, partitions: int = 4):
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._default_partitions = partitions
        self._path = path
        self._conn = connect(path)  # reads, and the rare topic creation and retention
        self._conn.executescript(_SCHEMA)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="eventlog-writer")
        self._writer_conn: sqlite3.Connection | None = None  # opened on the writer thread
        self._flusher: asyncio.Task | None = None
        self._topics: dict[str, int] = {}
        # One event per topic that has a waiting consumer; a publish sets and
        # drops it, so the next wait gets a fresh one.
        self._wakeups: dict[str, asyncio.Event] = {}
        # Appends waiting for the writer's next transaction: rows, and who waits.
        self._pending: list[tuple[list[tuple], asyncio.Future]] = []
        # Consumers in other processes (a job process beside the HTTP one)
        # are woken by a datagram; see wakeup.py.
        self._peers = CrossProcessWakeup(Path(path).parent / "wakeups", self._wake_here)
        self._closed = False

    # -- producing --------------------------------------------------------

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        """Group commit: every publish waiting for the writer is written in one
        transaction, and each caller returns once that transaction has
        committed (so a 202 sent after it still means durable)."""
        await self._append([(topic, partition_for(key, self.partitions(topic)), key, value,
                             orjson.dumps(dict(headers)) if headers else None)])

    async def publish_many(self, topic: str, records: Sequence[OutgoingRecord]) -> None:
        """Publish a batch in one transaction; each record keeps its key's order.

        About ten times the throughput of one `publish` per record, for
        producers that already hold a batch (the feed, replays, benchmarks).
        """
        count = self.partitions(topic)
        await self._append([(topic, partition_for(key, count), key, value,
                             orjson.dumps(dict(headers)) if headers else None)
                            for key, value, headers in records])

    async def _append(self, rows: list[tuple]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((rows, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                rows = [row for rows, _ in batch for row in rows]
                try:
                    await loop.run_in_executor(self._writer, self._write_rows, rows)
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
                for topic in {row[0] for row in rows}:
                    self._wake(topic)
        finally:
            self._flusher = None

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer_conn is None:
            self._writer_conn = connect(self._path)
        return self._writer_conn

    def _write_rows(self, rows: list[tuple]) -> None:
        """On the writer thread: append rows in one transaction, numbering each
        partition on from its highest offset."""
        now = time.time_ns() // 1000
        with write_transaction(self._writer_connection(), "event log") as conn:
            ends: dict[tuple[str, int], int] = {}
            params = []
            for topic, partition, key, value, headers in rows:
                slot = (topic, partition)
                offset = ends[slot] if slot in ends else self._end(conn, topic, partition)
                params.append((topic, partition, offset, key, value, headers, now))
                ends[slot] = offset + 1
            conn.executemany(_APPEND, params)

    @staticmethod
    def _end(conn: sqlite3.Connection, topic: str, partition: int) -> int:
        """The offset the partition's next record gets."""
        (highest,) = conn.execute(_HIGHEST, (topic, partition)).fetchone()
        return 0 if highest is None else highest + 1

    def partitions(self, topic: str) -> int:
        """The topic's partition count, creating the topic on first use."""
        count = self._topics.get(topic)
        if count is None:
            count = self._create_topic(topic)
            self._topics[topic] = count
        return count

    def _create_topic(self, topic: str) -> int:
        # An existing topic keeps the count it was created with, so keys keep
        # their partitions even if the log is reopened with another setting.
        with write_transaction(self._conn, "event log") as conn:
            conn.execute("INSERT OR IGNORE INTO log_topics (topic, partitions) VALUES (?, ?)",
                         (topic, self._default_partitions))
            (count,) = conn.execute("SELECT partitions FROM log_topics WHERE topic = ?",
                                    (topic,)).fetchone()
        return count

    # -- consuming --------------------------------------------------------

    def consumer(self, topic: str, group: str,
                 reset: Literal["earliest", "latest"] = "earliest") -> "SqliteLogConsumer":
        if reset not in ("earliest", "latest"):
            raise ValueError("reset must be 'earliest' or 'latest'")
        return SqliteLogConsumer(self, topic, group, self._start_positions(topic, group, reset))

    def _start_positions(self, topic: str, group: str, reset: str) -> list[int]:
        count = self.partitions(topic)
        committed = self.committed(topic, group)
        return [committed[p] if p in committed
                else self._end(self._conn, topic, p) if reset == "latest"
                else 0
                for p in range(count)]

    def _read(self, topic: str, partition: int, position: int, limit: int) -> list[LogRecord]:
        rows = self._conn.execute(
            "SELECT log_offset, key, value, headers, timestamp_us FROM log_records "
            "WHERE topic = ? AND part = ? AND log_offset >= ? ORDER BY log_offset LIMIT ?",
            (topic, partition, position, limit)).fetchall()
        return [LogRecord(topic, partition, offset, key, value,
                          orjson.loads(headers) if headers else {}, from_micros(ts))
                for offset, key, value, headers, ts in rows]

    async def _commit(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self._writer, self._write_offsets, group, topic, next_offsets)

    def _write_offsets(self, group: str, topic: str, next_offsets: Mapping[int, int]) -> None:
        # max(): a late commit of an older batch never moves the group back,
        # so records already committed are not handed out again.
        with write_transaction(self._writer_connection(), "event log") as conn:
            conn.executemany(
                "INSERT INTO log_group_offsets (grp, topic, part, next_offset) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, topic, part) DO UPDATE "
                "SET next_offset = max(next_offset, excluded.next_offset)",
                [(group, topic, p, o) for p, o in next_offsets.items()])

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """The group's committed next offset per partition (for tools and tests)."""
        return dict(self._conn.execute(
            "SELECT part, next_offset FROM log_group_offsets WHERE grp = ? AND topic = ?",
            (group, topic)).fetchall())

    def _wakeup(self, topic: str) -> asyncio.Event:
        self._peers.listen()
        event = self._wakeups.get(topic)
        if event is None:
            event = self._wakeups[topic] = asyncio.Event()
        return event

    def _wake(self, topic: str) -> None:
        self._wake_here(topic)
        self._peers.notify(topic)

    def _wake_here(self, topic: str) -> None:
        event = self._wakeups.pop(topic, None)
        if event is not None:
            event.set()

    # -- housekeeping -----------------------------------------------------

    async def apply_retention(self, max_age: timedelta = DEFAULT_RETENTION,
                              now: datetime | None = None) -> int:
        """Delete records that every group has committed and that are older
        than `max_age`; return how many were deleted.

        Only groups that have committed on a topic hold its records back; a
        partition such a group never committed counts as not consumed at all.
        Each partition's newest record stays, as the mark of where it ends.
        """
        cutoff = to_micros((now or utc_now()) - max_age)
        deleted = 0
        for topic, count, floors in self._retention_floors():
            for partition in range(count):
                # Keep the newest record: the next offset is derived from it.
                floor = min(floors.get(partition, 0), self._end(self._conn, topic, partition) - 1)
                deleted += await self._delete_before(topic, partition, floor, cutoff)
        return deleted

    def _retention_floors(self) -> list[tuple[str, int, dict[int, int]]]:
        """Per topic that some group committed on: its partition count and, per
        partition, the lowest offset any of those groups still needs."""
        floors = []
        for topic, count in self._conn.execute(
                "SELECT topic, partitions FROM log_topics WHERE topic IN "
                "(SELECT DISTINCT topic FROM log_group_offsets)").fetchall():
            groups = self._conn.execute(
                "SELECT count(DISTINCT grp) FROM log_group_offsets WHERE topic = ?",
                (topic,)).fetchone()[0]
            # A partition only counts as consumed where every group committed it.
            rows = self._conn.execute(
                "SELECT part, min(next_offset), count(*) FROM log_group_offsets "
                "WHERE topic = ? GROUP BY part", (topic,)).fetchall()
            floors.append((topic, count, {part: low for part, low, committed in rows
                                          if committed == groups}))
        return floors

    async def _delete_before(self, topic: str, partition: int, floor: int, cutoff: int) -> int:
        (low,) = self._conn.execute(
            "SELECT min(log_offset) FROM log_records WHERE topic = ? AND part = ?",
            (topic, partition)).fetchone()
        deleted = 0
        while low is not None and low < floor:
            high = min(floor, low + RETENTION_SLICE)
            with write_transaction(self._conn, "event log") as conn:
                count = conn.execute(
                    "DELETE FROM log_records WHERE topic = ? AND part = ? "
                    "AND log_offset < ? AND timestamp_us < ?",
                    (topic, partition, high, cutoff)).rowcount
            if count == 0:
                break  # the rest is younger than the cutoff
            deleted += count
            low = high
            await asyncio.sleep(0)
        return deleted

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for event in self._wakeups.values():
            event.set()
        self._wakeups.clear()
        self._peers.close()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=False)
        self._conn.close()

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    @property
    def closed(self) -> bool:
        return self._closed


class SqliteLogConsumer:
    """ports.LogConsumer: the only member of its group in this process; it
    reads every partition of the topic."""

    def __init__(self, log: SqliteEventLog, topic: str, group: str, positions: list[int]):
        self._log, self._topic, self._group = log, topic, group
        self._positions = positions
        # Which partition a poll reads first rotates, so one partition with a
        # backlog cannot starve the others.
        self._first = 0
        self._closed = False

    @property
    def positions(self) -> list[int]:
        """The next offset this consumer will read, per partition."""
        return list(self._positions)

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[LogRecord]:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while not self._closed and not self._log.closed:
            # Take the wake-up before reading, so a publish that lands between
            # the read and the wait still wakes us.
            wakeup = self._log._wakeup(self._topic)
            records = self._read(max_records)
            if records:
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(remaining, FALLBACK_POLL_INTERVAL)):
                    await wakeup.wait()
            except TimeoutError:
                pass
        return []

    def _read(self, max_records: int) -> list[LogRecord]:
        count = len(self._positions)
        records: list[LogRecord] = []
        for step in range(count):
            partition = (self._first + step) % count
            batch = self._log._read(self._topic, partition, self._positions[partition],
                                    max_records - len(records))
            if batch:
                self._positions[partition] = batch[-1].offset + 1
                records.extend(batch)
                if len(records) >= max_records:
                    break
        self._first = (self._first + 1) % count
        return records

    async def commit(self, records: Sequence[LogRecord]) -> None:
        next_offsets = offsets_after(records, self._topic)
        if next_offsets:
            await self._log._commit(self._group, self._topic, next_offsets)

    async def lag(self) -> dict[int, int]:
        """Records not yet read, per partition: end offset minus position (metrics)."""
        if self._closed or self._log.closed:
            return {}
        conn = self._log._conn
        return {p: max(self._log._end(conn, self._topic, p) - position, 0)
                for p, position in enumerate(self._positions)}

    async def close(self) -> None:
        self._closed = True
