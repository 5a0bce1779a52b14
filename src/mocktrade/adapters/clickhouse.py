"""ports.Analytics on ClickHouse: a server over HTTP, or chDB in-process.

One class, `ClickHouseAnalytics`, holds everything that is ClickHouse: the
table DDL, the batched insert and the volume SQL. It runs over a
clickhouse-connect `Client`, and only how that client is made differs:

- `ClickHouseAnalytics.from_url("http://[user:password@]host:8123/db")`
  (or https://): a ClickHouse server over its HTTP interface; the database
  is created if missing, every name is qualified with it;
- `ClickHouseAnalytics.from_url("chdb:///path/to/dir")`, or the embedded
  `ChdbAnalytics(path)`: the same engine in-process (chDB), over
  clickhouse-connect's chdb interface.

The SQL is plain ClickHouse SQL (MergeTree family, server-side query
parameters, FINAL, Decimal and DateTime64 types), nothing chDB-specific, so
the server path runs the very statements the chDB path runs. NOT TESTED
AGAINST A SERVER: no ClickHouse server recent enough can be installed from
the registries this project builds from (Debian's is 18.16, which lacks
DateTime64; see infra/README.md), so only the chDB path has passed the
contract suite. To run the suite against a server, set
MOCKTRADE_CLICKHOUSE_URL=http://host:8123/db (tests/contract/conftest.py then
adds it to the analytics backends).

`{prefix}trading_trades` is a ReplacingMergeTree whose sorting key (symbol,
userId, executionTimestamp, orderId) is the identity of a trade; a replayed
trade_executed event carries the same ledger entry, so its copy is merged
away, and queries read with FINAL so a copy not merged yet is not counted
twice either (FINAL measured about twice as fast as a GROUP BY orderId dedupe
on 1M rows; see bench/adapters.py). Copies share their executionTimestamp, so
they always land in the same partition, the only place where merges and
FINAL look for them.

Partitions are days: every query asks for a recent window (1h, 24h, 7d), and
the sorting key leads with symbol, not time, so pruning whole days is what
keeps a query from reading the full table (2-4x faster than monthly
partitions on 1M rows once parts are merged). That is 365 partitions a year,
within ClickHouse's advice of under 1000-10000; a deployment keeping years of
trades would add a TTL or coarser partitions.

clickhouse-connect's client is synchronous (its async client needs aiohttp,
which the project does not carry), so calls run on thread pools and the event
loop only awaits them. Writes (the persistence batches) and reads (queries)
have a pool each, so a query never queues behind a batch: with continuous
inserts, a shared one-thread pool put every query behind an insert (7d p99
443 ms mixed, docs/benchmarks.md). A writes pool of one thread keeps batches
in order; reads get a few threads on a server (the HTTP client pools
connections; sessions are off so concurrent queries never collide on a
session lock) and one on chDB, each pool there with its own connection (chDB
runs queries of several connections in parallel; only one process may open
a chDB directory, and its connections share it). chDB's connections carry
thread limits (CHDB_WRITE_SETTINGS, CHDB_READ_SETTINGS): an insert or a
recompute uses one thread, so on a 2-core machine the other core is left to
queries. Opening starts at construction, on the writes pool, so constructing
the adapter never blocks the loop; if it fails (server down), the next call
tries again. A server that cannot be reached raises
ports.DependencyUnavailable("clickhouse", ...).
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from ..domain.bars import Bar
from ..domain.model import Execution, ExecutionStatus, PriceTick
from ..domain.money import CASH_QUANTUM
from ..ports import DependencyUnavailable, SymbolVolume
from . import clickhouse_bars, clickhouse_volume

_T = TypeVar("_T")

DEPENDENCY = "clickhouse"
TABLE = "trading_trades"
SERVER_READ_THREADS = 3

# Per-connection query settings of chDB. Writes: one thread per insert or
# recompute. Reads: two (this machine's cores); a query of the open hour
# through FINAL is the one that gains from a second thread.
CHDB_WRITE_SETTINGS = {"max_threads": 1, "max_insert_threads": 1}
CHDB_READ_SETTINGS = {"max_threads": 2}

_VALID_NAME = re.compile(r"^[A-Za-z0-9_]*$")

CREATE_TABLE_TEMPLATE = """
CREATE TABLE IF NOT EXISTS {table} (
    orderId String,
    userId String,
    symbol LowCardinality(String),
    side LowCardinality(String),
    status LowCardinality(String),
    quantity Decimal(18, 6),
    executionPrice Nullable(Decimal(18, 4)),
    executionTimestamp DateTime64(6, 'UTC'),
    failureReason Nullable(String),
    orderTimestamp Nullable(DateTime64(6, 'UTC'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(executionTimestamp)
ORDER BY (symbol, userId, executionTimestamp, orderId)
"""

# Outdated parts (merged away) are removed in the background every ~30 s; at
# 100 or more at once (the default threshold) ClickHouse removes them on a
# pool of up to 128 threads, and in chDB those threads then live in our
# process for good, each keeping /proc/self/task/<tid>/{stat,io,schedstat}
# open once it has run a query (measured: 26 -> 150 threads about 30 s after
# the first inserts, fds growing with them). Our parts are small and a
# busy table outdates a few per second, so one thread removes them.
PART_REMOVAL_SETTING = "concurrent_part_removal_threshold = 1000000000"

# ClickHouse refuses an insert that touches more than 100 partitions (days);
# a batch spanning longer (a replay of old trades) goes in several inserts.
MAX_DAYS_PER_INSERT = 100

COLUMNS = ["orderId", "userId", "symbol", "side", "status", "quantity", "executionPrice",
           "executionTimestamp", "failureReason", "orderTimestamp"]

# Notional is summed per trade after rounding each to cents half-even, as the
# portfolio's cash moved (money.trade_value). Widening to Decimal128 first
# keeps quantity x price (up to 1e13 with 10 decimals) from overflowing.
VOLUME_QUERY_TEMPLATE = """
SELECT
    symbol,
    sum(quantity) AS volume,
    count() AS trade_count,
    sum(roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)) AS notional
FROM {table} FINAL
WHERE status = {{executed:String}}
  AND executionTimestamp >= {{since:DateTime64(6, 'UTC')}}
  AND executionTimestamp < {{until:DateTime64(6, 'UTC')}}
  SYMBOL_FILTER
GROUP BY symbol
ORDER BY symbol
"""

# The statements for the unprefixed table in the default database.
CREATE_TABLE = CREATE_TABLE_TEMPLATE.format(table=TABLE)
VOLUME_QUERY = VOLUME_QUERY_TEMPLATE.format(table=TABLE)


def _row(e: Execution) -> list[Any]:
    return [e.order_id, e.user_id, e.symbol, e.side.value, e.status.value, e.quantity,
            e.execution_price, e.execution_timestamp.astimezone(timezone.utc),
            e.failure_reason,
            e.order_timestamp.astimezone(timezone.utc) if e.order_timestamp else None]


def split_by_days(executions: Sequence[Execution],
                  max_days: int = MAX_DAYS_PER_INSERT) -> list[list[Execution]]:
    """The batch in time order, cut so that no piece spans more than `max_days` UTC days."""
    chunks: list[list[Execution]] = []
    days: set[date] = set()
    for e in sorted(executions, key=lambda e: e.execution_timestamp):
        day = e.execution_timestamp.astimezone(timezone.utc).date()
        if not chunks or (day not in days and len(days) == max_days):
            chunks.append([])
            days = set()
        days.add(day)
        chunks[-1].append(e)
    return chunks


def volume_sql(symbol: str | None, table: str = TABLE) -> str:
    """The volume query over `table` (an already quoted, possibly qualified name)."""
    return VOLUME_QUERY_TEMPLATE.format(table=table).replace(
        "SYMBOL_FILTER", "AND symbol = {symbol:String}" if symbol is not None else "")


# -- making clients ------------------------------------------------------------

# A full disk is an outage of the store, not a bug in the statement: ClickHouse
# (and chDB in-process, as a RuntimeError) says NOT_ENOUGH_SPACE (code 243)
# when it cannot reserve room for a part, or passes on the OS's ENOSPC. The
# job runner retries the batch until space returns; nothing is dropped.
_OUT_OF_SPACE = ("NOT_ENOUGH_SPACE", "No space left on device", "Code: 243.")


def out_of_space(exc: BaseException) -> bool:
    return any(sign in str(exc) for sign in _OUT_OF_SPACE)


def open_chdb_client(path: str | Path, settings: dict[str, Any] | None = None) -> Client:
    """clickhouse-connect's client over chDB, on (and creating) a data directory;
    `settings` are query settings of this connection only."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(interface="chdb", path=str(path),
                                         settings=dict(settings or {}))


def chdb_openers(path: str | Path) -> tuple[Callable[[], Client], Callable[[], Client]]:
    """Openers of the writes and the reads connections to one chDB directory."""
    return (lambda: open_chdb_client(path, CHDB_WRITE_SETTINGS),
            lambda: open_chdb_client(path, CHDB_READ_SETTINGS))


def open_server_client(url: str) -> Client:
    """A client of a ClickHouse server: http(s)://[user:password@]host[:port][/db][?settings].

    The database in the path (if any) is not made the client's default; the
    adapter qualifies its names with it instead (see `database_of`).
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"not a ClickHouse HTTP URL: {url!r}")
    secure = parsed.scheme == "https"
    options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    return clickhouse_connect.get_client(
        host=parsed.hostname or "localhost", port=parsed.port or (8443 if secure else 8123),
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else "",
        secure=secure, autogenerate_session_id=False, **options)


def database_of(url: str) -> str:
    """The database named by a server URL's path ('' for the user's default)."""
    name = unquote(urlparse(url).path.strip("/"))
    if "/" in name:
        raise ValueError(f"the URL's path names more than a database: {url!r}")
    return name


class ClickHouseAnalytics:
    """ports.Analytics on ClickHouse; see the module docstring.

    client: a clickhouse-connect Client, or a function that opens one (run on
        the adapter's own thread pool, so a slow open never blocks the loop).
    read_client: a function opening the client queries use, if not `client`;
        opened after `client`'s tables exist. Required for chDB (queries and
        batches run at once, and a chDB connection serves one at a time):
        use `chdb_openers`.
    table_prefix: put before the table name (letters, digits, '_').
    database: qualify the table with this database, created if missing
        ('' = the client's default database).
    read_threads: how many queries may run at once (1 for chDB).
    clock: now, in UTC; which hours are closed, so sealed (clickhouse_volume).
    """

    def __init__(self, client: Client | Callable[[], Client], *,
                 read_client: Callable[[], Client] | None = None, table_prefix: str = "",
                 database: str = "", read_threads: int = 1,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        if not _VALID_NAME.match(table_prefix):
            raise ValueError(f"table_prefix {table_prefix!r}: use letters, digits and '_'")
        self.table_name = f"{table_prefix}{TABLE}"
        self.database = database
        self.table = self._qualified(self.table_name)
        # Bars: raw ticks and minute bars (see clickhouse_bars).
        self.ticks_table_name = f"{table_prefix}{clickhouse_bars.TICKS_TABLE}"
        self.ticks_table = self._qualified(self.ticks_table_name)
        self.bars_table = self._qualified(f"{table_prefix}{clickhouse_bars.BARS_TABLE}")
        # Executed volume per (symbol, hour), for long windows (see clickhouse_volume).
        self.volume_table = self._qualified(f"{table_prefix}{clickhouse_volume.VOLUME_TABLE}")
        self.sealed_table = self._qualified(f"{table_prefix}{clickhouse_volume.SEALED_TABLE}")
        self._opener: Callable[[], Client] = (
            (lambda: client) if isinstance(client, Client) else client)
        self._read_opener = read_client
        self._clock = clock
        self._client: Client | None = None
        self._read_client: Client | None = None
        self._open_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-writes")
        self._reads = ThreadPoolExecutor(read_threads, thread_name_prefix="clickhouse-reads")
        self._closed = False
        # Start opening now; a failure here is retried by the first call.
        self._pool.submit(self._client_or_none)

    def _qualified(self, name: str) -> str:
        return (f"{quote_identifier(self.database)}.{quote_identifier(name)}"
                if self.database else quote_identifier(name))

    @classmethod
    def from_url(cls, url: str, *, table_prefix: str = "") -> "ClickHouseAnalytics":
        """From a MOCKTRADE_CLICKHOUSE_URL: http(s)://host:8123/db, or chdb:///path."""
        parsed = urlparse(url)
        if parsed.scheme == "chdb":
            if parsed.netloc or not parsed.path:
                raise ValueError(f"a chDB URL names an absolute directory: chdb:///path, not {url!r}")
            path = unquote(parsed.path)
            writes, reads = chdb_openers(path)
            return cls(writes, read_client=reads, table_prefix=table_prefix)
        if parsed.scheme in ("http", "https"):
            return cls(lambda: open_server_client(url), table_prefix=table_prefix,
                       database=database_of(url), read_threads=SERVER_READ_THREADS)
        raise ValueError(f"MOCKTRADE_CLICKHOUSE_URL must be http(s)://host:port/db or "
                         f"chdb:///path, not {url!r}")

    # -- the client ----------------------------------------------------------

    def _open(self) -> Client:
        client = self._opener()
        try:
            if self.database:
                client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")
            client.command(CREATE_TABLE_TEMPLATE.format(table=self.table))
            for statement in clickhouse_bars.create_statements(self.ticks_table, self.bars_table):
                client.command(statement)
            for statement in clickhouse_volume.create_statements(self.volume_table,
                                                                 self.sealed_table):
                client.command(statement)
            for table in (self.table, self.ticks_table, self.bars_table, self.volume_table,
                          self.sealed_table):  # also tables made before the setting
                client.command(f"ALTER TABLE {table} MODIFY SETTING {PART_REMOVAL_SETTING}")
            # The hours closed since the last run (on a new table: every trade's).
            clickhouse_volume.seal(client, self._clock(), trades_table=self.table,
                                   volume_table=self.volume_table, sealed_table=self.sealed_table)
        except BaseException:
            client.close()
            raise
        return client

    def _get_client(self) -> Client:
        """The open client, opening it first if needed (on a pool thread)."""
        if self._client is None:
            with self._open_lock:
                if self._client is None:
                    self._client = self._open()
        return self._client

    def _get_read_client(self) -> Client:
        """The client of queries: the writes client, or its own once the tables exist."""
        client = self._get_client()
        if self._read_opener is None:
            return client
        if self._read_client is None:
            with self._open_lock:
                if self._read_client is None:
                    self._read_client = self._read_opener()
        return self._read_client

    def _client_or_none(self) -> Client | None:
        try:
            return self._get_client()
        except Exception:
            return None

    def _call(self, work: Callable[[Client], _T], get_client: Callable[[], Client]) -> _T:
        try:
            return work(get_client())
        except OperationalError as exc:
            raise DependencyUnavailable(DEPENDENCY, str(exc)) from exc
        except Exception as exc:
            if out_of_space(exc):
                raise DependencyUnavailable(DEPENDENCY, str(exc).splitlines()[0]) from exc
            raise

    async def _run(self, work: Callable[[Client], _T]) -> _T:
        """On the writes pool (one thread: batches in order)."""
        if self._closed:
            raise RuntimeError("analytics store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._call, work, self._get_client)

    async def _read(self, work: Callable[[Client], _T]) -> _T:
        """On the reads pool, never queued behind a batch."""
        if self._closed:
            raise RuntimeError("analytics store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._reads, self._call, work, self._get_read_client)

    # -- the port ------------------------------------------------------------

    async def record(self, executions: Sequence[Execution]) -> None:
        """One insert per batch (ClickHouse inserts are cheap per row, costly per
        call), or one per 100 days of it."""
        if not executions:
            return
        chunks = [[_row(e) for e in chunk] for chunk in split_by_days(executions)]

        def insert(client: Client) -> None:
            for rows in chunks:
                client.insert(self.table_name, rows, column_names=COLUMNS,
                              database=self.database or None)
            clickhouse_volume.record(client, executions, self._clock(), trades_table=self.table,
                                     volume_table=self.volume_table,
                                     sealed_table=self.sealed_table)

        await self._run(insert)

    async def volume(self, since: datetime, until: datetime,
                     symbol: str | None = None) -> list[SymbolVolume]:
        rows = await self._read(lambda client: clickhouse_volume.query(
            client, since, until, symbol, trades_table=self.table, volume_table=self.volume_table,
            sealed_table=self.sealed_table))
        return [SymbolVolume(name, Decimal(volume), int(count),
                             Decimal(notional).quantize(CASH_QUANTUM))
                for name, volume, count, notional in rows]

    async def record_ticks(self, ticks: Sequence[PriceTick]) -> None:
        """Insert the ticks, then recompute the minute bars they touch from the
        deduplicated ticks (so a replayed tick never counts twice)."""
        if not ticks:
            return
        rows = clickhouse_bars.tick_rows(ticks)

        def insert(client: Client) -> None:
            client.insert(self.ticks_table_name, rows, column_names=clickhouse_bars.TICK_COLUMNS,
                          database=self.database or None)
            clickhouse_bars.recompute_minutes(client, ticks, ticks_table=self.ticks_table,
                                              bars_table=self.bars_table)

        await self._run(insert)

    async def bars(self, symbol: str, timeframe: str, since: datetime | None,
                   until: datetime, limit: int) -> list[Bar]:
        return await self._read(lambda client: clickhouse_bars.query_bars(
            client, symbol, timeframe, since, until, limit,
            bars_table=self.bars_table, trades_table=self.table))

    async def optimize(self) -> None:
        """Merge parts now (and with them, duplicates); for tools and benchmarks."""
        await self._run(lambda client: client.command(f"OPTIMIZE TABLE {self.table} FINAL"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            with self._open_lock:  # after an open still running on another thread
                for client in (self._read_client, self._client):
                    if client is not None:
                        client.close()
                self._client = self._read_client = None

        # Queries still running finish first; then the writes pool closes both.
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._reads.shutdown(wait=True))
        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)
