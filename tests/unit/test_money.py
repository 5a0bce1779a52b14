from decimal import Decimal

import pytest

from mocktrade.domain.money import (AmountError, fmt, parse_cash, parse_price, parse_quantity,
                                    trade_value)


def test_quantities_are_exact_at_six_places():
    assert parse_quantity("0.000001") == Decimal("0.000001")
    assert fmt(parse_quantity("10")) == "10.000000"
    with pytest.raises(AmountError, match="decimal places"):
        parse_quantity("0.0000001")


def test_binary_floats_are_refused():
    with pytest.raises(AmountError, match="binary float"):
        parse_quantity(0.1)
    with pytest.raises(AmountError):
        parse_price(True)


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", "", "1e", None, [1]])
def test_non_numbers_are_refused(bad):
    with pytest.raises(AmountError):
        parse_cash(bad)


def test_trade_value_rounds_half_even_to_cents():
    assert trade_value(Decimal("1"), Decimal("10.0050")) == Decimal("10.00")
    assert trade_value(Decimal("1"), Decimal("10.0150")) == Decimal("10.02")
    assert trade_value(Decimal("0.333333"), Decimal("3.0000")) == Decimal("1.00")


def test_wire_form_never_uses_exponents():
    assert fmt(Decimal("1E+3")) == "1000"
    assert fmt(parse_price("0.0001")) == "0.0001"
