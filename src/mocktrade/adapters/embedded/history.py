"""The embedded stand-in for Elasticsearch: a user's trade history in SQLite.

The orderId is the document id, so indexing the same trade again (a replayed
trade_executed event) overwrites it with identical content. Searches are the
caller's trades newest first by (executionTimestamp, orderId), with a keyset
cursor: the page token is the sort key of the last trade shown, so a page
costs the same however deep it is, and trades indexed meanwhile never shift
later pages.

Every index leads with userId and carries the sort key plus the filter
columns, so a search (and its totalCount) reads only the caller's slice of one
index and never the table rows it skips. Unlike the other embedded adapters,
calls run on a small thread pool: a count over a very active user's trades can
take milliseconds, and the event loop serves price pushes meanwhile. sqlite3
releases the GIL while SQLite works.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ...domain.model import Execution, ExecutionStatus, Side
from ...domain.money import fmt
from ...ports import TradePage, TradeQuery
from ..page_tokens import decode_page_token, encode_page_token
from ._sqlite import connect, dec, from_micros, to_micros, write_transaction

_T = TypeVar("_T")

READER_THREADS = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    orderId TEXT PRIMARY KEY,
    userId TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    status TEXT NOT NULL,
    quantity TEXT NOT NULL,
    executionPrice TEXT,
    executedAtUs INTEGER NOT NULL,
    failureReason TEXT,
    orderedAtUs INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trades_by_user
    ON trades (userId, executedAtUs, orderId, symbol, side, status);
CREATE INDEX IF NOT EXISTS trades_by_user_symbol
    ON trades (userId, symbol, executedAtUs, orderId, side, status);
CREATE INDEX IF NOT EXISTS trades_by_user_status
    ON trades (userId, status, executedAtUs, orderId, symbol, side);
"""

_COLUMNS = ("orderId, userId, symbol, quantity, side, status, executionPrice, executedAtUs, "
            "failureReason, orderedAtUs")


def _row(e: Execution) -> tuple[Any, ...]:
    return (e.order_id, e.user_id, e.symbol, fmt(e.quantity), e.side.value, e.status.value,
            fmt(e.execution_price) if e.execution_price is not None else None,
            to_micros(e.execution_timestamp), e.failure_reason,
            to_micros(e.order_timestamp) if e.order_timestamp else None)


def _execution(row: tuple[Any, ...]) -> Execution:
    order_id, user_id, symbol, quantity, side, status, price, executed_at, reason, ordered_at = row
    return Execution(order_id, user_id, symbol, Decimal(quantity), Side(side),
                     ExecutionStatus(status), dec(price), from_micros(executed_at), reason,
                     from_micros(ordered_at) if ordered_at is not None else None)


def _filters(query: TradeQuery) -> tuple[list[str], list[Any]]:
    clauses, params = ["userId = ?"], [query.user_id]
    for column, value in (("symbol", query.symbol),
                          ("status", query.status.value if query.status else None),
                          ("side", query.side.value if query.side else None)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.start is not None:
        clauses.append("executedAtUs >= ?")
        params.append(to_micros(query.start))
    if query.end is not None:
        clauses.append("executedAtUs < ?")
        params.append(to_micros(query.end))
    return clauses, params


class SqliteTradeHistory:
    """ports.TradeHistory over one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, reader_threads: int = READER_THREADS):
        self._path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(reader_threads, thread_name_prefix="trade-history")
        schema = connect(self._path)
        try:
            schema.executescript(_SCHEMA)
        finally:
            schema.close()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._path)
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: work(self._conn()))

    async def index(self, executions: Sequence[Execution]) -> None:
        if not executions:
            return
        rows = [_row(e) for e in executions]

        def upsert(conn: sqlite3.Connection) -> None:
            with write_transaction(conn, "trade history"):
                conn.executemany(f"INSERT OR REPLACE INTO trades ({_COLUMNS}) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

        await self._run(upsert)

    async def search(self, query: TradeQuery) -> TradePage:
        if query.limit < 1:
            raise ValueError("limit must be at least 1")
        cursor = decode_page_token(query.page_token) if query.page_token else None
        return await self._run(lambda conn: self._search(conn, query, cursor))

    @staticmethod
    def _search(conn: sqlite3.Connection, query: TradeQuery,
                cursor: tuple[int, str] | None) -> TradePage:
        clauses, params = _filters(query)
        where = " AND ".join(clauses)
        page_where, page_params = where, list(params)
        if cursor is not None:
            page_where += " AND (executedAtUs, orderId) < (?, ?)"
            page_params.extend(cursor)
        # One read transaction, so the count and the page see the same data.
        conn.execute("BEGIN")
        try:
            (total,) = conn.execute(f"SELECT count(*) FROM trades WHERE {where}", params).fetchone()
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM trades WHERE {page_where} "
                "ORDER BY executedAtUs DESC, orderId DESC LIMIT ?",
                [*page_params, query.limit + 1]).fetchall()
        finally:
            conn.execute("COMMIT")
        more = len(rows) > query.limit
        trades = [_execution(row) for row in rows[:query.limit]]
        token = None
        if more:
            last = rows[query.limit - 1]
            token = encode_page_token(last[7], last[0])
        return TradePage(trades, total, token)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._connections_lock:
            if self._connections:
                # Refresh the planner's statistics, bounded so closing stays quick;
                # they let SQLite pick the most selective index per filter.
                self._connections[0].execute("PRAGMA analysis_limit = 1000")
                self._connections[0].execute("PRAGMA optimize")
            for conn in self._connections:
                conn.close()
            self._connections.clear()
