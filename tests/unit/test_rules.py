"""Every invariant of MISSION.md as a property of the pure domain."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocktrade.domain import rules
from mocktrade.domain.model import ExecutionStatus, Order, Portfolio, Side
from mocktrade.domain.money import trade_value

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

quantities = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("500"), places=6)
prices = st.decimals(min_value=Decimal("0.0100"), max_value=Decimal("2000"), places=4)
cash_amounts = st.decimals(min_value=Decimal("0"), max_value=Decimal("1000000"), places=2)
sides = st.sampled_from(list(Side))
symbols = st.sampled_from(["MOCKAAPL", "MOCKMSFT", "MOCKGOOG"])


def order(qty, side, symbol="MOCKAAPL", oid="o1", user="u1"):
    return Order(oid, user, symbol, Decimal(qty), side, T0)


def test_buy_within_cash_validates_and_beyond_is_rejected():
    p = Portfolio("u1", Decimal("100.00"))
    rules.validate(order("1", Side.BUY), p, Decimal("100"))
    with pytest.raises(rules.InsufficientFunds):
        rules.validate(order("1.0001", Side.BUY), p, Decimal("100"))


def test_sell_needs_shares():
    p = Portfolio("u1", Decimal("0"), {"MOCKAAPL": Decimal("2")})
    rules.validate(order("2", Side.SELL), p, Decimal("1"))
    with pytest.raises(rules.InsufficientShares):
        rules.validate(order("2.5", Side.SELL), p, Decimal("1"))


@pytest.mark.parametrize("qty", ["0", "-1", "1000000.000001"])
def test_quantity_must_be_positive_and_sane(qty):
    with pytest.raises(rules.InvalidOrder) as info:
        rules.validate(order(qty, Side.BUY), Portfolio("u1", Decimal("1e12")), Decimal("1"))
    assert info.value.field == "quantity"


def test_unknown_symbol_is_rejected():
    with pytest.raises(rules.UnknownSymbol):
        rules.validate(order("1", Side.BUY, "NOPE"), Portfolio("u1", Decimal("10")),
                       Decimal("1"), {"MOCKAAPL"})


def test_execution_without_price_fails_other():
    out = rules.execute(order("1", Side.BUY), Portfolio("u1", Decimal("10")), None, T0)
    assert out.execution.status is ExecutionStatus.FAILED_OTHER
    assert out.portfolio == Portfolio("u1", Decimal("10"), last_updated=out.portfolio.last_updated)


def test_sell_everything_clears_position_and_basis():
    p = Portfolio("u1", Decimal("0"), {"MOCKAAPL": Decimal("3")}, {"MOCKAAPL": Decimal("30.00")})
    out = rules.execute(order("3", Side.SELL), p, Decimal("12"), T0)
    assert out.portfolio.cash == Decimal("36.00")
    assert "MOCKAAPL" not in out.portfolio.holdings
    assert "MOCKAAPL" not in out.portfolio.cost_basis


@given(cash=cash_amounts, qty=quantities, price=prices, side=sides, held=quantities)
def test_execution_never_makes_cash_or_holdings_negative(cash, qty, price, side, held):
    p = Portfolio("u1", cash, {"MOCKAAPL": held})
    out = rules.execute(order(qty, side), p, price, T0)
    assert out.portfolio.cash >= 0
    assert all(q > 0 for q in out.portfolio.holdings.values())
    if out.execution.executed:
        sign = 1 if side is Side.BUY else -1
        # Cash and shares move together, at the execution price.
        assert out.portfolio.cash == cash - sign * trade_value(qty, price)
        assert out.portfolio.shares_of("MOCKAAPL") == held + sign * qty
        assert out.portfolio.version == p.version + 1
    else:
        # A failed order changes nothing at all.
        assert out.portfolio is p
        assert out.execution.execution_price is None


@given(cash=cash_amounts, qty=quantities, price=prices, side=sides, held=quantities)
def test_validation_agrees_with_execution_at_the_same_price(cash, qty, price, side, held):
    p = Portfolio("u1", cash, {"MOCKAAPL": held})
    try:
        rules.validate(order(qty, side), p, price)
        accepted = True
    except rules.OrderRejected:
        accepted = False
    assert accepted == rules.execute(order(qty, side), p, price, T0).execution.executed


@settings(max_examples=200)
@given(
    start_cash=cash_amounts,
    steps=st.lists(st.tuples(sides, quantities, prices, symbols), min_size=1, max_size=60),
)
def test_random_interleavings_keep_every_invariant(start_cash, steps):
    """Many buys and sells for one user at moving prices: the portfolio always
    equals its starting state plus the sum of its executed trades."""
    p = Portfolio("u1", start_cash)
    executions = []
    for i, (side, qty, price, symbol) in enumerate(steps):
        now = T0 + timedelta(seconds=i)
        out = rules.execute(Order(f"o{i}", "u1", symbol, qty, side, now), p, price, now)
        p = out.portfolio
        executions.append(out.execution)
        assert p.cash >= 0
        assert all(q > 0 for q in p.holdings.values())
        assert all(p.cost_basis.get(s, 0) >= 0 for s in p.holdings)
    cash, holdings = rules.replay_cash(start_cash, executions)
    assert p.cash == cash
    assert dict(p.holdings) == holdings
    assert p.version == sum(e.executed for e in executions)


@given(qty=quantities, price=prices)
def test_buying_the_exact_cash_available_succeeds(qty, price):
    cost = trade_value(qty, price)
    out = rules.execute(order(qty, Side.BUY), Portfolio("u1", cost), price, T0)
    assert out.execution.executed and out.portfolio.cash == 0
