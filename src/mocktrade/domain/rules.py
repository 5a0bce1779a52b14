"""The decisions: may an order be accepted, and what does executing it do.

Both functions are pure; callers bring the portfolio and price they read and
persist whatever comes back. The execution check is repeated at execution
time because the price and the portfolio may have moved since acceptance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .model import ZERO, Execution, ExecutionStatus, Order, Portfolio, Side
from .money import CASH_QUANTUM, MAX_ORDER_QUANTITY, trade_value

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,15}$")


class OrderRejected(Exception):
    """An order that must not be accepted; `field` names the culprit."""

    field: str = "order"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        if field is not None:
            self.field = field


class InvalidOrder(OrderRejected):
    pass


class UnknownSymbol(OrderRejected):
    field = "symbol"


class InsufficientFunds(OrderRejected):
    field = "quantity"


class InsufficientShares(OrderRejected):
    field = "quantity"


def check_quantity(quantity: Decimal) -> None:
    if quantity <= ZERO:
        raise InvalidOrder("quantity must be greater than 0", "quantity")
    if quantity > MAX_ORDER_QUANTITY:
        raise InvalidOrder(f"quantity must be at most {MAX_ORDER_QUANTITY}", "quantity")


def check_symbol(symbol: str, known_symbols: frozenset[str] | set[str] | None) -> None:
    if not SYMBOL_PATTERN.match(symbol):
        raise InvalidOrder("symbol must be 1-16 upper-case letters, digits, '.' or '-'", "symbol")
    if known_symbols is not None and symbol not in known_symbols:
        raise UnknownSymbol(f"unknown symbol {symbol}")


def validate(order: Order, portfolio: Portfolio, price: Decimal,
             known_symbols: frozenset[str] | set[str] | None = None) -> None:
    """Raise an OrderRejected subclass unless the order may be accepted now."""
    check_symbol(order.symbol, known_symbols)
    check_quantity(order.quantity)
    if order.side is Side.BUY:
        cost = trade_value(order.quantity, price)
        if cost > portfolio.cash:
            raise InsufficientFunds(
                f"buying {order.quantity} {order.symbol} at {price} costs {cost}, "
                f"cash available is {portfolio.cash}")
    elif portfolio.shares_of(order.symbol) < order.quantity:
        raise InsufficientShares(
            f"selling {order.quantity} {order.symbol} but only "
            f"{portfolio.shares_of(order.symbol)} held")


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    portfolio: Portfolio
    execution: Execution


def _failed(order: Order, portfolio: Portfolio, status: ExecutionStatus, reason: str,
            now: datetime) -> ExecutionOutcome:
    execution = Execution(order.order_id, order.user_id, order.symbol, order.quantity,
                          order.side, status, None, now, reason, order.order_timestamp)
    return ExecutionOutcome(portfolio, execution)


def execute(order: Order, portfolio: Portfolio, price: Decimal | None,
            now: datetime) -> ExecutionOutcome:
    """Fill a market order at `price`, or fail it; cash and shares move together."""
    if order.user_id != portfolio.user_id:
        raise ValueError("order and portfolio belong to different users")
    if price is None or price <= ZERO:
        return _failed(order, portfolio, ExecutionStatus.FAILED_OTHER,
                       f"no market price for {order.symbol}", now)
    if order.quantity <= ZERO or order.quantity > MAX_ORDER_QUANTITY:
        return _failed(order, portfolio, ExecutionStatus.FAILED_OTHER,
                       f"quantity {order.quantity} out of range", now)
    value = trade_value(order.quantity, price)
    held = portfolio.shares_of(order.symbol)
    basis = portfolio.cost_basis.get(order.symbol, ZERO)
    if order.side is Side.BUY:
        if value > portfolio.cash:
            return _failed(order, portfolio, ExecutionStatus.FAILED_INSUFFICIENT_FUNDS,
                           f"cost {value} exceeds cash {portfolio.cash}", now)
        cash = portfolio.cash - value
        new_held, new_basis = held + order.quantity, basis + value
    else:
        if order.quantity > held:
            return _failed(order, portfolio, ExecutionStatus.FAILED_INSUFFICIENT_SHARES,
                           f"selling {order.quantity} but {held} held", now)
        cash = portfolio.cash + value
        new_held = held - order.quantity
        # Average-cost method: the sold fraction takes its share of the basis.
        new_basis = ZERO if new_held == ZERO else (
            basis - (basis * order.quantity / held).quantize(CASH_QUANTUM))
    holdings = dict(portfolio.holdings)
    cost_basis = dict(portfolio.cost_basis)
    if new_held == ZERO:
        holdings.pop(order.symbol, None)
        cost_basis.pop(order.symbol, None)
    else:
        holdings[order.symbol] = new_held
        cost_basis[order.symbol] = new_basis
    updated = Portfolio(portfolio.user_id, cash, holdings, cost_basis, now, portfolio.version + 1)
    execution = Execution(order.order_id, order.user_id, order.symbol, order.quantity,
                          order.side, ExecutionStatus.EXECUTED, price, now, None,
                          order.order_timestamp)
    return ExecutionOutcome(updated, execution)


def replay_cash(starting_cash: Decimal, executions: list[Execution]) -> tuple[Decimal, dict[str, Decimal]]:
    """Cash and holdings implied by a starting balance plus executed trades."""
    cash = starting_cash
    holdings: dict[str, Decimal] = {}
    for e in executions:
        if not e.executed or e.execution_price is None:
            continue
        value = trade_value(e.quantity, e.execution_price)
        sign = 1 if e.side is Side.BUY else -1
        cash -= sign * value
        holdings[e.symbol] = holdings.get(e.symbol, ZERO) + sign * e.quantity
    return cash, {s: q for s, q in holdings.items() if q != ZERO}
