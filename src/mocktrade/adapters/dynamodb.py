"""DynamoDB adapter of the portfolio store: accounts, portfolios and the
execution ledger, with `apply_execution` as one conditional transaction.

Tables (names behind an optional `table_prefix`; created on first use if
missing, PAY_PER_REQUEST, and waited for until ACTIVE):

* `trading_portfolios`, partition key `userId` (S): `cashBalance` (N),
  `holdings` and `costBasis` (maps symbol -> N), `lastUpdatedTimestamp`
  (S, ISO-8601 UTC), `version` (N), and the account's `startingCash` (N) and
  `created` (S): an account is its portfolio item, registered once.
* `trading_execution_ledger`, partition key `orderId` (S): one item per
  order outcome. Amounts are strings there (as in the embedded ledger), so a
  replay returns the very decimals the first call recorded and a re-emitted
  trade_executed event is byte-identical. The GSI `byUser` (userId,
  ledgerPosition) lists a user's outcomes oldest first.

Numbers are exact: amounts go to DynamoDB as decimal strings (N), never as
floats, and come back quantized to their domain scale (DynamoDB drops
trailing zeros: "10000.00" is stored as 10000).

apply_execution, per order:

1. the portfolio is the last one this store saw of the user (kept for up to
   `known_portfolios` users); failing that, one BatchGetItem (consistent)
   reads the ledger entry and the portfolio, and an existing entry is a
   replay, returned as it is;
2. the domain rules decide against that portfolio;
3. one TransactWriteItems puts the ledger entry if `attribute_not_exists
   (orderId)` and, for an executed order, updates the portfolio if its
   `version` is still the one decided on; a failed order instead carries a
   ConditionCheck on that version, so a failure decided on a stale portfolio
   is decided again (an unknown user's order checks that the user is still
   unknown);
4. if the transaction is cancelled, its reasons (ReturnValuesOnCondition
   CheckFailure=ALL_OLD) carry the current items: the orderId was recorded
   meanwhile -> that entry is returned; the portfolio moved -> back to 2 with
   the new portfolio, without another read (bounded, with jitter).

A remembered portfolio may be stale (another process wrote since): the
version condition then cancels the transaction and hands back the current
portfolio, so staleness costs one request and never correctness. Orders of
one user applied concurrently in one process wait for each other on a local
lock instead of colliding at DynamoDB. With one writer per user (the
execution job's partitioning by userId) an order costs one request; a
replay costs one too (the cancelled transaction returns the entry).

`ledgerPosition` is "{version decided on}.{0 failed | 1 executed}.{ns}": an
executed order is the only one decided on its version that changed it, and
every failure decided on that version committed before it. So the position
orders a user's outcomes as they were serialised, across processes. The GSI
is eventually consistent in AWS: ledger() may lag a write by a moment there;
the exactly-once check never uses it.

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
from datetime import datetime
from decimal import Decimal
from typing import Any, AsyncIterator, Mapping

import boto3
import botocore.exceptions
from botocore.config import Config

from ..domain import rules
from ..domain.events import format_time, parse_time
from ..domain.model import ZERO, Execution, ExecutionStatus, Order, Portfolio, Side
from ..domain.money import CASH_QUANTUM, QUANTITY_QUANTUM, fmt, parse_cash
from ..ports import Account, AccountExists, DependencyUnavailable

log = logging.getLogger(__name__)

PORTFOLIOS_TABLE = "trading_portfolios"
LEDGER_TABLE = "trading_execution_ledger"
LEDGER_BY_USER_INDEX = "byUser"

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
        int(item["version"]["N"]))


def _portfolio_item(p: Portfolio, starting_cash: Decimal, created: datetime) -> dict[str, Any]:
    return {"userId": _s(p.user_id), "cashBalance": _n(p.cash),
            "holdings": _amounts_map(p.holdings), "costBasis": _amounts_map(p.cost_basis),
            "lastUpdatedTimestamp": _s(format_time(p.last_updated)), "version": _n(p.version),
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


def _ledger_item(e: Execution, decided_on_version: int) -> dict[str, Any]:
    position = f"{decided_on_version:012d}.{1 if e.executed else 0}.{time.time_ns():020d}"
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
        # apply_execution decides on it without reading. Stale is harmless:
        # the version condition rejects the write and returns the current one.
        self._known: OrderedDict[str, Portfolio] = OrderedDict()
        self._known_limit = known_portfolios
        self._tables_ready = False
        self._tables_lock: asyncio.Lock | None = None
        self._closed = False

    # -- ports.PortfolioStore -------------------------------------------------

    async def create_account(self, user_id: str, cash: Decimal, now: datetime) -> Portfolio:
        cash = parse_cash(cash, "starting cash")
        if cash < ZERO:
            raise ValueError("starting cash must not be negative")
        portfolio = Portfolio(user_id, cash, {}, {}, now, 0)
        item = _portfolio_item(portfolio, cash, now)
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

    async def get(self, user_id: str) -> Portfolio | None:
        response = await self._call("get_item", TableName=self.portfolios_table,
                                    Key={"userId": _s(user_id)}, ConsistentRead=True)
        item = response.get("Item")
        portfolio = _portfolio(item) if item else None
        if portfolio is not None:
            self._remember(portfolio, user_id)
        return portfolio

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        async with self._user_locks.hold(order.user_id):
            portfolio = self._known.get(order.user_id)
            if portfolio is None:
                recorded, portfolio = await self._read_order_and_portfolio(order)
                if recorded is not None:
                    return recorded  # a replay: the first outcome stands
            for attempt in range(MAX_DECISION_ATTEMPTS):
                execution, decided, transaction = self._decide(order, portfolio, price, now)
                try:
                    await self._transact(transaction)
                except _Cancelled as cancelled:
                    ledger_reason, portfolio_reason = cancelled.reasons
                    if _code(ledger_reason) == "ConditionalCheckFailed":
                        # Recorded already: a replay, another process, or our
                        # own earlier attempt whose answer was lost.
                        if "Item" in ledger_reason:
                            return _execution(ledger_reason["Item"])
                        return await self._recorded(order.order_id)
                    if _code(portfolio_reason) == "ConditionalCheckFailed":
                        # The portfolio moved; decide again on the one that
                        # came back with the cancellation: at once the first
                        # times, then after a jittered pause, so writers that
                        # keep colliding on one portfolio fall out of step
                        # instead of one of them losing every round.
                        item = portfolio_reason.get("Item")
                        portfolio = _portfolio(item) if item else None
                        self._remember(portfolio, order.user_id)
                        if attempt >= IMMEDIATE_REDECISIONS:
                            await asyncio.sleep(_backoff(attempt - IMMEDIATE_REDECISIONS))
                        continue
                    # A conflict with a transaction in flight: back off, re-read.
                    await asyncio.sleep(_backoff(attempt))
                    recorded, portfolio = await self._read_order_and_portfolio(order)
                    if recorded is not None:
                        return recorded
                    continue
                self._remember(decided, order.user_id)
                return execution
            raise DependencyUnavailable(
                "dynamodb", f"portfolio {order.user_id} kept changing; order {order.order_id} "
                f"not applied after {MAX_DECISION_ATTEMPTS} attempts")

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

    # -- apply_execution's steps ----------------------------------------------

    async def _read_order_and_portfolio(self, order: Order) -> tuple[Execution | None,
                                                                      Portfolio | None]:
        """The order's ledger entry and the user's portfolio, in one consistent read."""
        wanted = {
            self.ledger_table: {"Keys": [{"orderId": _s(order.order_id)}], "ConsistentRead": True},
            self.portfolios_table: {"Keys": [{"userId": _s(order.user_id)}],
                                    "ConsistentRead": True},
        }
        found: dict[str, list[dict[str, Any]]] = {}
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
        ledger, portfolios = found.get(self.ledger_table), found.get(self.portfolios_table)
        portfolio = _portfolio(portfolios[0]) if portfolios else None
        self._remember(portfolio, order.user_id)
        return _execution(ledger[0]) if ledger else None, portfolio

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

    def _decide(self, order: Order, portfolio: Portfolio | None, price: Decimal | None,
                now: datetime) -> tuple[Execution, Portfolio | None, list[dict[str, Any]]]:
        """The outcome, the portfolio after it, and the two-item transaction
        that records both if the portfolio is still the one decided on."""
        key = {"userId": _s(order.user_id)}
        if portfolio is None:
            execution = Execution(order.order_id, order.user_id, order.symbol, order.quantity,
                                  order.side, ExecutionStatus.FAILED_OTHER, None, now,
                                  f"unknown user {order.user_id}", order.order_timestamp)
            guard = {"ConditionCheck": {
                "TableName": self.portfolios_table, "Key": key,
                "ConditionExpression": "attribute_not_exists(userId)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
            return execution, None, [self._ledger_put(execution, 0), guard]
        outcome = rules.execute(order, portfolio, price, now)
        condition = {"ConditionExpression": "#version = :expected",
                     "ExpressionAttributeNames": {"#version": "version"},
                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        expected = {":expected": _n(portfolio.version)}
        if outcome.portfolio is portfolio:  # failed: the portfolio stays as it is
            guard = {"ConditionCheck": {"TableName": self.portfolios_table, "Key": key,
                                        "ExpressionAttributeValues": expected, **condition}}
        else:
            p = outcome.portfolio
            guard = {"Update": {
                "TableName": self.portfolios_table, "Key": key, **condition,
                "UpdateExpression": "SET cashBalance = :cash, holdings = :holdings, "
                                    "costBasis = :basis, lastUpdatedTimestamp = :updated, "
                                    "#version = :version",
                "ExpressionAttributeValues": {
                    **expected, ":cash": _n(p.cash), ":holdings": _amounts_map(p.holdings),
                    ":basis": _amounts_map(p.cost_basis),
                    ":updated": _s(format_time(p.last_updated)), ":version": _n(p.version)}}}
        return (outcome.execution, outcome.portfolio,
                [self._ledger_put(outcome.execution, portfolio.version), guard])

    def _ledger_put(self, execution: Execution, decided_on_version: int) -> dict[str, Any]:
        return {"Put": {"TableName": self.ledger_table,
                        "Item": _ledger_item(execution, decided_on_version),
                        "ConditionExpression": "attribute_not_exists(orderId)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}

    async def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            await self._call("transact_write_items", TransactItems=items)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or [{} for _ in items]
            raise _Cancelled(reasons) from None

    async def _recorded(self, order_id: str) -> Execution:
        recorded = await self.execution(order_id)
        if recorded is None:
            raise RuntimeError(f"ledger entry of {order_id} failed its condition but is absent")
        return recorded

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
