"""PortfolioStore contract: accounts, apply_execution as the atomic,
at-most-once step behind the exactly-once pipeline, and apply: the order
lifecycle (resting orders and their reservations, cancels, triggers, expiry,
account resets) with its order records and gapless order updates."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from mocktrade.domain import lifecycle
from mocktrade.domain.lifecycle import (AccountReset, CancelOrder, ExpireOrder, OrderStatus,
                                        PlaceOrder, ResetAccount, Step, TriggerOrder,
                                        reserved_totals)
from mocktrade.domain.model import ExecutionStatus, Order, OrderType, Side, TimeInForce
from mocktrade.domain.money import trade_value
from mocktrade.domain.rules import replay_cash
from mocktrade.ports import AccountExists, Application, InvalidPageToken, OrderQuery

T0 = datetime(2025, 4, 1, 9, 30, tzinfo=timezone.utc)
CHILD = Path(__file__).with_name("_child.py")


def order(order_id: str, side: Side, quantity: str, symbol: str = "MOCKAAPL",
          user: str = "alice") -> Order:
    return Order(order_id, user, symbol, Decimal(quantity), side, T0)


async def assert_replays_to_portfolio(store, user: str) -> None:
    """The portfolio equals its starting state plus its executed trades."""
    starting = next(a.starting_cash for a in await store.accounts() if a.user_id == user)
    cash, holdings = replay_cash(starting, await store.ledger(user))
    portfolio = await store.get(user)
    assert portfolio.cash == cash and dict(portfolio.holdings) == holdings
    assert portfolio.cash >= 0 and all(q > 0 for q in portfolio.holdings.values())


async def test_created_account_starts_with_cash_only(portfolio_store):
    created = await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    assert (created.user_id, created.cash, dict(created.holdings)) == ("alice", Decimal("10000.00"), {})

    stored = await portfolio_store.get("alice")
    assert stored == created
    assert str(stored.cash) == "10000.00"
    assert stored.last_updated == T0
    [account] = await portfolio_store.accounts()
    assert (account.user_id, account.starting_cash, account.created) == ("alice", Decimal("10000.00"), T0)


async def test_an_account_is_created_once(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    with pytest.raises(AccountExists):
        await portfolio_store.create_account("alice", Decimal("5.00"), T0)
    assert (await portfolio_store.get("alice")).cash == Decimal("10000.00")
    assert len(await portfolio_store.accounts()) == 1


async def test_unknown_user_has_no_portfolio(portfolio_store):
    assert await portfolio_store.get("nobody") is None
    assert await portfolio_store.ledger("nobody") == []
    assert await portfolio_store.execution("no-such-order") is None


async def test_buy_then_sell_move_cash_and_shares_together(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    at = T0 + timedelta(minutes=1)
    bought = await portfolio_store.apply_execution(order("o1", Side.BUY, "10.5"), Decimal("100.0050"), at)

    assert bought.status is ExecutionStatus.EXECUTED
    assert (bought.execution_price, bought.execution_timestamp) == (Decimal("100.0050"), at)
    portfolio = await portfolio_store.get("alice")
    assert portfolio.cash == Decimal("10000.00") - trade_value(Decimal("10.5"), Decimal("100.0050"))
    assert dict(portfolio.holdings) == {"MOCKAAPL": Decimal("10.5")}
    assert portfolio.version == 1 and portfolio.last_updated == at

    sold = await portfolio_store.apply_execution(order("o2", Side.SELL, "10.5"), Decimal("110"), at)
    assert sold.status is ExecutionStatus.EXECUTED
    portfolio = await portfolio_store.get("alice")
    assert dict(portfolio.holdings) == {} and portfolio.version == 2
    assert await portfolio_store.execution("o1") == bought
    assert await portfolio_store.ledger("alice") == [bought, sold]
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_the_same_order_applied_twice_changes_the_portfolio_once(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    first = await portfolio_store.apply_execution(order("o1", Side.BUY, "2"), Decimal("100"), T0)
    after_first = await portfolio_store.get("alice")

    # A replay at another price and time still returns the first outcome.
    replay = await portfolio_store.apply_execution(
        order("o1", Side.BUY, "2"), Decimal("50"), T0 + timedelta(hours=1))
    assert replay == first
    assert await portfolio_store.get("alice") == after_first
    assert await portfolio_store.ledger("alice") == [first]


async def test_a_failed_order_is_recorded_once_and_changes_nothing(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("100.00"), T0)
    failed = await portfolio_store.apply_execution(order("o1", Side.BUY, "2"), Decimal("60"), T0)
    assert failed.status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    assert failed.execution_price is None and failed.failure_reason

    await portfolio_store.create_account("bob", Decimal("1000000.00"), T0)
    # Even if cash arrived meanwhile, the recorded outcome of o1 stands.
    assert await portfolio_store.apply_execution(order("o1", Side.BUY, "2"), Decimal("1"), T0) == failed
    portfolio = await portfolio_store.get("alice")
    # Cash stays; the version counts the step that recorded the failed order.
    assert portfolio.cash == Decimal("100.00") and portfolio.version == 1


async def test_selling_more_than_held_fails(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    await portfolio_store.apply_execution(order("o1", Side.BUY, "3"), Decimal("10"), T0)
    failed = await portfolio_store.apply_execution(order("o2", Side.SELL, "3.000001"), Decimal("10"), T0)
    assert failed.status is ExecutionStatus.FAILED_INSUFFICIENT_SHARES
    nothing = await portfolio_store.apply_execution(
        order("o3", Side.SELL, "1", symbol="MOCKKO"), Decimal("10"), T0)
    assert nothing.status is ExecutionStatus.FAILED_INSUFFICIENT_SHARES
    assert dict((await portfolio_store.get("alice")).holdings) == {"MOCKAAPL": Decimal("3")}


async def test_no_price_fails_the_order(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    failed = await portfolio_store.apply_execution(order("o1", Side.BUY, "1"), None, T0)
    assert failed.status is ExecutionStatus.FAILED_OTHER
    assert (await portfolio_store.get("alice")).cash == Decimal("1000.00")


async def test_an_order_of_an_unknown_user_fails_and_is_recorded(portfolio_store):
    failed = await portfolio_store.apply_execution(order("o1", Side.BUY, "1", user="ghost"),
                                                   Decimal("10"), T0)
    assert failed.status is ExecutionStatus.FAILED_OTHER
    assert "ghost" in failed.failure_reason
    assert await portfolio_store.execution("o1") == failed
    assert await portfolio_store.get("ghost") is None


async def test_concurrent_buys_never_overdraw(portfolio_store):
    # Cash for exactly 50 of the 200 one-share buys at 20.00.
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    outcomes = await asyncio.gather(*(
        portfolio_store.apply_execution(order(f"o{i}", Side.BUY, "1"), Decimal("20"), T0)
        for i in range(200)))
    statuses = Counter(e.status for e in outcomes)
    assert statuses == {ExecutionStatus.EXECUTED: 50, ExecutionStatus.FAILED_INSUFFICIENT_FUNDS: 150}
    portfolio = await portfolio_store.get("alice")
    assert portfolio.cash == Decimal("0.00") and dict(portfolio.holdings) == {"MOCKAAPL": Decimal(50)}
    assert portfolio.version == 200  # one step per order, executed or failed
    assert len(await portfolio_store.ledger("alice")) == 200
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_concurrent_sells_and_replays_never_oversell(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    await portfolio_store.apply_execution(order("seed", Side.BUY, "10"), Decimal("10"), T0)
    # 30 distinct sells, each delivered three times concurrently.
    sells = [order(f"s{i % 30}", Side.SELL, "1") for i in range(90)]
    outcomes = await asyncio.gather(*(
        portfolio_store.apply_execution(o, Decimal("10"), T0) for o in sells))
    by_order = {}
    for o, outcome in zip(sells, outcomes):
        assert by_order.setdefault(o.order_id, outcome) == outcome, "one outcome per order"
    executed = [e for e in by_order.values() if e.executed]
    assert len(executed) == 10
    assert dict((await portfolio_store.get("alice")).holdings) == {}
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_state_survives_reopening(open_portfolio_store):
    store = await open_portfolio_store()
    await store.create_account("alice", Decimal("5000.00"), T0)
    await store.create_account("bob", Decimal("1.00"), T0)
    await store.apply_execution(order("o1", Side.BUY, "7.25"), Decimal("123.4567"), T0)
    await store.apply_execution(order("o2", Side.SELL, "0.25"), Decimal("130"), T0)
    await store.apply_execution(order("o3", Side.BUY, "1", user="bob"), Decimal("2"), T0)
    portfolio, ledger = await store.get("alice"), await store.ledger("alice")
    await store.close()

    reopened = await open_portfolio_store()
    assert await reopened.get("alice") == portfolio
    assert await reopened.ledger("alice") == ledger
    assert [a.user_id for a in await reopened.accounts()] == ["alice", "bob"]
    assert (await reopened.execution("o3")).status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    # A replay after the restart is still recognised.
    assert await reopened.apply_execution(order("o1", Side.BUY, "7.25"), Decimal("1"), T0) == ledger[0]
    await assert_replays_to_portfolio(reopened, "alice")


async def test_processes_sharing_the_store_never_overdraw(open_portfolio_store):
    # Three processes race to apply the same 600 one-share buys, each in its
    # own order; cash covers 400. Every order ends with one outcome everywhere.
    store = await open_portfolio_store()
    await store.create_account("alice", Decimal("8000.00"), T0)
    start_at = time.time() + 1.5
    children = [subprocess.Popen(
        [sys.executable, str(CHILD), "buy", open_portfolio_store.backend.target,
         open_portfolio_store.location, "alice", "MOCKAAPL", "20", "600", str(seed), str(start_at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(3)]
    reports = []
    for child in children:
        # A bound, not a speed goal: the DynamoDB-API engine serialises requests.
        out, err = await asyncio.to_thread(child.communicate, timeout=300)
        assert child.returncode == 0, err
        reports.append(dict(line.split() for line in out.splitlines()))

    assert all(report == reports[0] for report in reports), "one outcome per order everywhere"
    assert Counter(reports[0].values()) == {"EXECUTED": 400, "FAILED_INSUFFICIENT_FUNDS": 200}
    portfolio = await store.get("alice")
    assert portfolio.cash == Decimal("0.00") and dict(portfolio.holdings) == {"MOCKAAPL": Decimal(400)}
    assert len(await store.ledger("alice")) == 600
    await assert_replays_to_portfolio(store, "alice")


# -- the order lifecycle: resting orders, cancels, triggers, expiry, resets ------------

LATER = T0 + timedelta(minutes=5)
CLOSE = T0 + timedelta(hours=6, minutes=30)


def resting(order_id: str, side: Side, quantity: str, limit: str | None = None, *,
            stop: str | None = None, kind: OrderType = OrderType.LIMIT,
            tif: TimeInForce = TimeInForce.GTC, symbol: str = "MOCKAAPL", user: str = "alice",
            at: datetime = T0, client_order_id: str | None = None) -> Order:
    return Order(order_id, user, symbol, Decimal(quantity), side, at, kind, tif,
                 Decimal(limit) if limit is not None else None,
                 Decimal(stop) if stop is not None else None, client_order_id,
                 CLOSE if tif is TimeInForce.DAY else None)


async def place(store, order: Order, price: str | None = "60", now: datetime = T0) -> Step:
    return await store.apply(PlaceOrder(order), Decimal(price) if price else None, now)


async def assert_reservations_match_open_orders(store, user: str = "alice") -> None:
    """What the portfolio holds back is exactly what its open orders reserve."""
    portfolio = await store.get(user)
    mine = [s for s in await store.open_orders() if s.user_id == user]
    cash, shares = reserved_totals(mine)
    assert portfolio.reserved_cash == cash and dict(portfolio.reserved_shares) == shares
    assert portfolio.buying_power >= 0
    assert all(portfolio.available_shares(s) >= 0 for s in portfolio.reserved_shares)


async def test_a_resting_limit_buy_reserves_its_cash_and_is_open(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    step = await place(portfolio_store, resting("L1", Side.BUY, "10", "50.25"), "60")

    assert not step.replay and step.outcomes == ()
    [state] = step.orders
    assert state.status is OrderStatus.OPEN and state.reserved_cash == Decimal("502.50")
    assert [(t.status, t.seq) for _, t in step.new_transitions] == [
        (OrderStatus.ACCEPTED, 1), (OrderStatus.OPEN, 2)]
    portfolio = await portfolio_store.get("alice")
    assert portfolio == step.portfolio
    assert (portfolio.cash, portfolio.reserved_cash, portfolio.buying_power) == (
        Decimal("10000.00"), Decimal("502.50"), Decimal("9497.50"))
    assert (portfolio.version, portfolio.order_seq) == (1, 2)

    assert await portfolio_store.order("L1") == state
    assert (await portfolio_store.orders(OrderQuery("alice"))).orders == [state]
    assert (await portfolio_store.orders(OrderQuery("alice", open=True))).orders == [state]
    assert (await portfolio_store.orders(OrderQuery("alice", open=False))).orders == []
    assert await portfolio_store.open_orders() == [state]
    assert await portfolio_store.ledger("alice") == []
    await assert_reservations_match_open_orders(portfolio_store)


async def test_a_resting_sell_reserves_its_shares(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await portfolio_store.apply_execution(order("m1", Side.BUY, "10"), Decimal("100"), T0)
    step = await place(portfolio_store, resting("S1", Side.SELL, "4", "120"), "100")
    assert step.orders[0].status is OrderStatus.OPEN and step.orders[0].reserved_shares == 4
    portfolio = await portfolio_store.get("alice")
    assert dict(portfolio.reserved_shares) == {"MOCKAAPL": Decimal(4)}
    assert portfolio.available_shares("MOCKAAPL") == Decimal(6)
    # Reserved shares cannot be sold again.
    failed = await portfolio_store.apply_execution(order("m2", Side.SELL, "7"), Decimal("100"), T0)
    assert failed.status is ExecutionStatus.FAILED_INSUFFICIENT_SHARES
    await assert_reservations_match_open_orders(portfolio_store)


async def test_a_trigger_fills_at_its_price_and_releases_the_reservation(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    step = await portfolio_store.apply(TriggerOrder("alice", "L1", Decimal("49.50"), LATER),
                                       None, LATER)

    assert not step.replay
    [fill] = step.outcomes
    assert (fill.status, fill.execution_price, fill.execution_timestamp) == (
        ExecutionStatus.EXECUTED, Decimal("49.50"), LATER)
    portfolio = await portfolio_store.get("alice")
    assert portfolio.cash == Decimal("10000.00") - Decimal("495.00")
    assert dict(portfolio.holdings) == {"MOCKAAPL": Decimal(10)}
    assert portfolio.reserved_cash == 0 and dict(portfolio.reserved_shares) == {}
    assert (portfolio.version, portfolio.order_seq) == (2, 3)
    state = await portfolio_store.order("L1")
    assert state.status is OrderStatus.EXECUTED and state.outcome == fill
    assert state.reserved_cash == 0
    assert await portfolio_store.ledger("alice") == [fill]
    assert await portfolio_store.execution("L1") == fill
    assert await portfolio_store.open_orders() == []
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_a_trigger_that_does_not_cross_changes_nothing(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    before = await portfolio_store.get("alice")
    step = await portfolio_store.apply(TriggerOrder("alice", "L1", Decimal("50.01"), LATER),
                                       None, LATER)
    assert step.outcomes == () and await portfolio_store.get("alice") == before
    assert (await portfolio_store.order("L1")).is_open


async def test_a_stop_limit_trigger_turns_it_into_a_resting_limit(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("SL", Side.BUY, "2", "105", stop="104",
                                         kind=OrderType.STOP_LIMIT), "100")
    step = await portfolio_store.apply(TriggerOrder("alice", "SL", Decimal("106"), LATER),
                                       None, LATER)
    assert step.outcomes == () and not step.replay
    state = await portfolio_store.order("SL")
    assert state.is_open and state.stop_triggered
    assert [t.status for t in state.transitions] == [OrderStatus.ACCEPTED, OrderStatus.OPEN,
                                                     OrderStatus.OPEN]
    step = await portfolio_store.apply(TriggerOrder("alice", "SL", Decimal("104.5"), LATER),
                                       None, LATER)
    assert step.outcomes[0].execution_price == Decimal("104.5")
    assert (await portfolio_store.get("alice")).reserved_cash == 0
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_cancel_of_an_open_order_cancels_it_and_releases(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    step = await portfolio_store.apply(CancelOrder("alice", "L1", LATER), None, LATER)

    [canceled] = step.outcomes
    assert canceled.status is ExecutionStatus.CANCELED and canceled.execution_price is None
    state = await portfolio_store.order("L1")
    assert state.status is OrderStatus.CANCELED and state.outcome == canceled
    assert [(t.status, t.seq) for t in state.transitions] == [
        (OrderStatus.ACCEPTED, 1), (OrderStatus.OPEN, 2), (OrderStatus.PENDING_CANCEL, 3),
        (OrderStatus.CANCELED, 4)]
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, portfolio.reserved_cash, portfolio.order_seq) == (
        Decimal("10000.00"), 0, 4)
    assert await portfolio_store.ledger("alice") == [canceled]
    assert await portfolio_store.open_orders() == []
    assert (await portfolio_store.orders(OrderQuery("alice", open=False))).orders == [state]


async def test_a_cancel_after_a_fill_and_a_fill_after_a_cancel_change_nothing(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    await place(portfolio_store, resting("L2", Side.BUY, "10", "50"), "60")
    await portfolio_store.apply(TriggerOrder("alice", "L1", Decimal("50"), LATER), None, LATER)
    await portfolio_store.apply(CancelOrder("alice", "L2", LATER), None, LATER)
    portfolio, ledger = await portfolio_store.get("alice"), await portfolio_store.ledger("alice")
    filled, canceled = await portfolio_store.order("L1"), await portfolio_store.order("L2")

    late_cancel = await portfolio_store.apply(CancelOrder("alice", "L1", LATER), None, LATER)
    late_fill = await portfolio_store.apply(TriggerOrder("alice", "L2", Decimal("40"), LATER),
                                            None, LATER)
    assert late_cancel.replay and late_fill.replay
    # What they hand back is the order as it is, to re-emit.
    assert late_cancel.outcomes == (filled.outcome,) and late_fill.outcomes == (canceled.outcome,)
    assert await portfolio_store.get("alice") == portfolio
    assert await portfolio_store.ledger("alice") == ledger
    assert (await portfolio_store.order("L1"), await portfolio_store.order("L2")) == (filled, canceled)


async def test_instructions_about_unknown_or_foreign_orders_change_nothing(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await portfolio_store.create_account("bob", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    alice = await portfolio_store.get("alice")
    for instruction in (CancelOrder("bob", "L1", LATER), CancelOrder("alice", "nope", LATER),
                        TriggerOrder("bob", "L1", Decimal("1"), LATER),
                        ExpireOrder("ghost", "L1", CLOSE)):
        step = await portfolio_store.apply(instruction, None, LATER)
        assert step.outcomes == () and step.orders == ()
    assert await portfolio_store.get("alice") == alice
    assert (await portfolio_store.get("bob")).version == 0
    assert (await portfolio_store.order("L1")).is_open


async def test_replayed_instructions_change_nothing_and_re_emit(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    placed = await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    await place(portfolio_store, resting("L2", Side.BUY, "1", "50"), "60")
    cancel = CancelOrder("alice", "L1", LATER)
    trigger = TriggerOrder("alice", "L2", Decimal("45"), LATER)
    canceled = await portfolio_store.apply(cancel, None, LATER)
    filled = await portfolio_store.apply(trigger, None, LATER)
    portfolio, ledger = await portfolio_store.get("alice"), await portfolio_store.ledger("alice")
    l1 = await portfolio_store.order("L1")

    again = await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "40", LATER)
    assert again.replay and not again.writes
    assert again.new_transitions == tuple((l1, t) for t in l1.transitions)
    assert again.outcomes == canceled.outcomes
    for instruction, first in ((cancel, canceled), (trigger, filled)):
        step = await portfolio_store.apply(instruction, None, LATER + timedelta(minutes=1))
        assert step.replay and step.outcomes == first.outcomes
        assert step.portfolio == portfolio
    assert await portfolio_store.get("alice") == portfolio
    assert await portfolio_store.ledger("alice") == ledger
    assert placed.orders[0].transitions == l1.transitions[:2]


async def test_a_day_order_expires_at_the_session_close(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("D1", Side.BUY, "10", "50", tif=TimeInForce.DAY), "60")
    early = await portfolio_store.apply(ExpireOrder("alice", "D1", CLOSE - timedelta(seconds=1)),
                                        None, CLOSE - timedelta(seconds=1))
    assert early.outcomes == () and (await portfolio_store.order("D1")).is_open

    step = await portfolio_store.apply(ExpireOrder("alice", "D1", CLOSE), None, CLOSE)
    [expired] = step.outcomes
    assert expired.status is ExecutionStatus.EXPIRED
    assert (await portfolio_store.order("D1")).status is OrderStatus.EXPIRED
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, portfolio.reserved_cash) == (Decimal("10000.00"), 0)
    # A GTC order has no session close.
    await place(portfolio_store, resting("G1", Side.BUY, "1", "50"), "60")
    step = await portfolio_store.apply(ExpireOrder("alice", "G1", CLOSE), None, CLOSE)
    assert step.outcomes == () and (await portfolio_store.order("G1")).is_open


async def test_orders_that_cannot_rest_end_at_once(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("100.00"), T0)
    ioc = await place(portfolio_store, resting("I1", Side.BUY, "1", "50", tif=TimeInForce.IOC), "60")
    assert ioc.outcomes[0].status is ExecutionStatus.EXPIRED
    poor = await place(portfolio_store, resting("P1", Side.BUY, "10", "50"), "60")
    assert poor.outcomes[0].status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    marketable = await place(portfolio_store, resting("M1", Side.BUY, "1", "70"), "60")
    assert marketable.outcomes[0].execution_price == Decimal("60")
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, portfolio.reserved_cash, portfolio.version) == (Decimal("40.00"), 0, 3)
    # One orderTimestamp: newest first falls back to the orderId, descending.
    assert [(s.order_id, s.status) for s in (await portfolio_store.orders(OrderQuery("alice"))).orders] == [
        ("P1", OrderStatus.FAILED), ("M1", OrderStatus.EXECUTED), ("I1", OrderStatus.EXPIRED)]
    assert len(await portfolio_store.ledger("alice")) == 3


async def test_a_reset_cancels_open_orders_and_restores_cash_once(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await portfolio_store.apply_execution(order("m1", Side.BUY, "10"), Decimal("100"), T0)
    await place(portfolio_store, resting("B1", Side.BUY, "5", "90"), "100")
    await place(portfolio_store, resting("S1", Side.SELL, "4", "120"), "100")
    reset = ResetAccount("alice", "r1", None, LATER)
    step = await portfolio_store.apply(reset, None, LATER)

    assert not step.replay
    assert [(o.order_id, o.status) for o in step.outcomes] == [
        ("B1", ExecutionStatus.CANCELED), ("S1", ExecutionStatus.CANCELED)]
    assert step.reset == AccountReset("r1", "alice", Decimal("10000.00"), LATER, 3)
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, dict(portfolio.holdings), dict(portfolio.cost_basis)) == (
        Decimal("10000.00"), {}, {})
    assert (portfolio.reserved_cash, dict(portfolio.reserved_shares)) == (0, {})
    assert portfolio == step.portfolio
    assert await portfolio_store.open_orders() == []
    assert {(await portfolio_store.order(o)).status for o in ("B1", "S1")} == {OrderStatus.CANCELED}
    assert await portfolio_store.resets("alice") == [step.reset]
    ledger = await portfolio_store.ledger("alice")
    assert [e.order_id for e in ledger] == ["m1", "B1", "S1"]

    replay = await portfolio_store.apply(reset, None, LATER + timedelta(hours=1))
    assert replay.replay and replay.outcomes == step.outcomes
    assert await portfolio_store.get("alice") == portfolio
    assert await portfolio_store.resets("alice") == [step.reset]
    assert await portfolio_store.ledger("alice") == ledger

    # A second reset, to a given amount, after more trading.
    await portfolio_store.apply_execution(order("m2", Side.BUY, "1"), Decimal("100"), LATER)
    second = await portfolio_store.apply(ResetAccount("alice", "r2", Decimal("2500.00"), CLOSE),
                                         None, CLOSE)
    assert second.outcomes == () and second.reset.ledger_length == 4
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, dict(portfolio.holdings)) == (Decimal("2500.00"), {})
    assert await portfolio_store.resets("alice") == [step.reset, second.reset]
    assert await portfolio_store.apply(ResetAccount("nobody", "r3", None, CLOSE), None, CLOSE) \
        == lifecycle.unchanged(None)


async def test_a_reset_with_many_open_orders_cancels_every_one(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("100000.00"), T0)
    for i in range(130):
        await place(portfolio_store, resting(f"L{i:03d}", Side.BUY, "1", "10"), "20")
    assert (await portfolio_store.get("alice")).reserved_cash == Decimal("1300.00")
    step = await portfolio_store.apply(ResetAccount("alice", "big", Decimal("500.00"), LATER),
                                       None, LATER)
    assert len(step.outcomes) == 130 and step.reset.ledger_length == 130
    portfolio = await portfolio_store.get("alice")
    assert (portfolio.cash, portfolio.reserved_cash, portfolio.order_seq) == (
        Decimal("500.00"), 0, 390)
    assert await portfolio_store.open_orders() == []
    assert len(await portfolio_store.ledger("alice")) == 130
    updates = await portfolio_store.order_updates("alice", 0)
    assert [t.seq for _, t in updates] == list(range(1, 391))
    replay = await portfolio_store.apply(ResetAccount("alice", "big", None, CLOSE), None, CLOSE)
    assert replay.replay and len(replay.outcomes) == 130
    assert await portfolio_store.get("alice") == portfolio
    assert await portfolio_store.resets("alice") == [step.reset]


async def test_order_updates_are_gapless_and_in_order(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await portfolio_store.create_account("bob", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "1", "50"), "60")           # 1, 2
    await portfolio_store.apply_execution(order("m1", Side.BUY, "2"), Decimal("60"), T0)  # 3, 4
    await place(portfolio_store, resting("L2", Side.BUY, "1", "50"), "60")           # 5, 6
    await place(portfolio_store, resting("B1", Side.BUY, "1", "50", user="bob"), "60")
    await portfolio_store.apply(CancelOrder("alice", "L1", LATER), None, LATER)      # 7, 8
    await portfolio_store.apply(TriggerOrder("alice", "L2", Decimal("49"), LATER), None, LATER)  # 9
    await portfolio_store.apply(ResetAccount("alice", "r1", None, CLOSE), None, CLOSE)  # none

    updates = await portfolio_store.order_updates("alice", 0)
    assert [t.seq for _, t in updates] == list(range(1, 10))
    assert (await portfolio_store.get("alice")).order_seq == 9
    assert [(s.order_id, t.status) for s, t in updates] == [
        ("L1", OrderStatus.ACCEPTED), ("L1", OrderStatus.OPEN),
        ("m1", OrderStatus.ACCEPTED), ("m1", OrderStatus.EXECUTED),
        ("L2", OrderStatus.ACCEPTED), ("L2", OrderStatus.OPEN),
        ("L1", OrderStatus.PENDING_CANCEL), ("L1", OrderStatus.CANCELED),
        ("L2", OrderStatus.EXECUTED)]
    for state, _ in updates:
        assert state == await portfolio_store.order(state.order_id)
    assert await portfolio_store.order_updates("alice", 6) == updates[6:]
    assert await portfolio_store.order_updates("alice", 2, limit=3) == updates[2:5]
    assert await portfolio_store.order_updates("alice", 9) == []
    assert [t.seq for _, t in await portfolio_store.order_updates("bob", 0)] == [1, 2]
    assert await portfolio_store.order_updates("nobody", 0) == []


async def test_an_order_is_found_by_its_client_order_id(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await portfolio_store.create_account("bob", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "1", "50", client_order_id="my-1"), "60")
    await place(portfolio_store, resting("B1", Side.BUY, "1", "50", user="bob",
                                         client_order_id="my-1"), "60")
    await place(portfolio_store, resting("L2", Side.BUY, "1", "50"), "60")
    assert (await portfolio_store.order_by_client_id("alice", "my-1")).order_id == "L1"
    assert (await portfolio_store.order_by_client_id("bob", "my-1")).order_id == "B1"
    assert await portfolio_store.order_by_client_id("alice", "my-2") is None
    await portfolio_store.apply(CancelOrder("alice", "L1", LATER), None, LATER)
    found = await portfolio_store.order_by_client_id("alice", "my-1")
    assert found == await portfolio_store.order("L1") and found.status is OrderStatus.CANCELED


async def test_orders_page_newest_first_and_filter(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("100000.00"), T0)
    await portfolio_store.create_account("bob", Decimal("100000.00"), T0)
    at = [T0 + timedelta(seconds=s) for s in (0, 1, 1, 1, 2, 3, 4)]
    symbols = ["MOCKAAPL", "MOCKKO", "MOCKAAPL", "MOCKKO", "MOCKAAPL", "MOCKAAPL", "MOCKKO"]
    for i, (moment, symbol) in enumerate(zip(at, symbols)):
        await place(portfolio_store, resting(f"o{i}", Side.BUY, "1", "50", symbol=symbol,
                                             at=moment), "60", moment)
    await place(portfolio_store, resting("b0", Side.BUY, "1", "50", user="bob"), "60")
    for closed in ("o1", "o4"):
        await portfolio_store.apply(CancelOrder("alice", closed, LATER), None, LATER)

    async def all_pages(**query) -> list[str]:
        ids, token, pages = [], None, 0
        while True:
            page = await portfolio_store.orders(OrderQuery("alice", page_token=token, **query))
            ids += [s.order_id for s in page.orders]
            pages += 1
            token = page.next_page_token
            if token is None:
                return ids
            assert pages < 20

    newest_first = ["o6", "o5", "o4", "o3", "o2", "o1", "o0"]
    first = await portfolio_store.orders(OrderQuery("alice", limit=3))
    assert [s.order_id for s in first.orders] == newest_first[:3] and first.next_page_token
    assert await all_pages(limit=3) == newest_first
    assert await all_pages(limit=1) == newest_first
    assert await all_pages(limit=7) == newest_first
    assert await all_pages(limit=2, open=True) == ["o6", "o5", "o3", "o2", "o0"]
    assert await all_pages(limit=2, open=False) == ["o4", "o1"]
    assert await all_pages(limit=2, symbol="MOCKKO") == ["o6", "o3", "o1"]
    assert await all_pages(open=True, symbol="MOCKKO") == ["o6", "o3"]
    assert await all_pages(symbol="MOCKNONE") == []
    assert (await portfolio_store.orders(OrderQuery("nobody"))).orders == []
    with pytest.raises(InvalidPageToken):
        await portfolio_store.orders(OrderQuery("alice", page_token="not-a-token"))
    everyone = {s.order_id for s in await portfolio_store.open_orders()}
    assert everyone == {"o6", "o5", "o3", "o2", "o0", "b0"}


async def test_racing_triggers_and_cancels_end_an_order_once(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("10000.00"), T0)
    await place(portfolio_store, resting("L1", Side.BUY, "10", "50"), "60")
    await place(portfolio_store, resting("L2", Side.SELL, "1", "10"), "60")  # fails: no shares
    instructions = [TriggerOrder("alice", "L1", Decimal("50") - i, LATER) if i % 2 else
                    CancelOrder("alice", "L1", LATER) for i in range(40)]
    steps = await asyncio.gather(*(portfolio_store.apply(i, None, LATER) for i in instructions))

    decisive = [s for s in steps if not s.replay]
    assert len(decisive) == 1
    [outcome] = decisive[0].outcomes
    assert all(s.outcomes == (outcome,) for s in steps)
    assert await portfolio_store.ledger("alice") == [
        await portfolio_store.execution("L2"), outcome]
    state = await portfolio_store.order("L1")
    assert state.outcome == outcome and state.status.final
    portfolio = await portfolio_store.get("alice")
    assert portfolio.reserved_cash == 0 and portfolio.version == 3
    await assert_replays_to_portfolio(portfolio_store, "alice")


async def test_open_orders_survive_reopening(open_portfolio_store):
    store = await open_portfolio_store()
    await store.create_account("alice", Decimal("10000.00"), T0)
    await place(store, resting("L1", Side.BUY, "10", "50"), "60")
    await place(store, resting("L2", Side.BUY, "10", "50"), "60")
    portfolio = await store.get("alice")
    await store.close()

    reopened = await open_portfolio_store()
    assert {s.order_id for s in await reopened.open_orders()} == {"L1", "L2"}
    again = await place(reopened, resting("L1", Side.BUY, "10", "50"), "40")
    assert again.replay and await reopened.get("alice") == portfolio
    step = await reopened.apply(CancelOrder("alice", "L2", LATER), None, LATER)
    assert step.outcomes[0].status is ExecutionStatus.CANCELED
    assert (await reopened.get("alice")).reserved_cash == Decimal("500.00")
    await assert_reservations_match_open_orders(reopened)


async def test_a_password_hash_is_kept_with_the_account(portfolio_store):
    await portfolio_store.create_account("pw-user", Decimal("10.00"), T0, password_hash="$argon2id$x")
    assert await portfolio_store.password_hash("pw-user") == "$argon2id$x"
    assert await portfolio_store.set_password_hash("pw-user", "$argon2id$y")
    assert await portfolio_store.password_hash("pw-user") == "$argon2id$y"
    assert not await portfolio_store.set_password_hash("nobody", "$argon2id$z")
    assert await portfolio_store.password_hash("nobody") is None
    await portfolio_store.create_account("no-pw", Decimal("10.00"), T0)
    assert await portfolio_store.password_hash("no-pw") is None
    assert (await portfolio_store.get("pw-user")).cash == Decimal("10.00")


# -- apply_many: the execution job's batch step ------------------------------

async def test_a_batch_decides_each_instruction_on_the_state_before_it(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    await portfolio_store.create_account("bob", Decimal("50.00"), T0)
    batch = [Application(PlaceOrder(order("b1", Side.BUY, "5")), Decimal("100"), T0),
             # needs the shares b1 bought in this same batch
             Application(PlaceOrder(order("s1", Side.SELL, "3")), Decimal("110"), LATER),
             # the same orderId again in the batch: a replay of b1
             Application(PlaceOrder(order("b1", Side.BUY, "5")), Decimal("1"), LATER),
             # 1000 - 500 (b1) + 330 (s1) = 830 left: 900 is too much
             Application(PlaceOrder(order("b2", Side.BUY, "9")), Decimal("100"), LATER),
             Application(PlaceOrder(order("c1", Side.BUY, "1", user="bob")), Decimal("60"), LATER),
             Application(ResetAccount("alice", "r1", None, LATER), None, LATER)]
    steps = await portfolio_store.apply_many(batch)

    assert len(steps) == len(batch)
    b1, s1, b1_again, b2, c1, reset = steps
    assert b1.outcomes[0].status is ExecutionStatus.EXECUTED and not b1.replay
    assert s1.outcomes[0].status is ExecutionStatus.EXECUTED
    assert b1_again.replay and b1_again.outcomes == b1.outcomes
    assert b2.outcomes[0].status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    assert c1.outcomes[0].status is ExecutionStatus.FAILED_INSUFFICIENT_FUNDS
    assert reset.reset is not None
    ledger = await portfolio_store.ledger("alice")
    assert [e.order_id for e in ledger] == ["b1", "s1", "b2"]
    assert (await portfolio_store.get("alice")).cash == Decimal("1000.00")  # the reset
    assert dict((await portfolio_store.get("alice")).holdings) == {}
    await assert_replays_to_portfolio(portfolio_store, "bob")

    # The whole batch again (a redelivery after a crash): replays only.
    alice, bob = await portfolio_store.get("alice"), await portfolio_store.get("bob")
    again = await portfolio_store.apply_many(batch)
    assert all(step.replay or not step.writes for step in again)
    assert [s.outcomes for s in again[:2]] == [b1.outcomes, s1.outcomes]
    assert again[3].outcomes == b2.outcomes and again[4].outcomes == c1.outcomes
    assert (await portfolio_store.get("alice"), await portfolio_store.get("bob")) == (alice, bob)
    assert await portfolio_store.ledger("alice") == ledger
    assert await portfolio_store.apply_many([]) == []


async def test_a_batch_that_fails_part_way_is_finished_by_its_redelivery(portfolio_store):
    await portfolio_store.create_account("alice", Decimal("1000.00"), T0)
    good = [Application(PlaceOrder(order(f"o{i}", Side.BUY, "1")), Decimal("10"), T0)
            for i in range(4)]
    broken = Application(PlaceOrder(order("bad", Side.BUY, "1")), "not a price", T0)
    with pytest.raises(Exception):
        await portfolio_store.apply_many(good[:2] + [broken] + good[2:])
    # What was applied is a prefix (SQLite: nothing, one transaction; DynamoDB:
    # the instructions before the failure), never a hole or a double.
    applied = [e.order_id for e in await portfolio_store.ledger("alice")]
    assert applied == ["o0", "o1"][:len(applied)]

    await portfolio_store.apply_many(good)
    assert [e.order_id for e in await portfolio_store.ledger("alice")] == ["o0", "o1", "o2", "o3"]
    assert (await portfolio_store.get("alice")).cash == Decimal("960.00")
    await assert_replays_to_portfolio(portfolio_store, "alice")
