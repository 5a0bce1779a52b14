"""The roles a backend plays, as small async protocols.

Services and jobs depend on these only; `bootstrap` picks the adapter behind
each. Every adapter must pass the contract suite in tests/contract/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import AsyncIterator, Literal, Mapping, Protocol, Sequence

from .domain.bars import Bar
from .domain.lifecycle import AccountReset, Instruction, OrderState, Step, Transition
from .domain.model import Execution, ExecutionStatus, Order, Portfolio, PriceTick, Side


class DependencyUnavailable(Exception):
    """A backend could not be reached; callers answer 503 and change nothing."""

    def __init__(self, dependency: str, detail: str = ""):
        super().__init__(f"{dependency} is unavailable" + (f": {detail}" if detail else ""))
        self.dependency = dependency


class AccountExists(Exception):
    pass


# -- EventLog ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp: datetime | None = None


def offsets_after(records: Sequence[LogRecord], topic: str) -> dict[int, int]:
    """Per partition, the offset after the highest of `records`: what a commit stores."""
    next_offsets: dict[int, int] = {}
    for record in records:
        if record.topic != topic:
            raise ValueError(f"record of topic {record.topic!r} committed on {topic!r}")
        next_offsets[record.partition] = max(next_offsets.get(record.partition, 0), record.offset + 1)
    return next_offsets


class LogConsumer(Protocol):
    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[LogRecord]:
        """Records after this consumer's position, in partition order; [] on timeout."""

    async def commit(self, records: Sequence[LogRecord]) -> None:
        """Mark everything up to and including these records as processed."""

    async def close(self) -> None: ...


OutgoingRecord = tuple[str, bytes, "Mapping[str, str] | None"]  # key, value, headers


class EventLog(Protocol):
    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        """Return once the record is durable; the key picks the partition."""

    async def publish_many(self, topic: str, records: Sequence[OutgoingRecord]) -> None:
        """Publish a batch; return once all are durable. Each key's records
        keep their order; on failure some of the batch may have been written."""

    def consumer(self, topic: str, group: str,
                 reset: Literal["earliest", "latest"] = "earliest") -> LogConsumer:
        """A member of `group`; it resumes after the group's committed offsets."""

    async def close(self) -> None: ...


# -- PriceCache ----------------------------------------------------------------

class PriceSubscription(Protocol):
    def __aiter__(self) -> AsyncIterator[PriceTick]: ...

    async def aclose(self) -> None: ...


class PriceCache(Protocol):
    async def set_price(self, tick: PriceTick) -> None:
        """Store the latest price of the symbol and publish the update."""

    async def get_price(self, symbol: str) -> PriceTick | None: ...

    async def all_prices(self) -> dict[str, PriceTick]: ...

    def subscribe(self) -> PriceSubscription:
        """Every update published from now on, for all symbols."""

    async def close(self) -> None: ...


# -- PortfolioStore ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    starting_cash: Decimal
    created: datetime


@dataclass(frozen=True, slots=True)
class OrderQuery:
    user_id: str
    open: bool | None = None  # True: OPEN orders only; False: final ones only; None: all
    symbol: str | None = None
    limit: int = 50
    page_token: str | None = None


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[OrderState]
    next_page_token: str | None


@dataclass(frozen=True)
class Application:
    """One instruction for PortfolioStore.apply_many: what apply() takes."""
    instruction: Instruction
    price: Decimal | None
    now: datetime


class PortfolioStore(Protocol):
    """Portfolios, the orders' records and the execution ledger: what the
    portfolio owner (the execution job) writes, one atomic step at a time."""

    async def create_account(self, user_id: str, cash: Decimal, now: datetime,
                             password_hash: str | None = None) -> Portfolio:
        """Raise AccountExists if the user is already registered."""

    async def get(self, user_id: str) -> Portfolio | None: ...

    async def password_hash(self, user_id: str) -> str | None:
        """The account's password hash; None without a password or an account."""

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        """False if there is no such account."""

    async def apply(self, instruction: Instruction, price: Decimal | None,
                    now: datetime) -> Step:
        """Decide the instruction (domain.lifecycle) and write the portfolio,
        the order records and the ledger entries it changes in one atomic step.

        Idempotent: an instruction applied before (same orderId placed, same
        resetId) or one that no longer applies changes nothing, and the step
        returned re-emits what is known of the order, so the caller can
        publish again what a crash may have lost.
        """

    async def apply_many(self, applications: Sequence[Application]) -> list[Step]:
        """apply() for each, in order, one step per application: each decided
        against the state the previous ones left (an orderId placed twice in
        one batch is a replay the second time), with apply()'s idempotency.

        Atomicity is the store's best: one transaction for the whole batch
        where the engine has it across users (SQLite), else one per
        instruction (DynamoDB). Either way a crash leaves a prefix applied,
        and the batch applied again is replays for that prefix.
        """

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        """apply(PlaceOrder(order)) for an order that ends at once (a market
        order): its ledger entry. At most once per orderId; a second call
        returns the entry written by the first.
        """

    async def order(self, order_id: str) -> OrderState | None: ...

    async def order_by_client_id(self, user_id: str, client_order_id: str) -> OrderState | None: ...

    async def orders(self, query: OrderQuery) -> OrderPage:
        """A user's orders, newest first (orderTimestamp, then orderId);
        raise InvalidPageToken."""

    async def open_orders(self) -> list[OrderState]:
        """Every user's OPEN orders (what the trigger job starts from)."""

    async def order_updates(self, user_id: str, after_seq: int,
                            limit: int = 1000) -> list[tuple[OrderState, Transition]]:
        """The user's order transitions numbered after `after_seq`, in order."""

    async def resets(self, user_id: str) -> list[AccountReset]:
        """The user's account resets, oldest first."""

    async def execution(self, order_id: str) -> Execution | None: ...

    async def ledger(self, user_id: str) -> list[Execution]:
        """Every outcome recorded for the user, oldest first."""

    async def accounts(self) -> list[Account]: ...

    async def close(self) -> None: ...


# -- IdempotencyStore ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    order_id: str
    fingerprint: str
    published: bool
    decline: str | None = None  # a remembered business decline (JSON), replayed on retry


class IdempotencyStore(Protocol):
    async def lookup(self, user_id: str, key: str) -> IdempotencyRecord | None: ...

    async def reserve(self, user_id: str, key: str, fingerprint: str,
                      order_id: str) -> IdempotencyRecord:
        """Atomically claim the key; return whichever record holds it now."""

    async def mark_published(self, user_id: str, key: str) -> None: ...

    async def remember_decline(self, user_id: str, key: str, decline: str) -> None:
        """Record that the key's request was declined (402/422) and how."""

    async def close(self) -> None: ...


# -- TradeHistory --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TradeQuery:
    user_id: str
    symbol: str | None = None
    status: ExecutionStatus | None = None
    side: Side | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    limit: int = 50
    page_token: str | None = None


@dataclass(frozen=True, slots=True)
class TradePage:
    trades: list[Execution]
    total_count: int
    next_page_token: str | None


class InvalidPageToken(ValueError):
    pass


class TradeHistory(Protocol):
    async def index(self, executions: Sequence[Execution]) -> None:
        """Store trades; the orderId is the identity, so re-indexing is harmless."""

    async def search(self, query: TradeQuery) -> TradePage:
        """Newest first (executionTimestamp, then orderId); raise InvalidPageToken."""

    async def close(self) -> None: ...


# -- Analytics -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SymbolVolume:
    symbol: str
    volume: Decimal
    trade_count: int
    notional: Decimal


class Analytics(Protocol):
    async def record(self, executions: Sequence[Execution]) -> None:
        """Store trades (all statuses); a trade recorded twice counts once."""

    async def volume(self, since: datetime, until: datetime,
                     symbol: str | None = None) -> list[SymbolVolume]:
        """Executed share volume per symbol in [since, until), by symbol."""

    async def record_ticks(self, ticks: Sequence[PriceTick]) -> None:
        """Store feed ticks; a tick (symbol, feed time) recorded twice counts once."""

    async def bars(self, symbol: str, timeframe: str, since: datetime | None,
                   until: datetime, limit: int) -> list[Bar]:
        """Bars of `timeframe` (domain.bars.TIMEFRAMES) opening in [since, until),
        oldest first: the first `limit` of them, or with since=None the newest
        `limit`. Prices from the ticks, volume from the executed trades."""

    async def close(self) -> None: ...
