"""Exact decimal amounts with fixed scales.

Binary floats never touch money: every amount enters through one of the
parse functions below, which reject floats outright and quantize to the
scale of its kind so that equal amounts always compare and serialize equal.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

CASH_SCALE = 2
PRICE_SCALE = 4
QUANTITY_SCALE = 6

CASH_QUANTUM = Decimal(1).scaleb(-CASH_SCALE)
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_SCALE)
QUANTITY_QUANTUM = Decimal(1).scaleb(-QUANTITY_SCALE)

MAX_ORDER_QUANTITY = Decimal(1_000_000)
MAX_PRICE = Decimal(10_000_000)
MAX_CASH = Decimal(10) ** 15

# Wide enough that no product of a quantity and a price is ever rounded
# before we quantize it ourselves.
_CONTEXT = Context(prec=40, rounding=ROUND_HALF_EVEN)


class AmountError(ValueError):
    """An amount that is not a finite decimal of the expected kind."""


def _to_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise AmountError(f"{what} must be a decimal string, not a binary float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise AmountError(f"{what} is not a decimal number: {value!r}") from None
    else:
        raise AmountError(f"{what} must be a decimal string")
    if not result.is_finite():
        raise AmountError(f"{what} must be finite")
    return result


def _quantize_exact(value: Decimal, quantum: Decimal, what: str) -> Decimal:
    try:
        quantized = value.quantize(quantum, context=_CONTEXT)
    except InvalidOperation:  # more digits than the context holds, e.g. 1e300
        raise AmountError(f"{what} is out of range") from None
    if quantized != value:
        raise AmountError(f"{what} has more than {-quantum.as_tuple().exponent} decimal places")
    return quantized


def parse_quantity(value: object, what: str = "quantity") -> Decimal:
    return _quantize_exact(_to_decimal(value, what), QUANTITY_QUANTUM, what)


def parse_price(value: object, what: str = "price") -> Decimal:
    return _quantize_exact(_to_decimal(value, what), PRICE_QUANTUM, what)


def parse_cash(value: object, what: str = "cash") -> Decimal:
    return _quantize_exact(_to_decimal(value, what), CASH_QUANTUM, what)


def round_price(value: Decimal) -> Decimal:
    """A computed price (e.g. from a simulation) rounded to the price scale."""
    return value.quantize(PRICE_QUANTUM, context=_CONTEXT)


def trade_value(quantity: Decimal, price: Decimal) -> Decimal:
    """Cash that changes hands for `quantity` shares at `price`, in cents.

    Rounded half-even so that neither side is systematically favoured.
    """
    return _CONTEXT.multiply(quantity, price).quantize(CASH_QUANTUM, context=_CONTEXT)


def fmt(value: Decimal) -> str:
    """Canonical wire form: plain notation, never exponent form."""
    return format(value, "f")
