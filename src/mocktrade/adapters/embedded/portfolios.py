"""The embedded stand-in for DynamoDB: accounts, portfolios and the execution
ledger in one SQLite file.

`apply_execution` is the exactly-once step of the architecture: one write
transaction looks up the orderId in the ledger (a replay returns the stored
entry untouched), otherwise lets the domain rules decide against the current
portfolio and writes the new portfolio and the ledger entry together.

SQLite calls stay on the event-loop thread: each transaction is a handful of
indexed row operations (tens of microseconds), and because none spans an
`await`, coroutines of one process cannot interleave inside it. Other
processes (the accounts CLI) are serialised by BEGIN IMMEDIATE.

Decimals are stored as their canonical strings and times as ISO-8601 UTC, so
the file reads the same as the DynamoDB items and nothing is ever a float.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

import orjson

from ...domain import rules
from ...domain.events import format_time, parse_time
from ...domain.model import ZERO, Execution, ExecutionStatus, Order, Portfolio, Side
from ...domain.money import fmt, parse_cash
from ...ports import Account, AccountExists
from ._sqlite import connect, dec, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    userId TEXT PRIMARY KEY,
    startingCash TEXT NOT NULL,
    created TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS portfolios (
    userId TEXT PRIMARY KEY,
    cashBalance TEXT NOT NULL,
    holdings TEXT NOT NULL,
    costBasis TEXT NOT NULL,
    lastUpdatedTimestamp TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS execution_ledger (
    seq INTEGER PRIMARY KEY,
    orderId TEXT NOT NULL UNIQUE,
    userId TEXT NOT NULL,
    symbol TEXT NOT NULL,
    quantity TEXT NOT NULL,
    side TEXT NOT NULL,
    status TEXT NOT NULL,
    executionPrice TEXT,
    executionTimestamp TEXT NOT NULL,
    failureReason TEXT,
    orderTimestamp TEXT
);
CREATE INDEX IF NOT EXISTS execution_ledger_by_user ON execution_ledger (userId, seq);
"""

_LEDGER_COLUMNS = ("orderId, userId, symbol, quantity, side, status, executionPrice, "
                   "executionTimestamp, failureReason, orderTimestamp")


def _amounts_json(amounts: Mapping[str, Decimal]) -> str:
    return orjson.dumps({symbol: fmt(value) for symbol, value in amounts.items()}).decode()


def _amounts(text: str) -> dict[str, Decimal]:
    return {symbol: Decimal(value) for symbol, value in orjson.loads(text).items()}


def _portfolio(row: tuple[Any, ...]) -> Portfolio:
    user_id, cash, holdings, cost_basis, updated, version = row
    return Portfolio(user_id, Decimal(cash), _amounts(holdings), _amounts(cost_basis),
                     parse_time(updated, "lastUpdatedTimestamp"), version)


def _execution(row: tuple[Any, ...]) -> Execution:
    (order_id, user_id, symbol, quantity, side, status, price, executed_at, reason,
     ordered_at) = row
    return Execution(order_id, user_id, symbol, Decimal(quantity), Side(side),
                     ExecutionStatus(status), dec(price),
                     parse_time(executed_at, "executionTimestamp"), reason,
                     parse_time(ordered_at, "orderTimestamp") if ordered_at else None)


def _ledger_row(e: Execution) -> tuple[Any, ...]:
    return (e.order_id, e.user_id, e.symbol, fmt(e.quantity), e.side.value, e.status.value,
            fmt(e.execution_price) if e.execution_price is not None else None,
            format_time(e.execution_timestamp), e.failure_reason,
            format_time(e.order_timestamp) if e.order_timestamp else None)


class SqlitePortfolioStore:
    """ports.PortfolioStore over one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path):
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)

    async def create_account(self, user_id: str, cash: Decimal, now: datetime) -> Portfolio:
        cash = parse_cash(cash, "starting cash")
        if cash < ZERO:
            raise ValueError("starting cash must not be negative")
        portfolio = Portfolio(user_id, cash, {}, {}, now, 0)
        try:
            with write_transaction(self._conn, "portfolio store") as conn:
                conn.execute("INSERT INTO accounts (userId, startingCash, created) VALUES (?, ?, ?)",
                             (user_id, fmt(cash), format_time(now)))
                self._insert_portfolio(conn, portfolio)
        except sqlite3.IntegrityError:
            raise AccountExists(f"account {user_id} already exists") from None
        return portfolio

    async def get(self, user_id: str) -> Portfolio | None:
        return self._read_portfolio(self._conn, user_id)

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        with write_transaction(self._conn, "portfolio store") as conn:
            recorded = self._read_execution(conn, order.order_id)
            if recorded is not None:
                return recorded  # a replay: the first outcome stands
            portfolio = self._read_portfolio(conn, order.user_id)
            if portfolio is None:
                execution = Execution(order.order_id, order.user_id, order.symbol, order.quantity,
                                      order.side, ExecutionStatus.FAILED_OTHER, None, now,
                                      f"unknown user {order.user_id}", order.order_timestamp)
            else:
                outcome = rules.execute(order, portfolio, price, now)
                execution = outcome.execution
                # A failed order leaves the portfolio as it was, version included.
                if outcome.portfolio is not portfolio:
                    self._update_portfolio(conn, outcome.portfolio, portfolio.version)
            conn.execute(f"INSERT INTO execution_ledger ({_LEDGER_COLUMNS}) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _ledger_row(execution))
        return execution

    async def execution(self, order_id: str) -> Execution | None:
        return self._read_execution(self._conn, order_id)

    async def ledger(self, user_id: str) -> list[Execution]:
        rows = self._conn.execute(
            f"SELECT {_LEDGER_COLUMNS} FROM execution_ledger WHERE userId = ? ORDER BY seq",
            (user_id,)).fetchall()
        return [_execution(row) for row in rows]

    async def accounts(self) -> list[Account]:
        rows = self._conn.execute(
            "SELECT userId, startingCash, created FROM accounts ORDER BY userId").fetchall()
        return [Account(user_id, Decimal(cash), parse_time(created, "created"))
                for user_id, cash, created in rows]

    async def close(self) -> None:
        self._conn.close()

    # -- rows ---------------------------------------------------------------

    @staticmethod
    def _read_portfolio(conn: sqlite3.Connection, user_id: str) -> Portfolio | None:
        row = conn.execute(
            "SELECT userId, cashBalance, holdings, costBasis, lastUpdatedTimestamp, version "
            "FROM portfolios WHERE userId = ?", (user_id,)).fetchone()
        return None if row is None else _portfolio(row)

    @staticmethod
    def _read_execution(conn: sqlite3.Connection, order_id: str) -> Execution | None:
        row = conn.execute(f"SELECT {_LEDGER_COLUMNS} FROM execution_ledger WHERE orderId = ?",
                           (order_id,)).fetchone()
        return None if row is None else _execution(row)

    @staticmethod
    def _insert_portfolio(conn: sqlite3.Connection, p: Portfolio) -> None:
        conn.execute(
            "INSERT INTO portfolios (userId, cashBalance, holdings, costBasis, "
            "lastUpdatedTimestamp, version) VALUES (?, ?, ?, ?, ?, ?)",
            (p.user_id, fmt(p.cash), _amounts_json(p.holdings), _amounts_json(p.cost_basis),
             format_time(p.last_updated), p.version))

    @staticmethod
    def _update_portfolio(conn: sqlite3.Connection, p: Portfolio, expected_version: int) -> None:
        # The version condition mirrors DynamoDB's conditional write; under
        # BEGIN IMMEDIATE it always holds, so a miss means a broken invariant.
        updated = conn.execute(
            "UPDATE portfolios SET cashBalance = ?, holdings = ?, costBasis = ?, "
            "lastUpdatedTimestamp = ?, version = ? WHERE userId = ? AND version = ?",
            (fmt(p.cash), _amounts_json(p.holdings), _amounts_json(p.cost_basis),
             format_time(p.last_updated), p.version, p.user_id, expected_version)).rowcount
        if updated != 1:
            raise RuntimeError(f"portfolio {p.user_id} changed during apply_execution")
