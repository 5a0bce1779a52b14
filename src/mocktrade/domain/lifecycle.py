"""The order lifecycle: what the portfolio owner does with each instruction.

Every change to a user's cash, shares and reservations is one `Step`,
decided here from the user's portfolio, the order's record and a price, and
written by the portfolio store in one atomic transaction. Instructions come
from the log in order (one owner per user), so a cancel racing a fill is
decided by which one the owner reads first, never by timing.

Fill rules (last-price feed, no partial fills):

* MARKET fills at the current price or fails (it behaves as IOC).
* LIMIT: a buy fills at the first price at or below its limit, a sell at or
  above; one that is marketable on arrival fills at once at the current price.
* STOP: a buy triggers when the price reaches or passes the stop upward (a
  sell, downward) and then fills as a market order at the triggering price.
* STOP_LIMIT: on its trigger it becomes a LIMIT order at its limit price.
* IOC and FOK orders that cannot fill on arrival end EXPIRED; DAY orders end
  EXPIRED at the session close (one that reaches the owner after it, or whose
  triggering tick is from after it, expires instead of filling); GTC orders
  rest until filled or canceled.

Reservations while an order rests: a buy LIMIT or STOP_LIMIT reserves
quantity x limitPrice of cash, a buy STOP quantity x stopPrice (if the price
gaps past the stop, the difference must be in buying power at the fill, or
the order fails FAILED_INSUFFICIENT_FUNDS); every resting sell reserves its
shares. A fill, cancel or expiry releases exactly what the order reserved.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Union

from . import rules
from .model import (ZERO, Execution, ExecutionStatus, Order, OrderType, Portfolio, Side,
                    TimeInForce)
from .money import trade_value


class OrderStatus(str, enum.Enum):
    ACCEPTED = "ACCEPTED"
    OPEN = "OPEN"
    PENDING_CANCEL = "PENDING_CANCEL"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({OrderStatus.EXECUTED, OrderStatus.FAILED, OrderStatus.CANCELED,
                    OrderStatus.EXPIRED})


def status_of(outcome: ExecutionStatus) -> OrderStatus:
    if outcome is ExecutionStatus.EXECUTED:
        return OrderStatus.EXECUTED
    if outcome is ExecutionStatus.CANCELED:
        return OrderStatus.CANCELED
    if outcome is ExecutionStatus.EXPIRED:
        return OrderStatus.EXPIRED
    return OrderStatus.FAILED


@dataclass(frozen=True, slots=True)
class Transition:
    """One status change of an order; `seq` is the user's update number."""

    status: OrderStatus
    at: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class OrderState:
    """The owner's record of one order."""

    order: Order
    status: OrderStatus
    transitions: tuple[Transition, ...]
    reserved_cash: Decimal = ZERO
    reserved_shares: Decimal = ZERO
    stop_triggered: bool = False
    outcome: Execution | None = None  # set once the order is final

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def user_id(self) -> str:
        return self.order.user_id

    @property
    def last_seq(self) -> int:
        return self.transitions[-1].seq

    @property
    def updated_at(self) -> datetime:
        return self.transitions[-1].at

    @property
    def is_open(self) -> bool:
        return self.status is OrderStatus.OPEN

    @property
    def effective_type(self) -> OrderType:
        """A triggered stop-limit rests as a limit order."""
        if self.order.order_type is OrderType.STOP_LIMIT and self.stop_triggered:
            return OrderType.LIMIT
        return self.order.order_type


# -- instructions to the owner ------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlaceOrder:
    order: Order

    @property
    def user_id(self) -> str:
        return self.order.user_id


@dataclass(frozen=True, slots=True)
class CancelOrder:
    user_id: str
    order_id: str
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class TriggerOrder:
    """A tick crossed a resting order (from the trigger job, keyed by symbol)."""

    user_id: str
    order_id: str
    price: Decimal
    tick_time: datetime


@dataclass(frozen=True, slots=True)
class ExpireOrder:
    user_id: str
    order_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ResetAccount:
    user_id: str
    reset_id: str
    cash: Decimal | None  # None: the account's starting cash
    requested_at: datetime


Instruction = Union[PlaceOrder, CancelOrder, TriggerOrder, ExpireOrder, ResetAccount]


@dataclass(frozen=True, slots=True)
class AccountReset:
    """A recorded reset: the portfolio restarts from `cash` after the user's
    first `ledger_length` ledger entries."""

    reset_id: str
    user_id: str
    cash: Decimal
    at: datetime
    ledger_length: int


@dataclass(frozen=True, slots=True)
class Step:
    """What one instruction changed. `portfolio is before` means nothing did."""

    before: Portfolio | None
    portfolio: Portfolio | None
    orders: tuple[OrderState, ...] = ()  # records written (new or changed)
    new_transitions: tuple[tuple[OrderState, Transition], ...] = ()
    outcomes: tuple[Execution, ...] = ()  # ledger entries of orders that became final
    reset: AccountReset | None = None
    replay: bool = False  # seen before: nothing to write, everything to re-emit

    @property
    def writes(self) -> bool:
        return not self.replay and bool(self.orders or self.outcomes or self.reset)


# -- the decisions --------------------------------------------------------------

class _Builder:
    """Accumulates the transitions of one step, numbering them per user."""

    def __init__(self, portfolio: Portfolio, now: datetime):
        self.before = portfolio
        self.portfolio = portfolio
        self.now = now
        self.seq = portfolio.order_seq
        self.orders: dict[str, OrderState] = {}
        self.new: list[tuple[str, Transition]] = []
        self.outcomes: list[Execution] = []

    def transition(self, state: OrderState, status: OrderStatus,
                   at: datetime | None = None, **changes: Any) -> OrderState:
        """`changes`: other fields of the state changed with this transition
        (one dataclasses.replace instead of two: it is in every order's path)."""
        self.seq += 1
        t = Transition(status, at or self.now, self.seq)
        state = replace(state, status=status, transitions=state.transitions + (t,), **changes)
        self.orders[state.order_id] = state
        self.new.append((state.order_id, t))
        return state

    def finish(self, state: OrderState, outcome: Execution) -> OrderState:
        state = self.transition(state, status_of(outcome.status), outcome=outcome,
                                reserved_cash=ZERO, reserved_shares=ZERO)
        self.outcomes.append(outcome)
        return state

    def step(self, reset: AccountReset | None = None) -> Step:
        portfolio = replace(self.portfolio, order_seq=self.seq, version=self.before.version + 1,
                            last_updated=self.now)
        final = {oid: s for oid, s in self.orders.items()}
        return Step(self.before, portfolio, tuple(final.values()),
                    tuple((final[oid], t) for oid, t in self.new), tuple(self.outcomes), reset)


def _closed(order: Order, status: ExecutionStatus, reason: str, now: datetime,
            price: Decimal | None = None) -> Execution:
    return Execution(order.order_id, order.user_id, order.symbol, order.quantity, order.side,
                     status, price, now, reason, order.order_timestamp)


def stop_crossed(order: Order, price: Decimal) -> bool:
    assert order.stop_price is not None
    return price >= order.stop_price if order.side is Side.BUY else price <= order.stop_price


def limit_marketable(order: Order, price: Decimal) -> bool:
    assert order.limit_price is not None
    return price <= order.limit_price if order.side is Side.BUY else price >= order.limit_price


def fill_price_now(order: Order, price: Decimal | None,
                   stop_triggered: bool = False) -> tuple[Decimal | None, bool]:
    """(the price the order fills at now, or None; whether its stop has triggered)."""
    if price is None or price <= ZERO:
        return None, stop_triggered
    kind = order.order_type
    if kind is OrderType.MARKET:
        return price, False
    triggered = stop_triggered
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and not triggered:
        triggered = stop_crossed(order, price)
        if not triggered:
            return None, False
    if kind is OrderType.STOP:
        return price, True
    return (price if limit_marketable(order, price) else None), triggered


def reservation(order: Order) -> tuple[Decimal, Decimal]:
    """(cash, shares) a resting order holds back."""
    if order.side is Side.SELL:
        return ZERO, order.quantity
    bound = order.stop_price if order.order_type is OrderType.STOP else order.limit_price
    assert bound is not None
    return trade_value(order.quantity, bound), ZERO


def _reserve(p: Portfolio, cash: Decimal, symbol: str, shares: Decimal) -> Portfolio:
    if not cash and not shares:
        return p  # nothing held back or released (every market order's fill)
    reserved = dict(p.reserved_shares)
    if shares:
        total = reserved.get(symbol, ZERO) + shares
        if total == ZERO:
            reserved.pop(symbol, None)
        else:
            reserved[symbol] = total
    return replace(p, reserved_cash=p.reserved_cash + cash, reserved_shares=reserved)


def _release(p: Portfolio, state: OrderState) -> Portfolio:
    return _reserve(p, -state.reserved_cash, state.order.symbol, -state.reserved_shares)


def _fill(b: _Builder, state: OrderState, price: Decimal) -> OrderState:
    """Release what the order reserved and execute it at `price`, or fail it."""
    released = _release(b.portfolio, state)
    outcome = rules.execute(state.order, released, price, b.now)
    b.portfolio = outcome.portfolio  # step() sets the version once for the whole step
    return b.finish(state, outcome.execution)


def place(order: Order, portfolio: Portfolio | None, price: Decimal | None,
          now: datetime) -> Step:
    """A new order: fill it, rest it (reserving), expire it, or fail it."""
    if portfolio is None:
        return Step(None, None, outcomes=(_closed(order, ExecutionStatus.FAILED_OTHER,
                                                   f"unknown user {order.user_id}", now),))
    b = _Builder(portfolio, now)
    state = b.transition(OrderState(order, OrderStatus.ACCEPTED, ()), OrderStatus.ACCEPTED,
                         order.order_timestamp)
    fill_at, triggered = fill_price_now(order, price)
    if triggered != state.stop_triggered:
        state = replace(state, stop_triggered=triggered)
    if order.expires_at is not None and order.expires_at <= now:
        # Reached the owner only after its session closed: no fill at an
        # after-close price, whatever it is.
        b.finish(state, _closed(order, ExecutionStatus.EXPIRED, "session closed", now))
    elif fill_at is not None:
        _fill(b, state, fill_at)
    elif order.order_type is OrderType.MARKET:
        b.finish(state, _closed(order, ExecutionStatus.FAILED_OTHER,
                                f"no market price for {order.symbol}", now))
    elif not order.rests:
        at = f" at {price}" if price is not None else ""
        b.finish(state, _closed(order, ExecutionStatus.EXPIRED,
                                f"{order.time_in_force.value} order not marketable{at}", now))
    else:
        cash, shares = reservation(order)
        if cash > portfolio.buying_power:
            b.finish(state, _closed(order, ExecutionStatus.FAILED_INSUFFICIENT_FUNDS,
                                    f"reserving {cash} exceeds buying power "
                                    f"{portfolio.buying_power}", now))
        elif shares > portfolio.available_shares(order.symbol):
            b.finish(state, _closed(order, ExecutionStatus.FAILED_INSUFFICIENT_SHARES,
                                    f"selling {shares} but "
                                    f"{portfolio.available_shares(order.symbol)} available", now))
        else:
            b.portfolio = _reserve(b.portfolio, cash, order.symbol, shares)
            state = replace(state, reserved_cash=cash, reserved_shares=shares)
            b.transition(state, OrderStatus.OPEN)
    return b.step()


def unchanged(portfolio: Portfolio | None) -> Step:
    return Step(portfolio, portfolio)


def cancel(instruction: CancelOrder, portfolio: Portfolio, state: OrderState | None,
           now: datetime) -> Step:
    """An open order is canceled and its reservation released; else nothing changes."""
    if state is None or not state.is_open:
        return unchanged(portfolio)
    b = _Builder(portfolio, now)
    state = b.transition(state, OrderStatus.PENDING_CANCEL, min(instruction.requested_at, now))
    b.portfolio = _release(b.portfolio, state)
    b.finish(state, _closed(state.order, ExecutionStatus.CANCELED, "canceled by the user", now))
    return b.step()


def trigger(instruction: TriggerOrder, portfolio: Portfolio, state: OrderState | None,
            now: datetime) -> Step:
    """A tick crossed the order: fill it, or turn a stop-limit into a limit.

    A trigger that no longer applies (the order closed meanwhile, or the tick
    does not cross it) changes nothing.
    """
    if state is None or not state.is_open:
        return unchanged(portfolio)
    expires = state.order.expires_at
    if expires is not None and instruction.tick_time >= expires:
        # A tick after the session close does not fill a DAY order: it expired.
        return expire(ExpireOrder(instruction.user_id, instruction.order_id, expires),
                      portfolio, state, now)
    fill_at, triggered = fill_price_now(state.order, instruction.price, state.stop_triggered)
    if fill_at is None and triggered == state.stop_triggered:
        return unchanged(portfolio)
    b = _Builder(portfolio, now)
    state = replace(state, stop_triggered=triggered)
    if fill_at is not None:
        _fill(b, state, fill_at)
    else:
        b.transition(state, OrderStatus.OPEN)  # the stop fired; it rests as a limit now
    return b.step()


def expire(instruction: ExpireOrder, portfolio: Portfolio, state: OrderState | None,
           now: datetime) -> Step:
    if (state is None or not state.is_open or state.order.expires_at is None
            or instruction.at < state.order.expires_at):
        return unchanged(portfolio)
    b = _Builder(portfolio, now)
    b.portfolio = _release(b.portfolio, state)
    b.finish(state, _closed(state.order, ExecutionStatus.EXPIRED, "session closed", now))
    return b.step()


def reset(instruction: ResetAccount, portfolio: Portfolio, open_orders: list[OrderState],
          starting_cash: Decimal, ledger_length: int, now: datetime) -> Step:
    """Cancel every open order, then restore cash and empty the holdings."""
    b = _Builder(portfolio, now)
    for state in sorted(open_orders, key=lambda s: s.last_seq):
        if state.is_open:
            b.portfolio = _release(b.portfolio, state)
            b.finish(state, _closed(state.order, ExecutionStatus.CANCELED, "account reset", now))
    cash = starting_cash if instruction.cash is None else instruction.cash
    b.portfolio = replace(b.portfolio, cash=cash, holdings={}, cost_basis={},
                          reserved_cash=ZERO, reserved_shares={})
    record = AccountReset(instruction.reset_id, instruction.user_id, cash, now,
                          ledger_length + len(b.outcomes))
    return b.step(record)


def decide(instruction: Instruction, portfolio: Portfolio | None, state: OrderState | None,
           price: Decimal | None, now: datetime) -> Step:
    """One instruction about one order (resets go through `reset`)."""
    if isinstance(instruction, PlaceOrder):
        return place(instruction.order, portfolio, price, now)
    if portfolio is None:
        return unchanged(None)
    if isinstance(instruction, CancelOrder):
        return cancel(instruction, portfolio, state, now)
    if isinstance(instruction, TriggerOrder):
        return trigger(instruction, portfolio, state, now)
    if isinstance(instruction, ExpireOrder):
        return expire(instruction, portfolio, state, now)
    raise TypeError(f"decide() does not take {type(instruction).__name__}")


def replayed(state: OrderState, portfolio: Portfolio | None) -> Step:
    """An instruction seen before: nothing changes, everything about the order
    is re-emitted (the first emission may have been lost in a crash)."""
    return Step(portfolio, portfolio, new_transitions=tuple((state, t) for t in state.transitions),
                outcomes=(state.outcome,) if state.outcome else (), replay=True)


def reserved_totals(open_orders: list[OrderState]) -> tuple[Decimal, dict[str, Decimal]]:
    """What a portfolio's reservations must equal: the sums over its open orders."""
    cash, shares = ZERO, {}
    for s in open_orders:
        if s.is_open:
            cash += s.reserved_cash
            if s.reserved_shares:
                shares[s.order.symbol] = shares.get(s.order.symbol, ZERO) + s.reserved_shares
    return cash, shares
