"""DynamoDB adapter of the portfolio store: accounts, portfolios, the orders'
records, account resets and the execution ledger, with every step of the
order lifecycle (`apply`) as one conditional TransactWriteItems.

Tables (names behind an optional `table_prefix`; created on first use if
missing, PAY_PER_REQUEST, and waited for until ACTIVE):

* `trading_portfolios`, partition key `userId` (S): `cashBalance` (N),
  `holdings` and `costBasis` (maps symbol -> N), `lastUpdatedTimestamp`
  (S, ISO-8601 UTC), `version` (N), `reservedCash` (N), `reservedShares`
  (map symbol -> N), `orderSeq` (N), `ledgerCount` (N: the user's ledger
  entries, which a reset records as its `ledgerLength`), and the account's
  `startingCash` (N) and `created` (S): an account is its portfolio item,
  registered once. Items written before the order lifecycle lack the newer
  attributes and read as nothing reserved, sequence 0; their ledgerCount is
  counted once, at their first reset (see `_UNKNOWN_COUNT`).
* `trading_orders`, partition key `orderId` (S): `userId`, `symbol`,
  `clientOrderId`, `isOpen` (BOOL), `orderedAt` (S, "{orderTimestamp in
  micros, 20 digits}#{orderId}"), `lastSeq` (N) and `record` (S: the JSON of
  events.order_record, the only attribute ever decoded). GSIs: `byUser`
  (userId, orderedAt) lists a user's orders newest first; `byUserSeq`
  (userId, lastSeq) finds the records changed after an update number;
  `byClientOrderId` (userClientOrderId = JSON [userId, clientOrderId],
  KEYS_ONLY, sparse) finds an order by its client id in one item read, where
  a filter over `byUser` would read every order the user ever placed (the
  record itself is then read consistently from the table); `openByUser`
  (openUserId, orderId; sparse: the attribute exists only while the order is
  OPEN) gives one user's open orders (a reset) and, scanned, everyone's
  (the trigger job's start).
* `trading_account_resets`, partition key `userId`, sort key `resetId`:
  `cash`, `resetAt`, `ledgerLength`, `canceledOrders` (S, JSON list of the
  orderIds the reset canceled) and `complete` (BOOL).
* `trading_execution_ledger`, partition key `orderId` (S): one item per
  order outcome. Amounts are strings there (as in the embedded ledger), so a
  replay returns the very decimals the first call recorded and a re-emitted
  trade_executed event is byte-identical. The GSI `byUser` (userId,
  ledgerPosition) lists a user's outcomes oldest first.

Numbers are exact: amounts go to DynamoDB as decimal strings (N), never as
floats, and come back quantized to their domain scale (DynamoDB drops
trailing zeros: "10000.00" is stored as 10000).

apply, per instruction about one order:

1. the portfolio is the last one this store saw of the user (kept for up to
   `known_portfolios` users); failing that, one BatchGetItem (consistent)
   reads it with the order's record (and, for a new order, its ledger
   entry). A new order with a remembered portfolio reads nothing at all:
   its conditional put finds out whether it is a replay. Cancels, triggers
   and expiries read the order's record (consistent GetItem).
2. domain.lifecycle decides. An instruction that changes nothing about a
   known order is answered with `lifecycle.replayed` (the record, to
   re-emit); a known orderId placed again, likewise.
3. one TransactWriteItems: the portfolio update if its `version` is still
   the one decided on (every step bumps it, even a failed order's), a put
   of each changed order record (a new one if `attribute_not_exists
   (orderId)`, a known one if its `lastSeq` is still the one decided on),
   and a put of each outcome's ledger entry if `attribute_not_exists
   (orderId)`. An unknown user's order is a ledger entry only, with a
   ConditionCheck that the user is still unknown. A market order that ends
   at once (apply_execution) is thus one request of three items.
4. if the transaction is cancelled, its reasons (ReturnValuesOnCondition
   CheckFailure=ALL_OLD) carry the current items: the new order's record or
   ledger entry existed -> a replay, answered from that item; the portfolio
   moved -> back to 2 with the portfolio that came back (a cancel, trigger
   or expiry also re-reads its order's record), at once the first times,
   then after a jittered pause; anything else (a conflict with a
   transaction in flight) -> back off and read again. Bounded.

A reset reads the portfolio and the reset's item, then the user's open
orders through `openByUser`, each re-read consistently; the GSI may lag in
AWS, so the set is accepted only if its reservations add up to the
portfolio's (else read again after a pause). A transaction holds at most
100 items and cancelling an order takes two (record, ledger entry), so the
reset's cancellations are written in chunks of RESET_ORDERS_PER_TRANSACTION,
each one a committed step of its own (portfolio version and reservations,
the orders, their ledger entries) plus the reset's item marked incomplete
with the orderIds canceled so far; the last chunk restores the cash and
marks the item complete, and only complete resets are listed or replayed.
A reset interrupted between chunks (a crash, another writer) is continued
by the redelivered instruction, which re-emits what the earlier chunks
canceled; between chunks the account is consistent (some orders canceled
by "account reset", their reservations released) and the user's
instructions are serialised anyway (one owner per user).

Resets are keyed by (userId, resetId): an instruction never reaches across
users, and a user's resets are one consistent Query. The uniqueness of a
clientOrderId per user is the order service's to keep (GSIs enforce none);
if two records ever shared one, the lookup returns one of them.

A remembered portfolio may be stale (another process wrote since): the
version condition then cancels the transaction and hands back the current
portfolio, so staleness costs one request and never correctness. Steps of
one user applied concurrently in one process wait for each other on a local
lock instead of colliding at DynamoDB. With one writer per user (the
execution job's partitioning by userId) a step costs one request; a
replayed new order costs one too (the cancelled transaction returns it).

`ledgerPosition` is "{version decided on, 12 digits}.{index of the outcome
in its step, 5 digits}.{ns}": every step is conditioned on the version it
decided on and bumps it, so the position orders a user's outcomes as they
were serialised, across processes (unknown users' entries are all on
version 0 and fall back to the clock). Entries written before every step
bumped the version ("{version}.{0 failed | 1 executed}.{ns}") sort
consistently with these. The GSIs are eventually consistent in AWS:
ledger(), orders(), open_orders() and order_by_client_id() may lag a write
by a moment there, and order_updates() returns only the gapless prefix of
what the index shows (a reconnecting stream asks again); the exactly-once
decisions never use a GSI without checking it against the portfolio.

Throttling and transient errors (throughput exceeded, throttling, internal
server errors, connection failures) are retried with exponential backoff and
full jitter; a DynamoDB still unreachable after that becomes
`ports.DependencyUnavailable("dynamodb")`. boto3's own retries are off, so the
policy is all here. boto3 clients are thread-safe: calls run on a small
thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, AsyncIterator, Mapping, Sequence

import boto3
import botocore.exceptions
import orjson
from botocore.config import Config

from ..domain import lifecycle
from ..domain.events import decode_order_record, format_time, order_record, parse_time
from ..domain.lifecycle import (AccountReset, Instruction, OrderState, PlaceOrder, ResetAccount,
                                Step, Transition)
from ..domain.model import ZERO, Execution, ExecutionStatus, Order, Portfolio, Side
from ..domain.money import CASH_QUANTUM, QUANTITY_QUANTUM, fmt, parse_cash
from ..ports import (Account, AccountExists, Application, DependencyUnavailable, OrderPage,
                     OrderQuery)
from .page_tokens import decode_page_token, order_page

log = logging.getLogger(__name__)

PORTFOLIOS_TABLE = "trading_portfolios"
LEDGER_TABLE = "trading_execution_ledger"
ORDERS_TABLE = "trading_orders"
RESETS_TABLE = "trading_account_resets"
ALL_TABLES = (PORTFOLIOS_TABLE, LEDGER_TABLE, ORDERS_TABLE, RESETS_TABLE)
LEDGER_BY_USER_INDEX = "byUser"
ORDERS_BY_USER_INDEX = "byUser"
ORDERS_BY_SEQ_INDEX = "byUserSeq"
ORDERS_BY_CLIENT_ID_INDEX = "byClientOrderId"
OPEN_ORDERS_INDEX = "openByUser"

TRANSIENT_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "LimitExceededException",
})
TRANSPORT_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

MAX_TRANSIENT_ATTEMPTS = 4
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0
MAX_DECISION_ATTEMPTS = 64
IMMEDIATE_REDECISIONS = 2
TABLE_ACTIVE_TIMEOUT = 120.0
MAX_TRANSACTION_ITEMS = 100
# A reset chunk: the portfolio, the reset's item, and two items per order.
RESET_ORDERS_PER_TRANSACTION = (MAX_TRANSACTION_ITEMS - 2) // 2
# ledgerCount of a portfolio item from before the order lifecycle: increments
# keep it hugely negative, so it reads as unknown until a reset counts it.
_UNKNOWN_COUNT = -10 ** 15
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _Cancelled(Exception):
    """A TransactWriteItems cancelled; `reasons` in the order of its items."""

    def __init__(self, reasons: list[dict[str, Any]]):
        super().__init__(", ".join(r.get("Code", "?") for r in reasons))
        self.reasons = reasons


# -- attribute values ---------------------------------------------------------

def _n(value: Decimal | int) -> dict[str, str]:
    return {"N": fmt(value) if isinstance(value, Decimal) else str(value)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _scaled(value: Decimal, quantum: Decimal) -> Decimal:
    """Back to the domain's scale: pad the zeros DynamoDB dropped, never round."""
    if value.as_tuple().exponent > quantum.as_tuple().exponent:
        return value.quantize(quantum)
    return value


def _amounts_map(amounts: Mapping[str, Decimal]) -> dict[str, Any]:
    return {"M": {symbol: _n(value) for symbol, value in amounts.items()}}


def _amounts(attribute: Mapping[str, Any] | None, quantum: Decimal) -> dict[str, Decimal]:
    if not attribute:
        return {}
    return {symbol: _scaled(Decimal(v["N"]), quantum) for symbol, v in attribute["M"].items()}


def _portfolio(item: Mapping[str, Any]) -> Portfolio:
    return Portfolio(
        item["userId"]["S"], _scaled(Decimal(item["cashBalance"]["N"]), CASH_QUANTUM),
        _amounts(item.get("holdings"), QUANTITY_QUANTUM),
        _amounts(item.get("costBasis"), CASH_QUANTUM),
        parse_time(item["lastUpdatedTimestamp"]["S"], "lastUpdatedTimestamp"),
        int(item["version"]["N"]),
        _scaled(Decimal(item["reservedCash"]["N"]), CASH_QUANTUM) if "reservedCash" in item
        else ZERO,
        _amounts(item.get("reservedShares"), QUANTITY_QUANTUM),
        int(item["orderSeq"]["N"]) if "orderSeq" in item else 0)


def _portfolio_item(p: Portfolio, starting_cash: Decimal, created: datetime) -> dict[str, Any]:
    return {"userId": _s(p.user_id), "cashBalance": _n(p.cash),
            "holdings": _amounts_map(p.holdings), "costBasis": _amounts_map(p.cost_basis),
            "lastUpdatedTimestamp": _s(format_time(p.last_updated)), "version": _n(p.version),
            "reservedCash": _n(p.reserved_cash), "reservedShares": _amounts_map(p.reserved_shares),
            "orderSeq": _n(p.order_seq), "ledgerCount": _n(0),
            "startingCash": _n(starting_cash), "created": _s(format_time(created))}


def _execution(item: Mapping[str, Any]) -> Execution:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item and "S" in item[name] else None

    price, ordered_at = text("executionPrice"), text("orderTimestamp")
    return Execution(
        text("orderId"), text("userId"), text("symbol"), Decimal(text("quantity")),
        Side(text("side")), ExecutionStatus(text("status")),
        Decimal(price) if price is not None else None,
        parse_time(text("executionTimestamp"), "executionTimestamp"), text("failureReason"),
        parse_time(ordered_at, "orderTimestamp") if ordered_at else None)


def _ledger_item(e: Execution, decided_on_version: int, index: int) -> dict[str, Any]:
    position = f"{decided_on_version:012d}.{index:05d}.{time.time_ns():020d}"
    item = {"orderId": _s(e.order_id), "userId": _s(e.user_id), "symbol": _s(e.symbol),
            "quantity": _s(fmt(e.quantity)), "side": _s(e.side.value),
            "status": _s(e.status.value),
            "executionTimestamp": _s(format_time(e.execution_timestamp)),
            "ledgerPosition": _s(position)}
    if e.execution_price is not None:
        item["executionPrice"] = _s(fmt(e.execution_price))
    if e.failure_reason is not None:
        item["failureReason"] = _s(e.failure_reason)
    if e.order_timestamp is not None:
        item["orderTimestamp"] = _s(format_time(e.order_timestamp))
    return item


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ordered_key(micros: int, order_id: str) -> str:
    return f"{micros:020d}#{order_id}"


def _client_key(user_id: str, client_order_id: str) -> str:
    return orjson.dumps([user_id, client_order_id]).decode()


def _order_item(state: OrderState) -> dict[str, Any]:
    order = state.order
    item = {"orderId": _s(order.order_id), "userId": _s(order.user_id),
            "symbol": _s(order.symbol), "isOpen": {"BOOL": state.is_open},
            "orderedAt": _s(_ordered_key(_micros(order.order_timestamp), order.order_id)),
            "lastSeq": _n(state.last_seq),
            "record": _s(orjson.dumps(order_record(state)).decode())}
    if order.client_order_id is not None:
        item["clientOrderId"] = _s(order.client_order_id)
        item["userClientOrderId"] = _s(_client_key(order.user_id, order.client_order_id))
    if state.is_open:
        item["openUserId"] = _s(order.user_id)
    return item


def _order_state(item: Mapping[str, Any]) -> OrderState:
    return decode_order_record(orjson.loads(item["record"]["S"]))


def _order_id_of(instruction: Instruction) -> str:
    return instruction.order.order_id if isinstance(instruction, PlaceOrder) \
        else instruction.order_id


def _released(p: Portfolio, states: Sequence[OrderState]) -> Portfolio:
    """`p` without what `states` (open orders) reserve."""
    cash, shares = lifecycle.reserved_totals(list(states))
    reserved = dict(p.reserved_shares)
    for symbol, quantity in shares.items():
        left = reserved.get(symbol, ZERO) - quantity
        if left == ZERO:
            reserved.pop(symbol, None)
        else:
            reserved[symbol] = left
    return replace(p, reserved_cash=p.reserved_cash - cash, reserved_shares=reserved)


def _replayed_all(states: Sequence[OrderState], portfolio: Portfolio | None) -> Step:
    replays = [lifecycle.replayed(s, portfolio) for s in states]
    return Step(portfolio, portfolio,
                new_transitions=tuple(t for r in replays for t in r.new_transitions),
                outcomes=tuple(o for r in replays for o in r.outcomes), replay=True)


# -- the store ----------------------------------------------------------------

class _UserLocks:
    """One asyncio.Lock per user while anyone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(user_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[user_id]


class DynamoDbPortfolioStore:
    """ports.PortfolioStore on DynamoDB; see the module docstring."""

    def __init__(self, endpoint_url: str | None, *, region: str = "us-east-1",
                 table_prefix: str = "", create_tables: bool = True, max_workers: int = 16,
                 connect_timeout: float = 2.0, read_timeout: float = 10.0,
                 known_portfolios: int = 10_000):
        self.portfolios_table = table_prefix + PORTFOLIOS_TABLE
        self.ledger_table = table_prefix + LEDGER_TABLE
        self.orders_table = table_prefix + ORDERS_TABLE
        self.resets_table = table_prefix + RESETS_TABLE
        self._create_tables = create_tables
        credentials = {}
        if endpoint_url and not os.environ.get("AWS_ACCESS_KEY_ID"):
            # A local DynamoDB-API server accepts any key; AWS itself never
            # sees these because the endpoint is not AWS.
            credentials = {"aws_access_key_id": "mocktrade", "aws_secret_access_key": "mocktrade"}
        self._client = boto3.session.Session().client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region, **credentials,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=connect_timeout,
                          read_timeout=read_timeout, max_pool_connections=max_workers))
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="dynamodb")
        self._user_locks = _UserLocks()
        # The last portfolio seen per user (least recently used dropped first):
        # apply decides on it without reading. Stale is harmless: the version
        # condition rejects the write and returns the current one.
        self._known: OrderedDict[str, Portfolio] = OrderedDict()
        self._known_limit = known_portfolios
        self._tables_ready = False
        self._tables_lock: asyncio.Lock | None = None
        self._closed = False

    # -- ports.PortfolioStore -------------------------------------------------

    async def create_account(self, user_id: str, cash: Decimal, now: datetime,
                             password_hash: str | None = None) -> Portfolio:
        cash = parse_cash(cash, "starting cash")
        if cash < ZERO:
            raise ValueError("starting cash must not be negative")
        portfolio = Portfolio(user_id, cash, {}, {}, now, 0)
        item = _portfolio_item(portfolio, cash, now)
        if password_hash is not None:
            # Beside the portfolio, never written by the owner's updates (they SET
            # only the money attributes), so a password change never races a fill.
            item["passwordHash"] = _s(password_hash)
        try:
            await self._call("put_item", TableName=self.portfolios_table, Item=item,
                             ConditionExpression="attribute_not_exists(userId)",
                             ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            # Our own put, retried after its answer was lost, finds itself.
            if not _is_fresh_account(exc.response.get("Item"), portfolio):
                raise AccountExists(f"account {user_id} already exists") from None
        return portfolio

    async def password_hash(self, user_id: str) -> str | None:
        response = await self._call("get_item", TableName=self.portfolios_table,
                                    Key={"userId": _s(user_id)}, ConsistentRead=True,
                                    ProjectionExpression="passwordHash")
        item = response.get("Item") or {}
        return item["passwordHash"]["S"] if "passwordHash" in item else None

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        try:
            await self._call("update_item", TableName=self.portfolios_table,
                             Key={"userId": _s(user_id)},
                             UpdateExpression="SET passwordHash = :hash",
                             ConditionExpression="attribute_exists(userId)",
                             ExpressionAttributeValues={":hash": _s(password_hash)})
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def get(self, user_id: str) -> Portfolio | None:
        response = await self._call("get_item", TableName=self.portfolios_table,
                                    Key={"userId": _s(user_id)}, ConsistentRead=True)
        item = response.get("Item")
        portfolio = _portfolio(item) if item else None
        if portfolio is not None:
            self._remember(portfolio, user_id)
        return portfolio

    async def apply(self, instruction: Instruction, price: Decimal | None,
                    now: datetime) -> Step:
        async with self._user_locks.hold(instruction.user_id):
            if isinstance(instruction, ResetAccount):
                return await self._apply_reset(instruction, now)
            return await self._apply_to_order(instruction, price, now)

    async def apply_many(self, applications: Sequence[Application]) -> list[Step]:
        """One TransactWriteItems per instruction, in order: DynamoDB has no
        transaction across a batch of users (100 items, and one portfolio
        may appear twice), so the batch is apply() in a loop, each step
        conditional on the version the previous one wrote."""
        return [await self.apply(a.instruction, a.price, a.now) for a in applications]

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        step = await self.apply(PlaceOrder(order), price, now)
        if not step.outcomes:
            raise ValueError(f"order {order.order_id} rests; apply_execution takes orders that "
                             "end at once")
        return step.outcomes[-1]

    async def order(self, order_id: str) -> OrderState | None:
        response = await self._call("get_item", TableName=self.orders_table,
                                    Key={"orderId": _s(order_id)}, ConsistentRead=True)
        item = response.get("Item")
        return _order_state(item) if item else None

    async def order_by_client_id(self, user_id: str, client_order_id: str) -> OrderState | None:
        response = await self._call(
            "query", TableName=self.orders_table, IndexName=ORDERS_BY_CLIENT_ID_INDEX,
            KeyConditionExpression="userClientOrderId = :k",
            ExpressionAttributeValues={":k": _s(_client_key(user_id, client_order_id))})
        for item in response.get("Items", []):
            state = await self.order(item["orderId"]["S"])
            if state is not None and state.user_id == user_id \
                    and state.order.client_order_id == client_order_id:
                return state
        return None

    async def orders(self, query: OrderQuery) -> OrderPage:
        condition, values = "userId = :u", {":u": _s(query.user_id)}
        if query.page_token:
            micros, order_id = decode_page_token(query.page_token)
            condition += " AND orderedAt < :after"
            values[":after"] = _s(_ordered_key(micros, order_id))
        filters, names = [], {}
        if query.open is not None:
            filters.append("isOpen = :open")
            values[":open"] = {"BOOL": query.open}
        if query.symbol:
            filters.append("#symbol = :symbol")
            names["#symbol"] = "symbol"
            values[":symbol"] = _s(query.symbol)
        extra: dict[str, Any] = {}
        if filters:
            extra["FilterExpression"] = " AND ".join(filters)
        else:
            extra["Limit"] = query.limit + 1
        if names:
            extra["ExpressionAttributeNames"] = names
        items: list[dict[str, Any]] = []
        start = None
        while len(items) <= query.limit:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.orders_table, IndexName=ORDERS_BY_USER_INDEX,
                KeyConditionExpression=condition, ExpressionAttributeValues=values,
                ScanIndexForward=False, **extra, **page)
            items.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        return OrderPage(*order_page([_order_state(item) for item in items[:query.limit + 1]],
                                     query.limit, _micros))

    async def open_orders(self) -> list[OrderState]:
        states, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call("scan", TableName=self.orders_table,
                                        IndexName=OPEN_ORDERS_INDEX, **page)
            states.extend(_order_state(item) for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                return [s for s in states if s.is_open]

    async def order_updates(self, user_id: str, after_seq: int,
                            limit: int = 1000) -> list[tuple[OrderState, Transition]]:
        states, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.orders_table, IndexName=ORDERS_BY_SEQ_INDEX,
                KeyConditionExpression="userId = :u AND lastSeq > :after",
                ExpressionAttributeValues={":u": _s(user_id), ":after": _n(after_seq)}, **page)
            states.extend(_order_state(item) for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        updates = sorted(((s, t) for s in states for t in s.transitions if t.seq > after_seq),
                         key=lambda u: u[1].seq)
        gapless = []
        for expected, update in enumerate(updates[:limit], start=after_seq + 1):
            if update[1].seq != expected:
                break  # the index has not caught up with a write yet: stop before the gap
            gapless.append(update)
        return gapless

    async def resets(self, user_id: str) -> list[AccountReset]:
        resets, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.resets_table, ConsistentRead=True,
                KeyConditionExpression="userId = :u",
                ExpressionAttributeValues={":u": _s(user_id)}, **page)
            resets.extend(
                AccountReset(item["resetId"]["S"], item["userId"]["S"],
                             _scaled(Decimal(item["cash"]["N"]), CASH_QUANTUM),
                             parse_time(item["resetAt"]["S"], "resetAt"),
                             int(item["ledgerLength"]["N"]))
                for item in response.get("Items", []) if item.get("complete", {}).get("BOOL"))
            start = response.get("LastEvaluatedKey")
            if not start:
                return sorted(resets, key=lambda r: (r.ledger_length, r.at))

    async def execution(self, order_id: str) -> Execution | None:
        response = await self._call("get_item", TableName=self.ledger_table,
                                    Key={"orderId": _s(order_id)}, ConsistentRead=True)
        item = response.get("Item")
        return _execution(item) if item else None

    async def ledger(self, user_id: str) -> list[Execution]:
        executions, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.ledger_table, IndexName=LEDGER_BY_USER_INDEX,
                KeyConditionExpression="userId = :u", ExpressionAttributeValues={":u": _s(user_id)},
                ScanIndexForward=True, **page)
            executions.extend(_execution(item) for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                return executions

    async def accounts(self) -> list[Account]:
        accounts, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "scan", TableName=self.portfolios_table, ConsistentRead=True,
                ProjectionExpression="#user, #starting, #created",
                ExpressionAttributeNames={"#user": "userId", "#starting": "startingCash",
                                          "#created": "created"}, **page)
            accounts.extend(
                Account(item["userId"]["S"],
                        _scaled(Decimal(item["startingCash"]["N"]), CASH_QUANTUM),
                        parse_time(item["created"]["S"], "created"))
                for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                return sorted(accounts, key=lambda a: a.user_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._client.close()

    # -- apply: an instruction about one order ----------------------------------

    async def _apply_to_order(self, instruction: Instruction, price: Decimal | None,
                              now: datetime) -> Step:
        user, order_id = instruction.user_id, _order_id_of(instruction)
        placing = isinstance(instruction, PlaceOrder)
        portfolio = self._known.get(user)
        # A new order on a remembered portfolio needs no read: its conditional
        # put tells a replay. Anything else needs the order's record.
        state, fresh = None, not (placing and portfolio is not None)
        for attempt in range(MAX_DECISION_ATTEMPTS):
            if fresh:
                portfolio, state, recorded = await self._read_for(
                    user, order_id, with_portfolio=portfolio is None or placing,
                    with_ledger=placing, portfolio=portfolio)
                if placing and state is not None:
                    return lifecycle.replayed(state, portfolio)
                if placing and recorded is not None:  # an unknown user's order, failed before
                    return Step(portfolio, portfolio, outcomes=(recorded,), replay=True)
                fresh = False
            if state is not None and state.user_id != user:
                state = None  # an instruction never reaches across users
            step = lifecycle.decide(instruction, portfolio, state, price, now)
            if not step.writes:
                return lifecycle.replayed(state, portfolio) if state is not None else step
            items = self._step_items(user, step, {order_id: state.last_seq if state else None})
            try:
                await self._transact(items)
            except _Cancelled as cancelled:
                reasons = cancelled.reasons
                portfolio_reason = reasons[0] if reasons else {}
                current = portfolio_reason.get("Item")
                if current:
                    portfolio = _portfolio(current)
                    self._remember(portfolio, user)
                if placing:
                    known = self._replay_in(reasons[1:], portfolio)
                    if known is not None:
                        return known
                if _code(portfolio_reason) == "ConditionalCheckFailed":
                    # The portfolio moved; decide again on the one that came
                    # back with the cancellation: at once the first times,
                    # then after a jittered pause, so writers that keep
                    # colliding on one portfolio fall out of step instead of
                    # one of them losing every round.
                    if not current:
                        portfolio = None
                    if attempt >= IMMEDIATE_REDECISIONS:
                        await asyncio.sleep(_backoff(attempt - IMMEDIATE_REDECISIONS))
                    fresh = not placing or portfolio is None
                    continue
                # A conflict with a transaction in flight, or our own record
                # moved: back off, read again.
                await asyncio.sleep(_backoff(attempt))
                fresh = True
                continue
            if step.portfolio is not None:
                self._remember(step.portfolio, user)
            return step
        raise DependencyUnavailable(
            "dynamodb", f"portfolio {user} kept changing; {type(instruction).__name__} of "
            f"{order_id} not applied after {MAX_DECISION_ATTEMPTS} attempts")

    def _replay_in(self, reasons: Sequence[Mapping[str, Any]],
                   portfolio: Portfolio | None) -> Step | None:
        """A new order's transaction cancelled because the orderId is known:
        the replay, answered from the items that came back (None: not that,
        or the engine returned no item and the caller must read)."""
        for reason in reasons:
            item = reason.get("Item")
            if _code(reason) != "ConditionalCheckFailed" or not item:
                continue
            if "record" in item:
                return lifecycle.replayed(_order_state(item), portfolio)
            if "ledgerPosition" in item:
                return Step(portfolio, portfolio, outcomes=(_execution(item),), replay=True)
        return None

    async def _read_for(self, user_id: str, order_id: str, *, with_portfolio: bool,
                        with_ledger: bool, portfolio: Portfolio | None
                        ) -> tuple[Portfolio | None, OrderState | None, Execution | None]:
        """The order's record (and ledger entry) and the user's portfolio, in one
        consistent read; `portfolio` is kept when it is not to be read."""
        wanted = {self.orders_table: [{"orderId": _s(order_id)}]}
        if with_portfolio:
            wanted[self.portfolios_table] = [{"userId": _s(user_id)}]
        if with_ledger:
            wanted[self.ledger_table] = [{"orderId": _s(order_id)}]
        found = await self._batch_get(wanted)
        if with_portfolio:
            portfolios = found.get(self.portfolios_table)
            portfolio = _portfolio(portfolios[0]) if portfolios else None
            self._remember(portfolio, user_id)
        records, ledger = found.get(self.orders_table), found.get(self.ledger_table)
        return (portfolio, _order_state(records[0]) if records else None,
                _execution(ledger[0]) if ledger else None)

    async def _batch_get(self, keys: Mapping[str, list[dict[str, Any]]]
                         ) -> dict[str, list[dict[str, Any]]]:
        """Consistent BatchGetItem of any number of keys; unprocessed keys retried."""
        found: dict[str, list[dict[str, Any]]] = {}
        pending = [(table, key) for table, table_keys in keys.items() for key in table_keys]
        while pending:
            batch, pending = pending[:100], pending[100:]
            wanted: dict[str, Any] = {}
            for table, key in batch:
                wanted.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
            for attempt in range(MAX_TRANSIENT_ATTEMPTS * 2):
                response = await self._call("batch_get_item", RequestItems=wanted)
                for table, items in response.get("Responses", {}).items():
                    found.setdefault(table, []).extend(items)
                wanted = response.get("UnprocessedKeys") or {}
                if not wanted:
                    break
                await asyncio.sleep(_backoff(attempt))
            else:
                raise DependencyUnavailable("dynamodb", "reads kept being throttled")
        return found

    async def _orders_by_id(self, order_ids: Sequence[str]) -> list[OrderState]:
        if not order_ids:
            return []
        found = await self._batch_get(
            {self.orders_table: [{"orderId": _s(o)} for o in dict.fromkeys(order_ids)]})
        by_id = {s.order_id: s for s in map(_order_state, found.get(self.orders_table, []))}
        return [by_id[o] for o in order_ids if o in by_id]

    def _remember(self, portfolio: Portfolio | None, user_id: str) -> None:
        """Keep the newest portfolio seen of a user (None: the user is unknown)."""
        known = self._known.pop(user_id, None)
        if portfolio is None:
            return  # an unknown user is looked up again next time
        if known is not None and known.version > portfolio.version:
            portfolio = known  # a slower read must not bring back an older state
        self._known[user_id] = portfolio
        while len(self._known) > self._known_limit:
            self._known.popitem(last=False)

    # -- apply: an account reset --------------------------------------------------

    async def _apply_reset(self, instruction: ResetAccount, now: datetime) -> Step:
        user = instruction.user_id
        reset_key = {"userId": _s(user), "resetId": _s(instruction.reset_id)}
        for attempt in range(MAX_DECISION_ATTEMPTS):
            found = await self._batch_get({self.portfolios_table: [{"userId": _s(user)}],
                                           self.resets_table: [reset_key]})
            items, resets = found.get(self.portfolios_table), found.get(self.resets_table)
            if not items:
                return lifecycle.unchanged(None)
            item, portfolio = items[0], _portfolio(items[0])
            self._remember(portfolio, user)
            done = orjson.loads(resets[0]["canceledOrders"]["S"]) if resets else []
            earlier = await self._orders_by_id(done)
            if resets and resets[0].get("complete", {}).get("BOOL"):
                return _replayed_all(earlier, portfolio)  # re-emit what the reset canceled
            open_orders = await self._open_orders_of(user, portfolio)
            if open_orders is None:  # the index lags a write: read again shortly
                await asyncio.sleep(_backoff(attempt))
                continue
            count = int(item.get("ledgerCount", {}).get("N", _UNKNOWN_COUNT))
            exact_count = None
            if count < 0:  # an item from before the count: count once, then set it
                count = exact_count = await self._count_ledger(user)
            step = lifecycle.reset(
                instruction, portfolio, open_orders,
                _scaled(Decimal(item["startingCash"]["N"]), CASH_QUANTUM), count, now)
            try:
                final = await self._write_reset(step, instruction, open_orders, done, exact_count)
            except _Cancelled:
                # Another writer moved the portfolio (or a chunk landed and the
                # next did not): read again and carry on from what is stored.
                await asyncio.sleep(_backoff(attempt))
                continue
            self._remember(final, user)
            if earlier:
                again = _replayed_all(earlier, portfolio)
                step = Step(step.before, final, step.orders,
                            again.new_transitions + step.new_transitions,
                            again.outcomes + step.outcomes, step.reset)
            else:
                step = replace(step, portfolio=final)
            return step
        raise DependencyUnavailable("dynamodb", f"reset {instruction.reset_id} of {user} not "
                                    f"applied after {MAX_DECISION_ATTEMPTS} attempts")

    async def _open_orders_of(self, user_id: str, portfolio: Portfolio) -> list[OrderState] | None:
        """The user's open orders, re-read consistently; None if they do not add
        up to the portfolio's reservations (the index has not caught up)."""
        ids, start = [], None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.orders_table, IndexName=OPEN_ORDERS_INDEX,
                KeyConditionExpression="openUserId = :u",
                ExpressionAttributeValues={":u": _s(user_id)},
                ProjectionExpression="orderId", **page)
            ids.extend(item["orderId"]["S"] for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        states = [s for s in await self._orders_by_id(ids) if s.is_open and s.user_id == user_id]
        cash, shares = lifecycle.reserved_totals(states)
        if cash != portfolio.reserved_cash or shares != dict(portfolio.reserved_shares):
            return None
        return states

    async def _count_ledger(self, user_id: str) -> int:
        count, start = 0, None
        while True:
            page = {"ExclusiveStartKey": start} if start else {}
            response = await self._call(
                "query", TableName=self.ledger_table, IndexName=LEDGER_BY_USER_INDEX,
                KeyConditionExpression="userId = :u", ExpressionAttributeValues={":u": _s(user_id)},
                Select="COUNT", **page)
            count += response.get("Count", 0)
            start = response.get("LastEvaluatedKey")
            if not start:
                return count

    async def _write_reset(self, step: Step, instruction: ResetAccount,
                           open_orders: Sequence[OrderState], done: Sequence[str],
                           exact_count: int | None) -> Portfolio:
        """Write the reset in transactions of at most 100 items; the portfolio after it."""
        prior = {s.order_id: s for s in open_orders}
        outcomes = {o.order_id: o for o in step.outcomes}
        canceled = list(step.orders)
        size = RESET_ORDERS_PER_TRANSACTION
        chunks = [canceled[i:i + size] for i in range(0, len(canceled), size)] or [[]]
        before, so_far = step.before, list(done)
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            if last:
                after = replace(step.portfolio, version=before.version + 1)
            else:  # an intermediate step: these orders canceled, nothing else yet
                after = replace(_released(before, [prior[s.order_id] for s in chunk]),
                                order_seq=chunk[-1].last_seq, version=before.version + 1,
                                last_updated=step.portfolio.last_updated)
            so_far += [s.order_id for s in chunk]
            part = Step(before, after, tuple(chunk), (),
                        tuple(outcomes[s.order_id] for s in chunk), step.reset if last else None)
            items = self._step_items(instruction.user_id, part, {s.order_id: prior[s.order_id].last_seq for s in chunk},
                                     exact_count=exact_count)
            items.append(self._reset_put(instruction, step.reset if last else None, so_far))
            await self._transact(items)
            before, exact_count = after, None
        return before

    def _reset_put(self, instruction: ResetAccount, reset: AccountReset | None,
                   canceled: Sequence[str]) -> dict[str, Any]:
        item = {"userId": _s(instruction.user_id), "resetId": _s(instruction.reset_id),
                "canceledOrders": _s(orjson.dumps(list(canceled)).decode()),
                "complete": {"BOOL": reset is not None}}
        if reset is not None:
            item.update(cash=_n(reset.cash), resetAt=_s(format_time(reset.at)),
                        ledgerLength=_n(reset.ledger_length))
        return {"Put": {"TableName": self.resets_table, "Item": item,
                        "ConditionExpression": "attribute_not_exists(resetId) OR #complete = :no",
                        "ExpressionAttributeNames": {"#complete": "complete"},
                        "ExpressionAttributeValues": {":no": {"BOOL": False}}}}

    # -- the transaction of a step ---------------------------------------------

    def _step_items(self, user_id: str, step: Step, prior: Mapping[str, int | None], *,
                    exact_count: int | None = None) -> list[dict[str, Any]]:
        """The portfolio update (or unknown-user check), the order records and
        the ledger entries of `step`, each conditioned on what it was decided on.
        `prior`: each order's lastSeq as decided on (None: a new order)."""
        key = {"userId": _s(user_id)}
        if step.before is None or step.portfolio is None:
            items = [{"ConditionCheck": {
                "TableName": self.portfolios_table, "Key": key,
                "ConditionExpression": "attribute_not_exists(userId)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}]
            version = 0
        else:
            p, version = step.portfolio, step.before.version
            values = {
                ":expected": _n(version), ":cash": _n(p.cash),
                ":holdings": _amounts_map(p.holdings), ":basis": _amounts_map(p.cost_basis),
                ":updated": _s(format_time(p.last_updated)), ":version": _n(p.version),
                ":reserved": _n(p.reserved_cash), ":reservedShares": _amounts_map(p.reserved_shares),
                ":seq": _n(p.order_seq)}
            if exact_count is None:
                count = "ledgerCount = if_not_exists(ledgerCount, :unknown) + :outcomes"
                values.update({":unknown": _n(_UNKNOWN_COUNT), ":outcomes": _n(len(step.outcomes))})
            else:
                count = "ledgerCount = :count"
                values[":count"] = _n(exact_count + len(step.outcomes))
            items = [{"Update": {
                "TableName": self.portfolios_table, "Key": key,
                "ConditionExpression": "#version = :expected",
                "ExpressionAttributeNames": {"#version": "version"},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                "UpdateExpression": "SET cashBalance = :cash, holdings = :holdings, "
                                    "costBasis = :basis, lastUpdatedTimestamp = :updated, "
                                    "#version = :version, reservedCash = :reserved, "
                                    "reservedShares = :reservedShares, orderSeq = :seq, " + count,
                "ExpressionAttributeValues": values}}]
        for state in step.orders:
            put: dict[str, Any] = {"TableName": self.orders_table, "Item": _order_item(state),
                                   "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
            last_seq = prior.get(state.order_id)
            if last_seq is None:
                put["ConditionExpression"] = "attribute_not_exists(orderId)"
            else:
                put.update(ConditionExpression="lastSeq = :prior",
                           ExpressionAttributeValues={":prior": _n(last_seq)})
            items.append({"Put": put})
        for index, execution in enumerate(step.outcomes):
            items.append({"Put": {"TableName": self.ledger_table,
                                  "Item": _ledger_item(execution, version, index),
                                  "ConditionExpression": "attribute_not_exists(orderId)",
                                  "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}})
        return items

    async def _transact(self, items: list[dict[str, Any]]) -> None:
        assert len(items) <= MAX_TRANSACTION_ITEMS, len(items)
        try:
            await self._call("transact_write_items", TransactItems=items)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or [{} for _ in items]
            raise _Cancelled(reasons) from None

    # -- calls ------------------------------------------------------------------

    async def _call(self, operation: str, **parameters: Any) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("portfolio store is closed")
        await self._ensure_tables()
        return await self._run(operation, parameters)

    async def _run(self, operation: str, parameters: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._call_with_retries, operation, parameters))

    def _call_with_retries(self, operation: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """On a pool thread: the call, retried on throttling and transient errors."""
        method = getattr(self._client, operation)
        for attempt in range(MAX_TRANSIENT_ATTEMPTS):
            try:
                return method(**parameters)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in TRANSIENT_ERRORS:
                    raise
                failure: Exception = exc
            except TRANSPORT_ERRORS as exc:
                failure = exc
            if attempt + 1 < MAX_TRANSIENT_ATTEMPTS:
                time.sleep(_backoff(attempt))
        raise DependencyUnavailable("dynamodb", f"{operation}: {failure}") from failure

    async def _ensure_tables(self) -> None:
        if self._tables_ready:
            return
        if self._tables_lock is None:
            self._tables_lock = asyncio.Lock()
        async with self._tables_lock:
            if self._tables_ready:
                return
            if self._create_tables:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._create_tables_sync)
            self._tables_ready = True

    def _create_tables_sync(self) -> None:
        self._create_table(
            self.portfolios_table, [("userId", "S")], [{"AttributeName": "userId", "KeyType": "HASH"}])
        self._create_table(
            self.ledger_table, [("orderId", "S"), ("userId", "S"), ("ledgerPosition", "S")],
            [{"AttributeName": "orderId", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[{
                "IndexName": LEDGER_BY_USER_INDEX,
                "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"},
                              {"AttributeName": "ledgerPosition", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}])

        def index(name: str, hash_key: str, range_key: str | None = None,
                  projection: str = "ALL") -> dict[str, Any]:
            schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
            if range_key:
                schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
            return {"IndexName": name, "KeySchema": schema,
                    "Projection": {"ProjectionType": projection}}

        self._create_table(
            self.orders_table,
            [("orderId", "S"), ("userId", "S"), ("orderedAt", "S"), ("lastSeq", "N"),
             ("userClientOrderId", "S"), ("openUserId", "S")],
            [{"AttributeName": "orderId", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                index(ORDERS_BY_USER_INDEX, "userId", "orderedAt"),
                index(ORDERS_BY_SEQ_INDEX, "userId", "lastSeq"),
                index(ORDERS_BY_CLIENT_ID_INDEX, "userClientOrderId", projection="KEYS_ONLY"),
                index(OPEN_ORDERS_INDEX, "openUserId", "orderId")])
        self._create_table(
            self.resets_table, [("userId", "S"), ("resetId", "S")],
            [{"AttributeName": "userId", "KeyType": "HASH"},
             {"AttributeName": "resetId", "KeyType": "RANGE"}])

    def _create_table(self, name: str, attributes: list[tuple[str, str]],
                      key_schema: list[dict[str, str]], **extra: Any) -> None:
        try:
            description = self._call_with_retries("describe_table", {"TableName": name})["Table"]
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            try:
                description = self._call_with_retries("create_table", {
                    "TableName": name, "BillingMode": "PAY_PER_REQUEST", "KeySchema": key_schema,
                    "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t}
                                             for a, t in attributes], **extra})["TableDescription"]
                log.info("created dynamodb table", extra={"table": name})
            except botocore.exceptions.ClientError as exc:
                if _code(exc) != "ResourceInUseException":  # another process made it first
                    raise
                description = self._call_with_retries("describe_table", {"TableName": name})["Table"]
        deadline = time.monotonic() + TABLE_ACTIVE_TIMEOUT
        while not _active(description):
            if time.monotonic() > deadline:
                raise DependencyUnavailable("dynamodb", f"table {name} did not become ACTIVE")
            time.sleep(0.5)
            description = self._call_with_retries("describe_table", {"TableName": name})["Table"]


def _is_fresh_account(item: Mapping[str, Any] | None, created: Portfolio) -> bool:
    """Whether the stored item is exactly the account `created`, still untouched."""
    if not item:
        return False
    return (_portfolio(item) == created
            and Decimal(item["startingCash"]["N"]) == created.cash
            and parse_time(item["created"]["S"], "created") == created.last_updated)


def _active(description: Mapping[str, Any]) -> bool:
    return description.get("TableStatus") == "ACTIVE" and all(
        index.get("IndexStatus", "ACTIVE") == "ACTIVE"
        for index in description.get("GlobalSecondaryIndexes", []))


def _code(error: botocore.exceptions.ClientError | Mapping[str, Any]) -> str | None:
    if isinstance(error, botocore.exceptions.ClientError):
        return error.response.get("Error", {}).get("Code")
    return error.get("Code")


def _backoff(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
