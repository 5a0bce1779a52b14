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
    EXECUTED = "EXECUTED"
    FAILED_INSUFFICIENT_FUNDS = "FAILED_INSUFFICIENT_FUNDS"
    FAILED_INSUFFICIENT_SHARES = "FAILED_INSUFFICIENT_SHARES"
    FAILED_OTHER = "FAILED_OTHER"


def _frozen(mapping: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True, slots=True)
class Order:
    """A market order as accepted by the order service."""

    order_id: str
    user_id: str
    symbol: str
    quantity: Decimal
    side: Side
    order_timestamp: datetime


@dataclass(frozen=True, slots=True)
class Portfolio:
    """A user's cash and shares.

    `cost_basis` holds the total cost of each open position (average-cost
    method) so that unrealized P&L can be shown; it moves with `holdings`.
    """

    user_id: str
    cash: Decimal
    holdings: Mapping[str, Decimal] = field(default_factory=dict)
    cost_basis: Mapping[str, Decimal] = field(default_factory=dict)
    last_updated: datetime = field(default_factory=utc_now)
    version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "holdings", _frozen(self.holdings))
        object.__setattr__(self, "cost_basis", _frozen(self.cost_basis))

    def shares_of(self, symbol: str) -> Decimal:
        return self.holdings.get(symbol, ZERO)


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
