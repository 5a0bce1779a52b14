"""PortfolioStore contract: accounts, and apply_execution as the atomic,
at-most-once step behind the exactly-once pipeline."""

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

from mocktrade.domain.model import ExecutionStatus, Order, Side
from mocktrade.domain.money import trade_value
from mocktrade.domain.rules import replay_cash
from mocktrade.ports import AccountExists

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
    assert portfolio.cash == Decimal("100.00") and portfolio.version == 0


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
    assert portfolio.version == 50
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
