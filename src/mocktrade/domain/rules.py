"""The decisions: may an order be accepted, and what does executing it do.

Both functions are pure; callers bring the portfolio and price they read and
persist whatever comes back. The execution check is repeated at execution
time because the price and the portfolio may have moved since acceptance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from decimal import Decimal

from .model import ZERO, Execution, ExecutionStatus, Order, OrderType, Portfolio, Side
from .money import CASH_QUANTUM, MAX_ORDER_QUANTITY, MAX_PRICE, trade_value

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,15}$")
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[\x20-\x7e]{1,64}$")


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


def _check_price(value: Decimal | None, name: str, order_type: OrderType, needed: bool) -> None:
    if needed and value is None:
        raise InvalidOrder(f"{name} is required for {order_type.value} orders", name)
    if not needed and value is not None:
        raise InvalidOrder(f"{name} is not allowed for {order_type.value} orders", name)
    if value is not None and not (ZERO < value <= MAX_PRICE):
        raise InvalidOrder(f"{name} must be greater than 0 and at most {MAX_PRICE}", name)


def check_order_shape(order: Order) -> None:
    """The prices an order type needs, and nothing it does not."""
    kind = order.order_type
    _check_price(order.limit_price, "limitPrice", kind,
                 kind in (OrderType.LIMIT, OrderType.STOP_LIMIT))
    _check_price(order.stop_price, "stopPrice", kind,
                 kind in (OrderType.STOP, OrderType.STOP_LIMIT))
    if order.client_order_id is not None and not CLIENT_ORDER_ID_PATTERN.match(order.client_order_id):
        raise InvalidOrder("clientOrderId must be 1-64 printable ASCII characters", "clientOrderId")


def cost_bound(order: Order, price: Decimal) -> Decimal:
    """The most cash a buy may need: at the market, its limit, or its stop
    (or the market, if that is already past the stop)."""
    if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        assert order.limit_price is not None
        return trade_value(order.quantity, order.limit_price)
    if order.order_type is OrderType.STOP:
        assert order.stop_price is not None
        return trade_value(order.quantity, max(order.stop_price, price))
    return trade_value(order.quantity, price)


def next_session_close(moment: datetime, close: time) -> datetime:
    """The first session close (a UTC time of day) strictly after `moment`."""
    candidate = datetime.combine(moment.date(), close, tzinfo=moment.tzinfo)
    return candidate if candidate > moment else candidate + timedelta(days=1)


def validate(order: Order, portfolio: Portfolio, price: Decimal,
             known_symbols: frozenset[str] | set[str] | None = None) -> None:
    """Raise an OrderRejected subclass unless the order may be accepted now."""
    check_symbol(order.symbol, known_symbols)
    check_quantity(order.quantity)
    check_order_shape(order)
    if order.side is Side.BUY:
        cost = cost_bound(order, price)
        if cost > portfolio.buying_power:
            raise InsufficientFunds(
                f"buying {order.quantity} {order.symbol} needs up to {cost}, "
                f"buying power is {portfolio.buying_power}")
    elif portfolio.available_shares(order.symbol) < order.quantity:
        raise InsufficientShares(
            f"selling {order.quantity} {order.symbol} but only "
            f"{portfolio.available_shares(order.symbol)} available to sell")


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
        if value > portfolio.buying_power:
            return _failed(order, portfolio, ExecutionStatus.FAILED_INSUFFICIENT_FUNDS,
                           f"cost {value} exceeds buying power {portfolio.buying_power}", now)
        cash = portfolio.cash - value
        new_held, new_basis = held + order.quantity, basis + value
    else:
        if order.quantity > portfolio.available_shares(order.symbol):
            return _failed(order, portfolio, ExecutionStatus.FAILED_INSUFFICIENT_SHARES,
                           f"selling {order.quantity} but "
                           f"{portfolio.available_shares(order.symbol)} available", now)
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
    updated = replace(portfolio, cash=cash, holdings=holdings, cost_basis=cost_basis,
                      last_updated=now, version=portfolio.version + 1)
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
