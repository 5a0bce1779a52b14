"""The embedded stand-in for ClickHouse: ClickHouse itself, in-process (chDB).

The client is clickhouse-connect's, over its chdb interface, and the SQL is
plain ClickHouse SQL: pointing the same code at a ClickHouse server over HTTP
is a change of `get_client` arguments, not of queries.

`trading_trades` is a ReplacingMergeTree whose sorting key (symbol, userId,
executionTimestamp, orderId) is the identity of a trade; a replayed
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

chDB calls block for milliseconds and the engine is not meant to be driven
from several threads at once, so every call runs on one dedicated thread; the
event loop only awaits it. Only one process may open a chDB data directory.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from ...domain.model import Execution, ExecutionStatus
from ...domain.money import CASH_QUANTUM
from ...ports import SymbolVolume

_T = TypeVar("_T")

TABLE = "trading_trades"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
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

# ClickHouse refuses an insert that touches more than 100 partitions (days);
# a batch spanning longer (a replay of old trades) goes in several inserts.
MAX_DAYS_PER_INSERT = 100

COLUMNS = ["orderId", "userId", "symbol", "side", "status", "quantity", "executionPrice",
           "executionTimestamp", "failureReason", "orderTimestamp"]

# Notional is summed per trade after rounding each to cents half-even, as the
# portfolio's cash moved (money.trade_value). Widening to Decimal128 first
# keeps quantity x price (up to 1e13 with 10 decimals) from overflowing.
VOLUME_QUERY = """
SELECT
    symbol,
    sum(quantity) AS volume,
    count() AS trade_count,
    sum(roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)) AS notional
FROM trading_trades FINAL
WHERE status = {executed:String}
  AND executionTimestamp >= {since:DateTime64(6, 'UTC')}
  AND executionTimestamp < {until:DateTime64(6, 'UTC')}
  SYMBOL_FILTER
GROUP BY symbol
ORDER BY symbol
"""


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


def volume_sql(symbol: str | None) -> str:
    return VOLUME_QUERY.replace(
        "SYMBOL_FILTER", "AND symbol = {symbol:String}" if symbol is not None else "")


class ChdbAnalytics:
    """ports.Analytics on chDB; see the module docstring."""

    def __init__(self, path: str | Path):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chdb")
        # Opening the engine takes most of a second the first time; it runs on
        # the chDB thread so constructing the adapter never blocks the loop.
        # Later calls queue behind it on the same thread.
        self._client: Future[Client] = self._thread.submit(self._open, str(path))
        self._closed = False

    @staticmethod
    def _open(path: str) -> Client:
        Path(path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=path)
        client.command(CREATE_TABLE)
        return client

    async def _run(self, work: Callable[[Client], _T]) -> _T:
        if self._closed:
            raise RuntimeError("analytics store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: work(self._client.result()))

    async def record(self, executions: Sequence[Execution]) -> None:
        """One insert per batch (ClickHouse inserts are cheap per row, costly per
        call), or one per 100 days of it."""
        if not executions:
            return
        chunks = [[_row(e) for e in chunk] for chunk in split_by_days(executions)]

        def insert(client: Client) -> None:
            for rows in chunks:
                client.insert(TABLE, rows, column_names=COLUMNS)

        await self._run(insert)

    async def volume(self, since: datetime, until: datetime,
                     symbol: str | None = None) -> list[SymbolVolume]:
        parameters: dict[str, Any] = {"executed": ExecutionStatus.EXECUTED.value,
                                      "since": since.astimezone(timezone.utc),
                                      "until": until.astimezone(timezone.utc)}
        if symbol is not None:
            parameters["symbol"] = symbol
        sql = volume_sql(symbol)
        result = await self._run(lambda client: client.query(sql, parameters=parameters))
        return [SymbolVolume(name, Decimal(volume), int(count),
                             Decimal(notional).quantize(CASH_QUANTUM))
                for name, volume, count, notional in result.result_rows]

    async def optimize(self) -> None:
        """Merge parts now (and with them, duplicates); for tools and benchmarks."""
        await self._run(lambda client: client.command(f"OPTIMIZE TABLE {TABLE} FINAL"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut(client_future: Future[Client]) -> None:
            if client_future.exception() is None:
                client_future.result().close()

        await asyncio.get_running_loop().run_in_executor(self._thread, shut, self._client)
        self._thread.shutdown(wait=True)

