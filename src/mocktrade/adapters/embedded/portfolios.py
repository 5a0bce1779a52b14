"""The embedded stand-in for DynamoDB: accounts, portfolios, order records and
the execution ledger in one SQLite file.

`apply` is the exactly-once step of the architecture: one write transaction
reads what the instruction needs (the portfolio, the order's record, for a
reset the open orders), lets domain.lifecycle decide, and writes the new
portfolio, the changed order records and any ledger entries together. An
orderId placed before, or a resetId seen before, is a replay: nothing
changes and the stored record is handed back for re-emission.

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
from typing import Any, Mapping, Sequence

import orjson

from ...domain import lifecycle
from ...domain.events import decode_order_record, format_time, order_record, parse_time
from ...domain.lifecycle import (AccountReset, Instruction, OrderState, PlaceOrder,
                                 ResetAccount, Step, Transition)
from ...domain.model import ZERO, Execution, ExecutionStatus, Order, Portfolio, Side
from ...domain.money import fmt, parse_cash
from ...ports import Account, AccountExists, Application, OrderPage, OrderQuery
from ._sqlite import connect, dec, to_micros, write_transaction
from ..page_tokens import decode_page_token, order_page

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    userId TEXT PRIMARY KEY,
    startingCash TEXT NOT NULL,
    created TEXT NOT NULL,
    passwordHash TEXT
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
CREATE TABLE IF NOT EXISTS orders (
    orderId TEXT PRIMARY KEY,
    userId TEXT NOT NULL,
    clientOrderId TEXT,
    symbol TEXT NOT NULL,
    isOpen INTEGER NOT NULL,
    orderedAtUs INTEGER NOT NULL,
    lastSeq INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (userId, orderedAtUs, orderId);
CREATE INDEX IF NOT EXISTS orders_by_user_seq ON orders (userId, lastSeq);
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_client_id ON orders (userId, clientOrderId)
    WHERE clientOrderId IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_open ON orders (isOpen) WHERE isOpen = 1;
CREATE TABLE IF NOT EXISTS account_resets (
    resetId TEXT PRIMARY KEY,
    userId TEXT NOT NULL,
    cash TEXT NOT NULL,
    resetAt TEXT NOT NULL,
    ledgerLength INTEGER NOT NULL,
    canceledOrders TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS account_resets_by_user ON account_resets (userId, resetAt);
"""

# Columns added to `portfolios` after its first release; older files gain them.
_PORTFOLIO_ADDITIONS = (("reservedCash", "TEXT NOT NULL DEFAULT '0.00'"),
                        ("reservedShares", "TEXT NOT NULL DEFAULT '{}'"),
                        ("orderSeq", "INTEGER NOT NULL DEFAULT 0"))
_PORTFOLIO_COLUMNS = ("userId, cashBalance, holdings, costBasis, lastUpdatedTimestamp, version, "
                      "reservedCash, reservedShares, orderSeq")

_LEDGER_COLUMNS = ("orderId, userId, symbol, quantity, side, status, executionPrice, "
                   "executionTimestamp, failureReason, orderTimestamp")


def _amounts_json(amounts: Mapping[str, Decimal]) -> str:
    return orjson.dumps({symbol: fmt(value) for symbol, value in amounts.items()}).decode()


def _amounts(text: str) -> dict[str, Decimal]:
    return {symbol: Decimal(value) for symbol, value in orjson.loads(text).items()}


def _portfolio(row: tuple[Any, ...]) -> Portfolio:
    user_id, cash, holdings, cost_basis, updated, version, reserved, reserved_shares, seq = row
    return Portfolio(user_id, Decimal(cash), _amounts(holdings), _amounts(cost_basis),
                     parse_time(updated, "lastUpdatedTimestamp"), version, Decimal(reserved),
                     _amounts(reserved_shares), seq)


def _order_state(text: str) -> OrderState:
    return decode_order_record(orjson.loads(text))


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
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(portfolios)")}
        for column, definition in _PORTFOLIO_ADDITIONS:
            if column not in present:
                self._conn.execute(f"ALTER TABLE portfolios ADD COLUMN {column} {definition}")
        if "passwordHash" not in {row[1] for row in self._conn.execute("PRAGMA table_info(accounts)")}:
            self._conn.execute("ALTER TABLE accounts ADD COLUMN passwordHash TEXT")

    async def create_account(self, user_id: str, cash: Decimal, now: datetime,
                             password_hash: str | None = None) -> Portfolio:
        cash = parse_cash(cash, "starting cash")
        if cash < ZERO:
            raise ValueError("starting cash must not be negative")
        portfolio = Portfolio(user_id, cash, {}, {}, now, 0)
        try:
            with write_transaction(self._conn, "portfolio store") as conn:
                conn.execute("INSERT INTO accounts (userId, startingCash, created, passwordHash) "
                             "VALUES (?, ?, ?, ?)", (user_id, fmt(cash), format_time(now), password_hash))
                self._insert_portfolio(conn, portfolio)
        except sqlite3.IntegrityError:
            raise AccountExists(f"account {user_id} already exists") from None
        return portfolio

    async def get(self, user_id: str) -> Portfolio | None:
        return self._read_portfolio(self._conn, user_id)

    async def password_hash(self, user_id: str) -> str | None:
        row = self._conn.execute("SELECT passwordHash FROM accounts WHERE userId = ?",
                                 (user_id,)).fetchone()
        return row[0] if row else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        with write_transaction(self._conn, "portfolio store") as conn:
            changed = conn.execute("UPDATE accounts SET passwordHash = ? WHERE userId = ?",
                                   (password_hash, user_id)).rowcount
        return changed == 1

    async def apply(self, instruction: Instruction, price: Decimal | None,
                    now: datetime) -> Step:
        with write_transaction(self._conn, "portfolio store") as conn:
            step = self._decide(conn, instruction, price, now)
            if step.writes:
                self._write(conn, step)
        return step

    async def apply_many(self, applications: Sequence[Application]) -> list[Step]:
        """One write transaction for the whole batch: the execution job's
        batch costs one commit (one WAL append) instead of one per order.
        Each instruction reads what the previous ones wrote (same connection,
        same transaction), so the decisions are those of apply() in order;
        an error anywhere rolls the whole batch back and the job retries it."""
        steps: list[Step] = []
        with write_transaction(self._conn, "portfolio store") as conn:
            for a in applications:
                step = self._decide(conn, a.instruction, a.price, a.now)
                if step.writes:
                    self._write(conn, step)
                steps.append(step)
        return steps

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        step = await self.apply(PlaceOrder(order), price, now)
        if not step.outcomes:
            raise ValueError(f"order {order.order_id} rests; apply_execution takes orders that end at once")
        return step.outcomes[-1]

    def _decide(self, conn: sqlite3.Connection, instruction: Instruction,
                price: Decimal | None, now: datetime) -> Step:
        portfolio = self._read_portfolio(conn, instruction.user_id)
        if isinstance(instruction, ResetAccount):
            return self._decide_reset(conn, instruction, portfolio, now)
        if isinstance(instruction, PlaceOrder):
            known = self._read_order(conn, instruction.order.order_id)
            if known is not None:
                return lifecycle.replayed(known, portfolio)
            recorded = self._read_execution(conn, instruction.order.order_id)
            if recorded is not None:  # an unknown user's order, failed before
                return lifecycle.Step(portfolio, portfolio, outcomes=(recorded,), replay=True)
            return lifecycle.decide(instruction, portfolio, None, price, now)
        state = self._read_order(conn, instruction.order_id)
        if state is not None and state.user_id != instruction.user_id:
            state = None  # an instruction never reaches across users
        step = lifecycle.decide(instruction, portfolio, state, price, now)
        if not step.writes and state is not None:
            return lifecycle.replayed(state, portfolio)
        return step

    def _decide_reset(self, conn: sqlite3.Connection, instruction: ResetAccount,
                      portfolio: Portfolio | None, now: datetime) -> Step:
        row = conn.execute("SELECT canceledOrders FROM account_resets WHERE resetId = ?",
                           (instruction.reset_id,)).fetchone()
        if portfolio is None:
            return lifecycle.unchanged(None)
        if row is not None:  # re-emit what the reset canceled
            states = [self._read_order(conn, oid) for oid in orjson.loads(row[0])]
            replays = [lifecycle.replayed(s, portfolio) for s in states if s is not None]
            return lifecycle.Step(portfolio, portfolio,
                                  new_transitions=tuple(t for r in replays for t in r.new_transitions),
                                  outcomes=tuple(o for r in replays for o in r.outcomes), replay=True)
        open_orders = [_order_state(r) for (r,) in conn.execute(
            "SELECT record FROM orders WHERE userId = ? AND isOpen = 1", (instruction.user_id,))]
        starting = conn.execute("SELECT startingCash FROM accounts WHERE userId = ?",
                                (instruction.user_id,)).fetchone()
        ledger_length = conn.execute("SELECT count(*) FROM execution_ledger WHERE userId = ?",
                                     (instruction.user_id,)).fetchone()[0]
        return lifecycle.reset(instruction, portfolio, open_orders, Decimal(starting[0]),
                               ledger_length, now)

    def _write(self, conn: sqlite3.Connection, step: Step) -> None:
        if step.portfolio is not None and step.before is not None:
            self._update_portfolio(conn, step.portfolio, step.before.version)
        for state in step.orders:
            conn.execute(
                "INSERT OR REPLACE INTO orders (orderId, userId, clientOrderId, symbol, isOpen, "
                "orderedAtUs, lastSeq, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (state.order_id, state.user_id, state.order.client_order_id, state.order.symbol,
                 int(state.is_open), to_micros(state.order.order_timestamp), state.last_seq,
                 orjson.dumps(order_record(state)).decode()))
        for execution in step.outcomes:
            conn.execute(f"INSERT INTO execution_ledger ({_LEDGER_COLUMNS}) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _ledger_row(execution))
        if step.reset is not None:
            r = step.reset
            conn.execute(
                "INSERT INTO account_resets (resetId, userId, cash, resetAt, ledgerLength, "
                "canceledOrders) VALUES (?, ?, ?, ?, ?, ?)",
                (r.reset_id, r.user_id, fmt(r.cash), format_time(r.at), r.ledger_length,
                 orjson.dumps([o.order_id for o in step.outcomes]).decode()))

    async def order(self, order_id: str) -> OrderState | None:
        return self._read_order(self._conn, order_id)

    async def order_by_client_id(self, user_id: str, client_order_id: str) -> OrderState | None:
        row = self._conn.execute("SELECT record FROM orders WHERE userId = ? AND clientOrderId = ?",
                                 (user_id, client_order_id)).fetchone()
        return _order_state(row[0]) if row else None

    async def orders(self, query: OrderQuery) -> OrderPage:
        where, args = ["userId = ?"], [query.user_id]
        if query.open is not None:
            where.append("isOpen = ?")
            args.append(int(query.open))
        if query.symbol:
            where.append("symbol = ?")
            args.append(query.symbol)
        if query.page_token:
            timestamp, order_id = decode_page_token(query.page_token)
            where.append("(orderedAtUs < ? OR (orderedAtUs = ? AND orderId < ?))")
            args += [timestamp, timestamp, order_id]
        rows = self._conn.execute(
            f"SELECT record FROM orders WHERE {' AND '.join(where)} "
            "ORDER BY orderedAtUs DESC, orderId DESC LIMIT ?", (*args, query.limit + 1)).fetchall()
        return OrderPage(*order_page([_order_state(r) for (r,) in rows], query.limit, to_micros))

    async def open_orders(self) -> list[OrderState]:
        return [_order_state(r) for (r,) in self._conn.execute(
            "SELECT record FROM orders WHERE isOpen = 1")]

    async def order_updates(self, user_id: str, after_seq: int,
                            limit: int = 1000) -> list[tuple[OrderState, Transition]]:
        rows = self._conn.execute(
            "SELECT record FROM orders WHERE userId = ? AND lastSeq > ?", (user_id, after_seq))
        updates = [(state, t) for state in map(_order_state, (r for (r,) in rows))
                   for t in state.transitions if t.seq > after_seq]
        updates.sort(key=lambda u: u[1].seq)
        return updates[:limit]

    async def resets(self, user_id: str) -> list[AccountReset]:
        rows = self._conn.execute(
            "SELECT resetId, userId, cash, resetAt, ledgerLength FROM account_resets "
            "WHERE userId = ? ORDER BY ledgerLength, resetAt", (user_id,)).fetchall()
        return [AccountReset(rid, uid, Decimal(cash), parse_time(at, "resetAt"), length)
                for rid, uid, cash, at, length in rows]

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
        row = conn.execute(f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios WHERE userId = ?",
                           (user_id,)).fetchone()
        return None if row is None else _portfolio(row)

    @staticmethod
    def _read_order(conn: sqlite3.Connection, order_id: str) -> OrderState | None:
        row = conn.execute("SELECT record FROM orders WHERE orderId = ?", (order_id,)).fetchone()
        return None if row is None else _order_state(row[0])

    @staticmethod
    def _read_execution(conn: sqlite3.Connection, order_id: str) -> Execution | None:
        row = conn.execute(f"SELECT {_LEDGER_COLUMNS} FROM execution_ledger WHERE orderId = ?",
                           (order_id,)).fetchone()
        return None if row is None else _execution(row)

    @staticmethod
    def _insert_portfolio(conn: sqlite3.Connection, p: Portfolio) -> None:
        conn.execute(
            f"INSERT INTO portfolios ({_PORTFOLIO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.user_id, fmt(p.cash), _amounts_json(p.holdings), _amounts_json(p.cost_basis),
             format_time(p.last_updated), p.version, fmt(p.reserved_cash),
             _amounts_json(p.reserved_shares), p.order_seq))

    @staticmethod
    def _update_portfolio(conn: sqlite3.Connection, p: Portfolio, expected_version: int) -> None:
        # The version condition mirrors DynamoDB's conditional write; under
        # BEGIN IMMEDIATE it always holds, so a miss means a broken invariant.
        updated = conn.execute(
            "UPDATE portfolios SET cashBalance = ?, holdings = ?, costBasis = ?, "
            "lastUpdatedTimestamp = ?, version = ?, reservedCash = ?, reservedShares = ?, "
            "orderSeq = ? WHERE userId = ? AND version = ?",
            (fmt(p.cash), _amounts_json(p.holdings), _amounts_json(p.cost_basis),
             format_time(p.last_updated), p.version, fmt(p.reserved_cash),
             _amounts_json(p.reserved_shares), p.order_seq, p.user_id, expected_version)).rowcount
        if updated != 1:
            raise RuntimeError(f"portfolio {p.user_id} changed during apply")

