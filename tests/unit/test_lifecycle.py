"""The order lifecycle (domain.lifecycle) as properties.

The fill rules and reservations of the module docstring, case by case and
side by side, and a model test: random interleavings of places, cancels,
ticks (through a TriggerBook), expiries, resets and replays, decided as the
embedded portfolio store decides them, with every invariant checked after
every step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocktrade.domain import lifecycle, rules
from mocktrade.domain.lifecycle import (AccountReset, CancelOrder, ExpireOrder, OrderState,
                                        OrderStatus, PlaceOrder, ResetAccount, Step,
                                        TriggerOrder)
from mocktrade.domain.model import (ZERO, Execution, ExecutionStatus, Order, OrderType,
                                    Portfolio, Side, TimeInForce)
from mocktrade.domain.money import trade_value
from mocktrade.domain.triggers import TriggerBook

T0 = datetime(2026, 1, 5, 19, 0, tzinfo=timezone.utc)
CLOSE = time(20, 0)  # the session closes an hour after T0
SYMBOL = "MOCKAAPL"

# A coarse grid makes prices land exactly on limits and stops; the fine
# decimals exercise rounding of trade values.
GRID = [Decimal(p) for p in ("90", "95", "97.5", "99.99", "100", "100.01", "102.5", "105", "110")]
prices = st.one_of(st.sampled_from(GRID),
                   st.decimals(min_value=Decimal("85"), max_value=Decimal("115"), places=4))
quantities = st.one_of(st.sampled_from([Decimal(q) for q in ("1", "2", "5", "0.5", "3.333333")]),
                       st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("20"),
                                   places=6))
cash_amounts = st.one_of(st.sampled_from([Decimal("0.00"), Decimal("500.00"), Decimal("1000.00")]),
                         st.decimals(min_value=Decimal("0"), max_value=Decimal("5000"), places=2))
held_amounts = st.one_of(st.just(ZERO), st.decimals(min_value=Decimal("0"), max_value=Decimal("25"),
                                                     places=6))


def make_order(oid, user, symbol, side, kind, tif, qty, limit, stop, now) -> Order:
    order = Order(oid, user, symbol, qty, side, now, kind, tif,
                  limit if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
                  stop if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None)
    if order.rests and tif is TimeInForce.DAY:  # as the order service stamps it
        order = replace(order, expires_at=rules.next_session_close(now, CLOSE))
    rules.check_order_shape(order)
    return order


@st.composite
def orders(draw, kinds=tuple(OrderType), tifs=tuple(TimeInForce), sides=tuple(Side),
           oid="o1", user="u1", symbol=SYMBOL, now=T0):
    return make_order(oid, user, symbol, draw(st.sampled_from(sides)),
                      draw(st.sampled_from(kinds)), draw(st.sampled_from(tifs)),
                      draw(quantities), draw(prices), draw(prices), now)


@st.composite
def portfolios(draw, user="u1"):
    """A portfolio, possibly with reservations held by other resting orders."""
    cash, held = draw(cash_amounts), draw(held_amounts)
    reserved_cash = draw(st.decimals(min_value=Decimal("0"), max_value=cash, places=2))
    reserved_shares = draw(st.decimals(min_value=Decimal("0"), max_value=held, places=6))
    return Portfolio(user, cash, {SYMBOL: held} if held else {},
                     {SYMBOL: trade_value(held, Decimal("50"))} if held else {}, T0, 3,
                     reserved_cash, {SYMBOL: reserved_shares} if reserved_shares else {}, 7)


# -- the fill rules, written out case by case -------------------------------------

def buy(order: Order) -> bool:
    return order.side is Side.BUY


def limit_ok(order: Order, price: Decimal) -> bool:
    """A buy limit takes any price at or below it, a sell any at or above."""
    return price <= order.limit_price if buy(order) else price >= order.limit_price


def stop_hit(order: Order, price: Decimal) -> bool:
    """A buy stop fires at or above its stop, a sell stop at or below."""
    return price >= order.stop_price if buy(order) else price <= order.stop_price


def expected_fill(order: Order, price: Decimal | None, triggered: bool) -> tuple[Decimal | None, bool]:
    """(the price the order fills at on this price, whether its stop has fired)."""
    if price is None:
        return None, triggered
    kind = order.order_type
    if kind is OrderType.MARKET:
        return price, False
    if kind is OrderType.LIMIT:
        return (price if limit_ok(order, price) else None), False
    if kind is OrderType.STOP:
        return (price, True) if stop_hit(order, price) else (None, False)
    # STOP_LIMIT: a limit once its stop has fired (maybe by this very price)
    fired = triggered or stop_hit(order, price)
    return (price if fired and limit_ok(order, price) else None), fired


def expected_reservation(order: Order) -> tuple[Decimal, Decimal]:
    if order.side is Side.SELL:
        return ZERO, order.quantity
    if order.order_type is OrderType.STOP:
        return trade_value(order.quantity, order.stop_price), ZERO
    return trade_value(order.quantity, order.limit_price), ZERO


def executed_portfolio(order: Order, p: Portfolio, price: Decimal):
    """(cash, holdings) after a fill at `price`, or None if it cannot be paid for
    (or the shares are not there) once the order's own reservation is released."""
    value = trade_value(order.quantity, price)
    held = p.shares_of(order.symbol)
    if buy(order):
        if value > p.buying_power:
            return None
        return p.cash - value, held + order.quantity
    if order.quantity > p.available_shares(order.symbol):
        return None
    return p.cash + value, held - order.quantity


def expected_place(order: Order, p: Portfolio, price: Decimal | None, now: datetime):
    """(status, execution status or None, fill price or None, stop_triggered)."""
    fill, fired = expected_fill(order, price, False)
    if order.expires_at is not None and order.expires_at <= now:
        return OrderStatus.EXPIRED, ExecutionStatus.EXPIRED, None, fired  # after its close
    if fill is not None:
        if executed_portfolio(order, p, fill) is None:
            failed = (ExecutionStatus.FAILED_INSUFFICIENT_FUNDS if buy(order)
                      else ExecutionStatus.FAILED_INSUFFICIENT_SHARES)
            return OrderStatus.FAILED, failed, None, fired
        return OrderStatus.EXECUTED, ExecutionStatus.EXECUTED, fill, fired
    if order.order_type is OrderType.MARKET:
        return OrderStatus.FAILED, ExecutionStatus.FAILED_OTHER, None, False
    if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
        return OrderStatus.EXPIRED, ExecutionStatus.EXPIRED, None, fired
    if order.expires_at is not None and order.expires_at <= now:
        return OrderStatus.EXPIRED, ExecutionStatus.EXPIRED, None, fired
    cash, shares = expected_reservation(order)
    if cash > p.buying_power:
        return OrderStatus.FAILED, ExecutionStatus.FAILED_INSUFFICIENT_FUNDS, None, fired
    if shares > p.available_shares(order.symbol):
        return OrderStatus.FAILED, ExecutionStatus.FAILED_INSUFFICIENT_SHARES, None, fired
    return OrderStatus.OPEN, None, None, fired


def check_place_step(order: Order, p: Portfolio, price: Decimal | None, now: datetime,
                     step: Step) -> None:
    status, outcome, fill, fired = expected_place(order, p, price, now)
    assert step.before is p and not step.replay and step.writes
    (state,) = step.orders
    assert state.order == order and state.status is status
    assert [t.status for t in state.transitions] == [OrderStatus.ACCEPTED, status]
    assert [t.seq for _, t in step.new_transitions] == [p.order_seq + 1, p.order_seq + 2]
    q = step.portfolio
    assert q.order_seq == p.order_seq + 2
    if status is OrderStatus.OPEN:
        cash, shares = expected_reservation(order)
        assert step.outcomes == () and state.outcome is None
        assert state.stop_triggered is fired
        assert (state.reserved_cash, state.reserved_shares) == (cash, shares)
        assert q.reserved_cash == p.reserved_cash + cash
        assert q.available_shares(order.symbol) == p.available_shares(order.symbol) - shares
        assert (q.cash, dict(q.holdings)) == (p.cash, dict(p.holdings))
        return
    (execution,) = step.outcomes
    assert state.outcome == execution and execution.status is outcome
    assert (state.reserved_cash, state.reserved_shares) == (ZERO, ZERO)
    assert (q.reserved_cash, dict(q.reserved_shares)) == (p.reserved_cash, dict(p.reserved_shares))
    assert execution.execution_price == fill
    if fill is None:
        assert (q.cash, dict(q.holdings)) == (p.cash, dict(p.holdings))
    else:
        cash, held = executed_portfolio(order, p, fill)
        assert q.cash == cash and q.shares_of(order.symbol) == held


# -- placing ----------------------------------------------------------------------

@settings(max_examples=400)
@given(order=orders(), p=portfolios(), price=st.one_of(st.none(), prices))
def test_place_follows_the_fill_rules(order, p, price):
    now = T0 + timedelta(seconds=1)
    check_place_step(order, p, price, now, lifecycle.place(order, p, price, now))


@settings(max_examples=100)
@given(order=orders(kinds=[OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT],
                    tifs=[TimeInForce.DAY]), p=portfolios(), price=st.one_of(st.none(), prices))
def test_a_day_order_arriving_after_its_close_never_rests(order, p, price):
    now = order.expires_at
    step = lifecycle.place(order, p, price, now)
    check_place_step(order, p, price, now, step)
    assert step.orders[0].status is not OrderStatus.OPEN


@pytest.mark.parametrize("side, price, fills", [
    (Side.BUY, "99.99", True), (Side.BUY, "100", True), (Side.BUY, "100.01", False),
    (Side.SELL, "100.01", True), (Side.SELL, "100", True), (Side.SELL, "99.99", False)])
@pytest.mark.parametrize("tif", list(TimeInForce))
def test_limit_on_arrival(side, price, fills, tif):
    p = Portfolio("u1", Decimal("1000.00"), {SYMBOL: Decimal("5")})
    order = make_order("o1", "u1", SYMBOL, side, OrderType.LIMIT, tif, Decimal("2"),
                       Decimal("100"), None, T0)
    step = lifecycle.place(order, p, Decimal(price), T0)
    state = step.orders[0]
    if fills:  # at once, at the current price (not the limit)
        assert state.status is OrderStatus.EXECUTED
        assert step.outcomes[0].execution_price == Decimal(price)
    elif tif in (TimeInForce.IOC, TimeInForce.FOK):
        assert state.status is OrderStatus.EXPIRED
    else:
        assert state.status is OrderStatus.OPEN


def test_market_without_price_fails_other_and_with_price_fills():
    p = Portfolio("u1", Decimal("1000.00"))
    order = make_order("o1", "u1", SYMBOL, Side.BUY, OrderType.MARKET, TimeInForce.GTC,
                       Decimal("2"), None, None, T0)
    failed = lifecycle.place(order, p, None, T0)
    assert failed.outcomes[0].status is ExecutionStatus.FAILED_OTHER
    assert failed.portfolio.cash == p.cash
    filled = lifecycle.place(order, p, Decimal("123.45"), T0)
    assert filled.outcomes[0].executed and filled.portfolio.cash == Decimal("753.10")


# -- triggering a resting order -----------------------------------------------------

def rest(order: Order, p: Portfolio) -> tuple[Portfolio, OrderState]:
    """Place the order with no market price, so that it rests."""
    step = lifecycle.place(order, p, None, T0)
    (state,) = step.orders
    assert state.status is OrderStatus.OPEN
    return step.portfolio, state


def trigger(state: OrderState, p: Portfolio, price: Decimal, now: datetime) -> Step:
    return lifecycle.trigger(TriggerOrder(state.user_id, state.order_id, price, now), p, state, now)


@settings(max_examples=300)
@given(order=orders(kinds=[OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT],
                    tifs=[TimeInForce.DAY, TimeInForce.GTC]),
       cash=st.sampled_from([Decimal("5000.00"), Decimal("2500.00"), Decimal("300.00")]),
       held=st.sampled_from([Decimal("20"), Decimal("5")]),
       ticks=st.lists(prices, min_size=1, max_size=8))
def test_a_resting_order_fills_by_the_rules_and_releases_its_reservation(order, cash, held,
                                                                          ticks):
    """A resting order fills at the first tick that satisfies it, at that tick's
    price; a stop-limit first becomes a limit (still OPEN) and from then on only
    its limit counts; every other tick changes nothing at all."""
    before = Portfolio("u1", cash, {SYMBOL: held}, {}, T0)
    cost, shares = expected_reservation(order)
    if cost > before.buying_power or shares > held:
        return
    p, state = rest(order, before)
    for i, price in enumerate(ticks):
        now = T0 + timedelta(seconds=i + 1)
        fill, fired = expected_fill(order, price, state.stop_triggered)
        step = trigger(state, p, price, now)
        if fill is None and fired == state.stop_triggered:
            assert step.portfolio is p and not step.writes and step.orders == ()
            continue
        assert step.writes and step.portfolio.order_seq == p.order_seq + 1
        (new_state,) = step.orders
        if fill is None:  # a stop-limit's stop fired: it rests on as a limit
            assert order.order_type is OrderType.STOP_LIMIT and fired
            assert new_state.status is OrderStatus.OPEN and new_state.stop_triggered
            assert new_state.effective_type is OrderType.LIMIT
            assert (new_state.reserved_cash, new_state.reserved_shares) == (cost, shares)
            assert step.portfolio.reserved_cash == p.reserved_cash
            assert step.outcomes == ()
            p, state = step.portfolio, new_state
            continue
        # Filled (or failed) at this tick: the reservation is released exactly.
        q = step.portfolio
        assert (q.reserved_cash, dict(q.reserved_shares)) == (ZERO, {})
        after = executed_portfolio(order, before, fill)
        (execution,) = step.outcomes
        if after is None:  # a buy stop that gapped past what buying power covers
            assert order.order_type is OrderType.STOP and buy(order) and fill > order.stop_price
            assert execution.status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
            assert (q.cash, dict(q.holdings)) == (cash, {SYMBOL: held})
        else:
            assert execution.executed and execution.execution_price == fill
            assert (q.cash, q.shares_of(SYMBOL)) == after
        return
    # Still resting: nothing but the reservation moved.
    assert state.status is OrderStatus.OPEN
    assert (p.cash, p.reserved_cash, p.available_shares(SYMBOL)) == (cash, cost, held - shares)


@pytest.mark.parametrize("side, stop, tick, fires", [
    (Side.BUY, "100", "99.99", False), (Side.BUY, "100", "100", True),
    (Side.BUY, "100", "104", True), (Side.SELL, "100", "100.01", False),
    (Side.SELL, "100", "100", True), (Side.SELL, "100", "96", True)])
def test_stop_fires_at_or_past_its_stop_and_fills_at_the_tick(side, stop, tick, fires):
    p, state = rest(make_order("o1", "u1", SYMBOL, side, OrderType.STOP, TimeInForce.GTC,
                               Decimal("2"), None, Decimal(stop), T0),
                    Portfolio("u1", Decimal("1000.00"), {SYMBOL: Decimal("2")}))
    step = trigger(state, p, Decimal(tick), T0)
    if fires:
        assert step.outcomes[0].executed and step.outcomes[0].execution_price == Decimal(tick)
    else:
        assert not step.writes


def test_stop_limit_becomes_a_limit_then_fills_only_within_it():
    p, state = rest(make_order("o1", "u1", SYMBOL, Side.BUY, OrderType.STOP_LIMIT,
                               TimeInForce.GTC, Decimal("2"), Decimal("105"), Decimal("100"), T0),
                    Portfolio("u1", Decimal("1000.00")))
    assert p.reserved_cash == Decimal("210.00")
    assert not trigger(state, p, Decimal("99"), T0).writes  # below the stop: nothing
    fired = trigger(state, p, Decimal("110"), T0)  # the stop fires above the limit
    (state,) = fired.orders
    assert state.status is OrderStatus.OPEN and state.stop_triggered and not fired.outcomes
    p = fired.portfolio
    assert not trigger(state, p, Decimal("106"), T0).writes  # above the limit: rests
    filled = trigger(state, p, Decimal("99"), T0)  # below the stop, within the limit
    assert filled.outcomes[0].execution_price == Decimal("99")
    assert filled.portfolio.cash == Decimal("802.00") and filled.portfolio.reserved_cash == ZERO


def test_a_gapped_buy_stop_needs_the_difference_in_buying_power():
    order = make_order("o1", "u1", SYMBOL, Side.BUY, OrderType.STOP, TimeInForce.GTC,
                       Decimal("2"), None, Decimal("100"), T0)
    p, state = rest(order, Portfolio("u1", Decimal("200.00")))
    assert p.buying_power == ZERO
    step = trigger(state, p, Decimal("100.01"), T0)
    assert step.outcomes[0].status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    assert (step.portfolio.cash, step.portfolio.reserved_cash) == (Decimal("200.00"), ZERO)
    ok = trigger(state, p, Decimal("100"), T0)
    assert ok.outcomes[0].executed and ok.portfolio.cash == ZERO


# -- releasing reservations -----------------------------------------------------------

@settings(max_examples=200)
@given(order=orders(kinds=[OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT],
                    tifs=[TimeInForce.DAY, TimeInForce.GTC]),
       p=portfolios(), how=st.sampled_from(["cancel", "expire", "reset"]))
def test_cancel_expire_and_reset_release_exactly_the_reservation(order, p, how):
    step = lifecycle.place(order, p, None, T0)
    (state,) = step.orders
    if state.status is not OrderStatus.OPEN:
        return
    rested, now = step.portfolio, T0 + timedelta(hours=2)
    if how == "cancel":
        done = lifecycle.cancel(CancelOrder("u1", order.order_id, now), rested, state, now)
        expected = [OrderStatus.PENDING_CANCEL, OrderStatus.CANCELED]
    elif how == "expire":
        if order.expires_at is None:  # GTC never expires
            assert not lifecycle.expire(ExpireOrder("u1", order.order_id, now), rested, state,
                                        now).writes
            return
        early = order.expires_at - timedelta(microseconds=1)
        assert not lifecycle.expire(ExpireOrder("u1", order.order_id, early), rested, state,
                                    now).writes
        done = lifecycle.expire(ExpireOrder("u1", order.order_id, order.expires_at), rested,
                                state, now)
        expected = [OrderStatus.EXPIRED]
    else:
        done = lifecycle.reset(ResetAccount("u1", "r1", None, now), rested, [state],
                               Decimal("42.00"), 3, now)
        assert done.reset == AccountReset("r1", "u1", Decimal("42.00"), now, 4)
        assert done.portfolio.cash == Decimal("42.00") and not done.portfolio.holdings
        expected = [OrderStatus.CANCELED]
    (closed,) = done.orders
    assert [t.status for t in closed.transitions[2:]] == expected
    assert [t.seq for _, t in done.new_transitions] == list(
        range(rested.order_seq + 1, rested.order_seq + 1 + len(expected)))
    assert (closed.reserved_cash, closed.reserved_shares) == (ZERO, ZERO)
    q = done.portfolio
    if how != "reset":
        assert (q.cash, dict(q.holdings)) == (p.cash, dict(p.holdings))
        assert (q.reserved_cash, dict(q.reserved_shares)) == (p.reserved_cash,
                                                              dict(p.reserved_shares))
        # A closed order stays closed: nothing more happens to it.
        again = lifecycle.cancel(CancelOrder("u1", order.order_id, now), q, closed, now)
        assert not again.writes and again.portfolio is q
        assert not trigger(closed, q, Decimal("1"), now).writes
        assert not trigger(closed, q, Decimal("1000"), now).writes


# -- the model test ------------------------------------------------------------------

USERS = {"u1": Decimal("1000.00"), "u2": Decimal("2500.50")}
USER_IDS = ["u1", "u2", "u1", "ghost"]  # "ghost" has no account
SYMBOLS = ["AAA", "BBB"]


class Store:
    """The embedded portfolio store's apply() over dicts: SqlitePortfolioStore
    ._decide, _decide_reset and _write, statement by statement."""

    def __init__(self, accounts: dict[str, Decimal]):
        self.starting = dict(accounts)
        self.portfolios = {u: Portfolio(u, c, {}, {}, T0, 0) for u, c in accounts.items()}
        self.orders: dict[str, OrderState] = {}
        self.ledger: list[Execution] = []
        self.resets: dict[str, tuple[AccountReset, list[str]]] = {}

    def apply(self, instruction, price, now) -> Step:
        step = self.decide(instruction, price, now)
        if step.writes:
            self.write(step)
        return step

    def execution(self, order_id: str) -> Execution | None:
        return next((e for e in self.ledger if e.order_id == order_id), None)

    def decide(self, instruction, price, now) -> Step:
        portfolio = self.portfolios.get(instruction.user_id)
        if isinstance(instruction, ResetAccount):
            return self.decide_reset(instruction, portfolio, now)
        if isinstance(instruction, PlaceOrder):
            known = self.orders.get(instruction.order.order_id)
            if known is not None:
                return lifecycle.replayed(known, portfolio)
            recorded = self.execution(instruction.order.order_id)
            if recorded is not None:
                return Step(portfolio, portfolio, outcomes=(recorded,), replay=True)
            return lifecycle.decide(instruction, portfolio, None, price, now)
        state = self.orders.get(instruction.order_id)
        if state is not None and state.user_id != instruction.user_id:
            state = None
        step = lifecycle.decide(instruction, portfolio, state, price, now)
        if not step.writes and state is not None:
            return lifecycle.replayed(state, portfolio)
        return step

    def decide_reset(self, instruction: ResetAccount, portfolio, now) -> Step:
        seen = self.resets.get(instruction.reset_id)
        if portfolio is None:
            return lifecycle.unchanged(None)
        if seen is not None:
            replays = [lifecycle.replayed(self.orders[oid], portfolio) for oid in seen[1]]
            return Step(portfolio, portfolio,
                        new_transitions=tuple(t for r in replays for t in r.new_transitions),
                        outcomes=tuple(o for r in replays for o in r.outcomes), replay=True)
        open_orders = [s for s in self.orders.values()
                       if s.user_id == instruction.user_id and s.is_open]
        ledger_length = sum(1 for e in self.ledger if e.user_id == instruction.user_id)
        return lifecycle.reset(instruction, portfolio, open_orders,
                               self.starting[instruction.user_id], ledger_length, now)

    def write(self, step: Step) -> None:
        if step.portfolio is not None and step.before is not None:
            stored = self.portfolios[step.portfolio.user_id]
            assert stored.version == step.before.version, "portfolio changed during apply"
            self.portfolios[step.portfolio.user_id] = step.portfolio
        for state in step.orders:
            old = self.orders.get(state.order_id)
            assert old is None or not old.status.final, f"final order {state.order_id} changed"
            self.orders[state.order_id] = state
        for execution in step.outcomes:
            assert self.execution(execution.order_id) is None, "a second outcome"
            self.ledger.append(execution)
        if step.reset is not None:
            self.resets[step.reset.reset_id] = (step.reset, [o.order_id for o in step.outcomes])


def crosses(state: OrderState, price: Decimal | None) -> bool:
    """Whether a tick at `price` would make the owner do something to this order."""
    fill, fired = expected_fill(state.order, price, state.stop_triggered)
    return fill is not None or fired != state.stop_triggered


class World:
    """The owner (Store), the trigger job (TriggerBook) and the command log
    between them, run in one thread."""

    def __init__(self):
        self.store = Store(USERS)
        self.book = TriggerBook()
        self.pending: deque = deque()  # instructions on their way to the owner
        self.history: list = []  # every instruction the owner has decided
        self.prices: dict[str, Decimal] = {}
        self.now = T0
        self.counter = 0

    # the owner ---------------------------------------------------------------

    def owner(self, instruction) -> Step:
        if isinstance(instruction, TriggerOrder):
            price = instruction.price
        elif isinstance(instruction, PlaceOrder):
            price = self.prices.get(instruction.order.symbol)
        else:
            price = None
        snapshot = (dict(self.store.portfolios), dict(self.store.orders))
        step = self.store.apply(instruction, price, self.now)
        self.history.append(instruction)
        self.check_step(instruction, price, step, *snapshot)
        # Every update it publishes reaches the trigger book, in order.
        for state, t in step.new_transitions:
            self.pending.extend(self.book.apply_update(state.order, t.status.value, t.seq,
                                                       state.stop_triggered))
        self.check_invariants()
        return step

    def deliver(self, n: int) -> None:
        for _ in range(min(n, len(self.pending))):
            self.owner(self.pending.popleft())
        if not self.pending:
            self.check_book()

    def drain(self) -> None:
        for _ in range(500):
            if not self.pending:
                break
            self.owner(self.pending.popleft())
        assert not self.pending, "the book and the owner ping-pong proposals forever"
        self.check_book()

    # the checks ----------------------------------------------------------------

    def check_step(self, instruction, price, step: Step, portfolios, orders) -> None:
        before = portfolios.get(instruction.user_id)
        if not step.writes:
            assert step.portfolio is step.before
            assert self.store.portfolios.get(instruction.user_id) is before
            if isinstance(instruction, PlaceOrder) and instruction.order.order_id in orders:
                assert step.replay  # a known order is replayed, never decided again
            return
        if step.portfolio is not None:
            seqs = [t.seq for _, t in step.new_transitions]
            assert seqs == list(range(before.order_seq + 1, step.portfolio.order_seq + 1))
        if isinstance(instruction, PlaceOrder) and before is not None:
            check_place_step(instruction.order, before, price, self.now, step)
        if isinstance(instruction, TriggerOrder):
            state = orders[instruction.order_id]
            fill, fired = expected_fill(state.order, instruction.price, state.stop_triggered)
            assert state.is_open and (fill is not None or fired)
            (new,) = step.orders
            if fill is None:
                assert new.status is OrderStatus.OPEN and new.stop_triggered
            elif step.outcomes[0].executed:
                assert step.outcomes[0].execution_price == fill
        if isinstance(instruction, (CancelOrder, ExpireOrder)):
            assert orders[instruction.order_id].is_open
            (outcome,) = step.outcomes
            assert outcome.status is (ExecutionStatus.CANCELED if isinstance(
                instruction, CancelOrder) else ExecutionStatus.EXPIRED)
        for outcome in step.outcomes:  # a fill always honours the order's prices
            order = self.store.orders[outcome.order_id].order if outcome.order_id in \
                self.store.orders else None
            if outcome.executed and order is not None:
                if order.limit_price is not None:
                    assert limit_ok(order, outcome.execution_price)
                if order.order_type is OrderType.STOP:
                    assert stop_hit(order, outcome.execution_price)

    def check_invariants(self) -> None:
        store = self.store
        by_user: dict[str, list[OrderState]] = {u: [] for u in store.portfolios}
        for oid, state in store.orders.items():
            assert state.order_id == oid
            by_user[state.user_id].append(state)
            statuses = [t.status for t in state.transitions]
            assert statuses[0] is OrderStatus.ACCEPTED and statuses[-1] is state.status
            assert not any(s.final for s in statuses[:-1])  # final is final
            assert state.status is OrderStatus.OPEN or state.status.final
            if state.status.final:
                assert state.outcome is not None and store.execution(oid) == state.outcome
                assert lifecycle.status_of(state.outcome.status) is state.status
                assert (state.reserved_cash, state.reserved_shares) == (ZERO, ZERO)
            else:
                assert state.outcome is None and store.execution(oid) is None
                assert (state.reserved_cash, state.reserved_shares) == \
                    expected_reservation(state.order)
        ids = [e.order_id for e in store.ledger]
        assert len(ids) == len(set(ids))  # at most one outcome per order
        for e in store.ledger:
            assert e.order_id in store.orders or e.user_id not in store.portfolios
        for user, p in store.portfolios.items():
            assert p.cash >= 0 and p.buying_power >= 0
            assert all(q > 0 for q in p.holdings.values())
            symbols = set(p.holdings) | set(p.reserved_shares) | set(SYMBOLS)
            assert all(p.available_shares(s) >= 0 for s in symbols)
            assert all(q > 0 for q in p.reserved_shares.values())
            states = by_user[user]
            cash, shares = lifecycle.reserved_totals(states)
            assert p.reserved_cash == cash and dict(p.reserved_shares) == shares
            seqs = sorted(t.seq for s in states for t in s.transitions)
            assert seqs == list(range(1, p.order_seq + 1))
            ledger = [e for e in store.ledger if e.user_id == user]
            resets = [r for r, _ in store.resets.values() if r.user_id == user]
            start, since = store.starting[user], 0
            if resets:
                last = max(resets, key=lambda r: (r.ledger_length, r.at))  # as resets() sorts
                start, since = last.cash, last.ledger_length
            cash, holdings = rules.replay_cash(start, ledger[since:])
            assert p.cash == cash and dict(p.holdings) == holdings

    def check_book(self) -> None:
        """With nothing in flight, the book holds exactly the open orders, and
        none of them is crossed by the last tick of its symbol (no tick missed)."""
        open_ids = {oid for oid, s in self.store.orders.items() if s.is_open}
        assert len(self.book) == len(open_ids) and all(oid in self.book for oid in open_ids)
        for oid in open_ids:
            state = self.store.orders[oid]
            assert not crosses(state, self.prices.get(state.order.symbol)), oid

    # the operations ------------------------------------------------------------

    def run(self, op) -> None:
        kind, *args = op
        self.now += timedelta(minutes=1)
        if kind == "place":
            user, symbol, side, otype, tif, qty, limit, stop = args
            self.counter += 1
            order = make_order(f"o{self.counter}", user, symbol, side, otype, tif, qty, limit,
                               stop, self.now)
            self.owner(PlaceOrder(order))
        elif kind == "cancel":
            user, ref = args
            oids = sorted(self.store.orders) or ["nope"]
            self.owner(CancelOrder(user, oids[ref % len(oids)], self.now))
        elif kind == "tick":
            symbol, price = args
            self.prices[symbol] = price
            self.pending.extend(self.book.on_tick(symbol, price, self.now))
        elif kind == "deliver":
            self.deliver(args[0])
        elif kind == "advance":
            self.now += timedelta(minutes=args[0])
            self.pending.extend(self.book.due(self.now))
        elif kind == "reset":
            user, cash = args
            self.counter += 1
            self.owner(ResetAccount(user, f"r{self.counter}", cash, self.now))
        elif kind == "replay" and self.history:
            self.owner(self.history[args[0] % len(self.history)])


ops = st.one_of(
    st.tuples(st.just("place"), st.sampled_from(USER_IDS), st.sampled_from(SYMBOLS),
              st.sampled_from(list(Side)), st.sampled_from(list(OrderType)),
              st.sampled_from(list(TimeInForce)),
              st.sampled_from([Decimal(q) for q in ("1", "2", "5", "0.5", "3.333333")]),
              st.sampled_from(GRID), st.sampled_from(GRID)),
    st.tuples(st.just("cancel"), st.sampled_from(USER_IDS), st.integers(0, 1000)),
    st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), prices),
    st.tuples(st.just("deliver"), st.integers(1, 5)),
    st.tuples(st.just("advance"), st.integers(1, 90)),
    st.tuples(st.just("reset"), st.sampled_from(USER_IDS),
              st.sampled_from([None, Decimal("0.00"), Decimal("777.77")])),
    st.tuples(st.just("replay"), st.integers(0, 1000)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, min_size=1, max_size=60))
def test_random_interleavings_keep_every_invariant(script):
    world = World()
    for op in script:
        world.run(op)
    world.drain()
    world.check_invariants()


@pytest.mark.parametrize("race", ["cancel", "replayed place", "replayed trigger"])
def test_a_proposal_for_a_closed_order_is_decided_once_and_not_proposed_again(race):
    """A tick's proposal that reaches the owner after the order closed (a cancel
    won the race, or an instruction is redelivered) is replayed: the owner
    re-emits the order's updates, and the book must not take the re-emitted
    OPEN for news and propose the closed order again (forever)."""
    world = World()
    world.run(("place", "u1", "AAA", Side.BUY, OrderType.LIMIT, TimeInForce.GTC,
               Decimal("2"), Decimal("100"), Decimal("100")))
    (oid,) = world.store.orders
    world.run(("tick", "AAA", Decimal("99")))
    assert [i.order_id for i in world.pending] == [oid]
    if race == "cancel":
        world.run(("cancel", "u1", 0))
        assert world.store.orders[oid].status is OrderStatus.CANCELED
    else:
        world.deliver(1)
        assert world.store.orders[oid].status is OrderStatus.EXECUTED
        world.run(("replay", 0 if race == "replayed place" else 1))
    world.drain()
    assert oid not in world.book
    world.check_invariants()


def test_a_tick_after_the_session_close_expires_a_day_order_instead_of_filling_it():
    close = T0 + timedelta(hours=1)
    order = Order("d1", "u1", "MOCKAAPL", Decimal("1"), Side.BUY, T0, OrderType.LIMIT,
                  TimeInForce.DAY, Decimal("100.0000"), expires_at=close)
    placed = lifecycle.place(order, Portfolio("u1", Decimal("1000.00")), Decimal("120"), T0)
    state = placed.orders[0]
    assert state.status is OrderStatus.OPEN and placed.portfolio.reserved_cash == Decimal("100.00")
    late = TriggerOrder("u1", "d1", Decimal("99"), close + timedelta(seconds=1))
    step = lifecycle.trigger(late, placed.portfolio, state, close + timedelta(seconds=2))
    assert step.orders[0].status is OrderStatus.EXPIRED and step.outcomes[0].execution_price is None
    assert step.portfolio.reserved_cash == 0 and step.portfolio.cash == Decimal("1000.00")
    in_time = TriggerOrder("u1", "d1", Decimal("99"), close - timedelta(seconds=1))
    filled = lifecycle.trigger(in_time, placed.portfolio, state, close + timedelta(seconds=2))
    assert filled.orders[0].status is OrderStatus.EXECUTED  # crossed before the close
