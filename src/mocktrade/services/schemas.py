"""The API contract: response schemas, request schemas and the error envelope.

The response models here only document: the routes keep answering with a
JsonResponse of the dicts the services build (see gateway.py), and
tests/e2e/test_api_contract.py fuzzes the running platform to hold the two to
the same shape. Decimals are strings in canonical plain notation.

The request schemas say exactly what the server accepts; `check_order_body`
and `check_reset_body` enforce the textual forms the schemas promise before
the domain models parse the values (which accept more, e.g. "1e2" or " 5 ").
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..domain.lifecycle import OrderStatus
from ..domain.model import ExecutionStatus, OrderType, Side, TimeInForce
from ..domain.money import MAX_CASH, MAX_ORDER_QUANTITY, MAX_PRICE
from .http import ApiError

# -- decimal strings -----------------------------------------------------------------

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_FRACTION = {6: r"[0-9]{1,6}", 4: r"[0-9]{1,4}", 2: r"[0-9]{1,2}"}


def _positive_fraction(places: int) -> str:
    """0.x with at most `places` decimals, not all zero."""
    alternatives = [f"{'0' * zeros}[1-9][0-9]{{0,{places - zeros - 1}}}" for zeros in range(places)]
    return r"0\.(?:" + "|".join(alternatives) + ")"


def _bounded_pattern(places: int, maximum: int, allow_zero: bool) -> str:
    """Canonical decimal text in (0, maximum] (or [0, maximum]), <= `places` decimals."""
    digits = len(str(maximum)) - 1  # below `maximum`, which is a power of ten
    frac = _FRACTION[places]
    whole = rf"[1-9][0-9]{{0,{digits - 1}}}(?:\.{frac})?"
    top = rf"{maximum}(?:\.0{{1,{places}}})?"
    low = rf"0(?:\.{frac})?" if allow_zero else _positive_fraction(places)
    return rf"^(?:{whole}|{low}|{top})$"


QUANTITY_PATTERN = _bounded_pattern(6, int(MAX_ORDER_QUANTITY), allow_zero=False)
PRICE_PATTERN = _bounded_pattern(4, int(MAX_PRICE), allow_zero=False)
CASH_PATTERN = _bounded_pattern(2, int(MAX_CASH), allow_zero=True)
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,15}$"
SYMBOL_INPUT_PATTERN = r"^[A-Za-z][A-Za-z0-9.\-]{0,15}$"  # upper-cased by the server
CLIENT_ORDER_ID_PATTERN = r"^[\x20-\x7e]{1,64}$"
# RFC 3339 with a mandatory offset, as datetime.fromisoformat reads it.
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (rf"(?:{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
         rf"|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)")
DATE_TIME_PATTERN = (rf"^{_DATE}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?"
                     r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")

# What the server checks a string amount against before parsing it (bounds
# and scale are the domain's to check, with its own messages).
_AMOUNT_TEXT = {places: re.compile(rf"(?:0|[1-9][0-9]*)(?:\.[0-9]{{1,{places}}})?", re.ASCII)
                for places in (6, 4, 2)}
_SYMBOL_TEXT = re.compile(SYMBOL_INPUT_PATTERN[1:-1], re.ASCII)


def _amount_schema(pattern: str, places: int, minimum: int, maximum: int, exclusive: bool,
                   description: str) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "maximum": maximum,
                              "multipleOf": float(f"1e-{places}")}
    number["exclusiveMinimum" if exclusive else "minimum"] = minimum
    return {"anyOf": [{"type": "string", "pattern": pattern}, number],
            "description": description}


def quantity_schema() -> dict[str, Any]:
    return _amount_schema(QUANTITY_PATTERN, 6, 0, int(MAX_ORDER_QUANTITY), True,
                          f"Shares: greater than 0, at most {MAX_ORDER_QUANTITY}, up to 6 decimal "
                          "places. A string keeps it exact; a JSON number is read from its text, "
                          "never as a binary float")


def price_schema(name: str, needed_by: str) -> dict[str, Any]:
    return _amount_schema(PRICE_PATTERN, 4, 0, int(MAX_PRICE), True,
                          f"{name}: greater than 0, at most {MAX_PRICE}, up to 4 decimal places. "
                          f"Required for {needed_by} orders, else absent or null")


def cash_schema() -> dict[str, Any]:
    return _amount_schema(CASH_PATTERN, 2, 0, int(MAX_CASH), False,
                          f"Cash to restart with: 0 to {MAX_CASH}, up to 2 decimal places; "
                          "absent or null: the account's starting cash")


def _at_most(maximum: int) -> str:
    """A regex of the plain decimals from 0 to `maximum` (at most 2 places)."""
    digits = str(maximum)
    below = ["0"] + ([f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else [])
    for i, d in enumerate(map(int, digits)):
        low = 1 if i == 0 else 0
        if d > low:
            rest = len(digits) - i - 1
            below.append(digits[:i] + f"[{low}-{d - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return rf"^(?:(?:{'|'.join(below)})(?:\.[0-9]{{1,2}})?|{digits}(?:\.0{{1,2}})?)$"


def starting_cash_schema(maximum: Decimal) -> dict[str, Any]:
    """Sign-up's cash: 0 to the configured maximum (whole units), 2 places."""
    top = int(maximum)
    return {"anyOf": [{"type": "string", "pattern": _at_most(top)},
                      {"type": "number", "minimum": 0, "maximum": top, "multipleOf": 0.01},
                      {"type": "null"}],
            "description": f"Starting cash, 0 to {top}, up to 2 decimal places; absent or null: "
                           "the default in GET /v1/auth/options"}


def symbol_input_pattern(symbols: Iterable[str] | None) -> str:
    """The symbols this platform trades, in any letter case."""
    if not symbols:
        return SYMBOL_INPUT_PATTERN
    def any_case(symbol: str) -> str:
        return "".join(f"[{c}{c.lower()}]" if c.isalpha() else re.escape(c) for c in symbol)
    return "^(?:" + "|".join(any_case(s) for s in sorted(symbols)) + ")$"


_PRICED = {OrderType.MARKET: (False, False), OrderType.LIMIT: (True, False),
           OrderType.STOP: (False, True), OrderType.STOP_LIMIT: (True, True)}


def order_request_schemas(symbols: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """OrderRequest: one object schema per order type (oneOf), each whole."""
    symbols = sorted(symbols or ())
    described = (f"One of {', '.join(symbols)} (any letter case; the server upper-cases it)"
                 if symbols else "Upper-cased by the server")
    base = {
        "symbol": {"type": "string", "pattern": symbol_input_pattern(symbols),
                   "description": f"{described}; the shape is {SYMBOL_PATTERN}"},
        "quantity": quantity_schema(),
        "side": {"type": "string", "enum": [s.value for s in Side]},
        "timeInForce": {"type": "string", "enum": [t.value for t in TimeInForce], "default": "DAY",
                        "description": "Market orders behave as IOC whatever is given"},
        "clientOrderId": {"anyOf": [{"type": "string", "pattern": CLIENT_ORDER_ID_PATTERN},
                                    {"type": "null"}],
                          "description": "Your own id (1-64 printable ASCII characters), unique "
                                         "among your orders"},
    }
    absent = {"type": "null", "description": "Not allowed for this order type"}
    schemas: dict[str, dict[str, Any]] = {}
    for kind, (limit, stop) in _PRICED.items():
        needing_limit = "LIMIT and STOP_LIMIT"
        needing_stop = "STOP and STOP_LIMIT"
        properties = {
            **base,
            "type": {"type": "string", "enum": [kind.value],
                     **({"default": "MARKET"} if kind is OrderType.MARKET else {})},
            "limitPrice": price_schema("Limit price", needing_limit) if limit else absent,
            "stopPrice": price_schema("Stop price", needing_stop) if stop else absent,
        }
        required = ["symbol", "quantity", "side"]
        if kind is not OrderType.MARKET:
            required.append("type")
        required += [name for name, needed in (("limitPrice", limit), ("stopPrice", stop)) if needed]
        schemas[f"{kind.value.title().replace('_', '')}OrderRequest"] = {
            "title": f"{kind.value} order", "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}
    schemas["OrderRequest"] = {
        "description": "Body of POST /v1/orders; `type` (default MARKET) decides which prices "
                       "are required. The user comes from the token, never from here.",
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in schemas],
        "examples": [{"symbol": symbols[0] if symbols else "MOCKAAPL", "quantity": "10",
                      "side": "BUY"}]}
    schemas["ResetRequest"] = {
        "description": "Body of POST /v1/account/reset (optional)", "type": "object",
        "properties": {"cash": {"anyOf": [*cash_schema()["anyOf"], {"type": "null"}],
                                "description": cash_schema()["description"]}},
        "additionalProperties": False}
    return schemas


def _check_text(data: Mapping[str, Any], name: str, places: int) -> None:
    value = data.get(name)
    if isinstance(value, str) and not _AMOUNT_TEXT[places].fullmatch(value):
        raise ApiError(400, "invalid_request",
                       f"{name}: must be a plain decimal such as 12.5, with at most {places} "
                       "decimal places", name)


def check_order_body(data: Mapping[str, Any]) -> None:
    """The textual forms the document promises, before the model parses values."""
    symbol = data.get("symbol")
    if isinstance(symbol, str) and not _SYMBOL_TEXT.fullmatch(symbol):
        raise ApiError(400, "invalid_request",
                       "symbol: must be 1-16 letters, digits, '.' or '-', starting with a letter",
                       "symbol")
    _check_text(data, "quantity", 6)
    _check_text(data, "limitPrice", 4)
    _check_text(data, "stopPrice", 4)


def check_reset_body(data: Mapping[str, Any]) -> None:
    _check_text(data, "cash", 2)


# -- responses ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"


def _dec(**more: Any) -> Any:
    return Field(pattern=DECIMAL_PATTERN, **more)


def _time(**more: Any) -> Any:
    return Field(pattern=TIME_PATTERN, **more)


class ErrorBody(_Strict):
    code: str = Field(description="Machine-readable, e.g. invalid_request, not_found")
    message: str
    field: str | None = Field(None, description="The request field at fault, when there is one")
    orderId: str | None = Field(None, description="client_order_id_taken: the order using it")
    status: str | None = Field(None, description="order_not_cancelable: the order's status")


class ErrorResponse(_Strict):
    """Every answer other than success."""

    error: ErrorBody


class OrderAccepted(_Strict):
    orderId: str
    status: Literal["ACCEPTED"]
    clientOrderId: str | None = Field(None, description="Present when the order named one")


class Order(_Strict):
    orderId: str
    clientOrderId: str | None
    userId: str
    symbol: str = Field(pattern=SYMBOL_PATTERN)
    side: Side
    type: OrderType
    timeInForce: TimeInForce
    quantity: str = _dec()
    limitPrice: str | None = _dec()
    stopPrice: str | None = _dec()
    status: OrderStatus
    stopTriggered: bool
    filledQuantity: str = _dec()
    executionPrice: str | None = _dec()
    outcome: ExecutionStatus | None
    failureReason: str | None
    reservedCash: str = _dec()
    reservedShares: str = _dec()
    orderTimestamp: str = _time()
    expireAt: str | None = _time()


class Transition(_Strict):
    status: OrderStatus
    time: str = _time()
    seq: int


class OrderDetail(Order):
    transitions: list[Transition]


class OrderPage(_Strict):
    orders: list[Order]
    nextPageToken: str | None


class CancelRequested(_Strict):
    orderId: str
    status: Literal["PENDING_CANCEL"]


class CancelAll(_Strict):
    orders: list[CancelRequested]


class ResetAccepted(_Strict):
    resetId: str
    status: Literal["ACCEPTED"]
    cash: str | None = _dec()


class Position(_Strict):
    symbol: str
    quantity: str = _dec()
    availableQuantity: str = _dec()
    reservedQuantity: str = _dec()
    costBasis: str = _dec()
    averageCost: str = _dec()
    lastPrice: str | None = _dec(description="null while unpriced")
    marketValue: str | None = _dec()
    unrealizedPnl: str | None = _dec()
    priceTimestamp: str = _time(default=None, description="Present when priced")


class Portfolio(_Strict):
    userId: str
    cashBalance: str = _dec()
    reservedCash: str = _dec()
    buyingPower: str = _dec()
    holdings: dict[str, str] = Field(description="symbol -> quantity")
    positions: list[Position]
    marketValue: str = _dec()
    unrealizedPnl: str = _dec()
    totalValue: str = _dec()
    allPositionsPriced: bool
    lastUpdatedTimestamp: str = _time()
    version: int


class Trade(_Strict):
    orderId: str
    userId: str
    symbol: str
    quantity: str = _dec()
    side: Side
    status: ExecutionStatus
    executionPrice: str | None = _dec()
    executionTimestamp: str = _time()
    failureReason: str | None


class TradePage(_Strict):
    trades: list[Trade]
    totalCount: int
    nextPageToken: str | None


class SymbolVolume(_Strict):
    symbol: str
    volume: str = _dec()
    tradeCount: int
    notional: str = _dec()


class Volume(_Strict):
    timeWindow: Literal["1h", "24h", "7d"]
    from_: str = _time(alias="from")
    to: str = _time()
    symbols: list[SymbolVolume]


class Price(_Strict):
    symbol: str
    price: str = _dec()
    timestamp: str = _time()


class Prices(_Strict):
    prices: list[Price]


# -- documented answers ------------------------------------------------------------------

_HEADER_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying",
                                 "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_ERRORS = {
    400: ("Invalid request: a parameter or the body breaks the contract (`error.field` names it)", None),
    401: ("Missing, malformed or expired bearer token, or one signed by a retired or unknown key",
          {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
    402: ("Insufficient buying power at the latest price", None),
    403: ("Forbidden", None),
    404: ("Not found", None),
    409: ("Conflict", None),
    422: ("Well-formed but not possible in the current state", None),
    429: ("Rate limited: this user's requests, or this client address's invalid tokens",
          _HEADER_RETRY),
    503: ("A dependency is down, or no price yet; nothing was changed", _HEADER_RETRY),
}


def errors(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses, each with the error envelope."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text, headers = _ERRORS[status]
        entry: dict[str, Any] = {"model": ErrorResponse,
                                 "description": descriptions.get(f"e{status}", text)}
        if headers:
            entry["headers"] = headers
        answers[status] = entry
    return answers


AUTHENTICATED = (400, 401, 429, 503)
