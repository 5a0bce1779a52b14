"""Immutable values of the trading domain."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Mapping

ZERO = Decimal(0)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Side(str, enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class ExecutionStatus(str, enum.Enum):
    """The one final outcome of an order, as trade_executed carries it."""

    EXECUTED = "EXECUTED"
    FAILED_INSUFFICIENT_FUNDS = "FAILED_INSUFFICIENT_FUNDS"
    FAILED_INSUFFICIENT_SHARES = "FAILED_INSUFFICIENT_SHARES"
    FAILED_OTHER = "FAILED_OTHER"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


class OrderType(str, enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class TimeInForce(str, enum.Enum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


def _frozen(mapping: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True, slots=True)
class Order:
    """An order as accepted by the order service; a market order by default.

    `expires_at` is set for DAY orders: the session close after acceptance.
    """

    order_id: str
    user_id: str
    symbol: str
    quantity: Decimal
    side: Side
    order_timestamp: datetime
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    expires_at: datetime | None = None

    @property
    def rests(self) -> bool:
        """Whether the order may wait for the price (else it fills now or never)."""
        return (self.order_type is not OrderType.MARKET
                and self.time_in_force in (TimeInForce.DAY, TimeInForce.GTC))


@dataclass(frozen=True, slots=True)
class Portfolio:
    """A user's cash and shares, and what resting orders hold of them.

    `cost_basis` holds the total cost of each open position (average-cost
    method) so that unrealized P&L can be shown; it moves with `holdings`.
    `reserved_cash` and `reserved_shares` are the sums of what the user's
    open orders reserve; `order_seq` numbers the user's order updates (the
    gapless sequence a reconnecting order stream resumes from).
    """

    user_id: str
    cash: Decimal
    holdings: Mapping[str, Decimal] = field(default_factory=dict)
    cost_basis: Mapping[str, Decimal] = field(default_factory=dict)
    last_updated: datetime = field(default_factory=utc_now)
    version: int = 0
    reserved_cash: Decimal = ZERO
    reserved_shares: Mapping[str, Decimal] = field(default_factory=dict)
    order_seq: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "holdings", _frozen(self.holdings))
        object.__setattr__(self, "cost_basis", _frozen(self.cost_basis))
        object.__setattr__(self, "reserved_shares", _frozen(self.reserved_shares))

    def shares_of(self, symbol: str) -> Decimal:
        return self.holdings.get(symbol, ZERO)

    @property
    def buying_power(self) -> Decimal:
        return self.cash - self.reserved_cash

    def available_shares(self, symbol: str) -> Decimal:
        """Shares that may still be sold: held minus reserved by open sells."""
        return self.shares_of(symbol) - self.reserved_shares.get(symbol, ZERO)


@dataclass(frozen=True, slots=True)
class Execution:
    """The ledger entry for one order: the single outcome it ever has."""

    order_id: str
    user_id: str
    symbol: str
    quantity: Decimal
    side: Side
    status: ExecutionStatus
    execution_price: Decimal | None
    execution_timestamp: datetime
    failure_reason: str | None = None
    order_timestamp: datetime | None = None

    @property
    def executed(self) -> bool:
        return self.status is ExecutionStatus.EXECUTED


@dataclass(frozen=True, slots=True)
class PriceTick:
    symbol: str
    price: Decimal
    timestamp: datetime
