"""The roles a backend plays, as small async protocols.

Services and jobs depend on these only; `bootstrap` picks the adapter behind
each. Every adapter must pass the contract suite in tests/contract/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import AsyncIterator, Literal, Mapping, Protocol, Sequence

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


class EventLog(Protocol):
    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        """Return once the record is durable; the key picks the partition."""

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


class PortfolioStore(Protocol):
    async def create_account(self, user_id: str, cash: Decimal, now: datetime) -> Portfolio:
        """Raise AccountExists if the user is already registered."""

    async def get(self, user_id: str) -> Portfolio | None: ...

    async def apply_execution(self, order: Order, price: Decimal | None,
                              now: datetime) -> Execution:
        """Execute or fail the order in one atomic step, at most once per orderId.

        A second call with the same orderId changes nothing and returns the
        ledger entry written by the first.
        """

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


class IdempotencyStore(Protocol):
    async def lookup(self, user_id: str, key: str) -> IdempotencyRecord | None: ...

    async def reserve(self, user_id: str, key: str, fingerprint: str,
                      order_id: str) -> IdempotencyRecord:
        """Atomically claim the key; return whichever record holds it now."""

    async def mark_published(self, user_id: str, key: str) -> None: ...

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

    async def close(self) -> None: ...
