"""Parsing the simulated exchange's wire format into domain ticks.

The feed speaks like a market-data vendor: every WebSocket text frame is a
JSON array of events (a lone event object is accepted too):

    [{"type": "tick", "s": "MOCKAAPL", "p": "187.2300", "t": 1732550400123456}]

`s` is the symbol, `p` the trade price as an exact decimal string, `t` the
exchange time in microseconds since the Unix epoch (UTC). Control events are
`{"type": "welcome", "feed": ..., "version": 1, "symbols": [...], "t": ...}`
on connect and `{"type": "heartbeat", "t": ...}` while the market is quiet.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import orjson

from ..domain.model import PriceTick
from ..domain.money import AmountError, parse_price
from ..domain.rules import SYMBOL_PATTERN

FEED_VERSION = 1
EVENT_TICK = "tick"
EVENT_WELCOME = "welcome"
EVENT_HEARTBEAT = "heartbeat"
CONTROL_EVENTS = frozenset({EVENT_WELCOME, EVENT_HEARTBEAT})

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_MICROS = int((datetime(9999, 12, 31, tzinfo=timezone.utc) - _EPOCH).total_seconds()) * 1_000_000


class FeedFormatError(ValueError):
    """A frame or event that does not follow the feed's wire format."""


def parse_events(frame: str | bytes) -> list[Mapping[str, Any]]:
    """The events of one frame, each still to be parsed with `parse_tick`."""
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FeedFormatError(f"frame is not JSON: {exc}") from None
    events = data if isinstance(data, list) else [data]
    for event in events:
        if not isinstance(event, dict):
            raise FeedFormatError("every feed event must be a JSON object")
    return events


def parse_tick(event: Mapping[str, Any]) -> PriceTick | None:
    """The tick an event carries, or None for a control event."""
    kind = event.get("type")
    if kind in CONTROL_EVENTS:
        return None
    if kind != EVENT_TICK:
        raise FeedFormatError(f"unknown feed event type {kind!r}")
    symbol = event.get("s")
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise FeedFormatError(f"tick symbol 's' is not a valid symbol: {symbol!r}")
    raw_price = event.get("p")
    if not isinstance(raw_price, str):
        raise FeedFormatError(f"tick price 'p' of {symbol} must be a decimal string, got {raw_price!r}")
    try:
        price = parse_price(raw_price, "tick price")
    except AmountError as exc:
        raise FeedFormatError(f"tick price 'p' of {symbol}: {exc}") from None
    if price <= 0:
        raise FeedFormatError(f"tick price 'p' of {symbol} must be positive, got {raw_price}")
    return PriceTick(symbol, price, micros_to_time(event.get("t"), f"tick time 't' of {symbol}"))


def parse_frame(frame: str | bytes) -> list[PriceTick]:
    """Every tick of a frame; the first malformed event fails the whole frame."""
    ticks = []
    for event in parse_events(frame):
        tick = parse_tick(event)
        if tick is not None:
            ticks.append(tick)
    return ticks


def micros_to_time(value: object, what: str = "t") -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FeedFormatError(f"{what} must be integer microseconds since the epoch, got {value!r}")
    if not 0 <= value <= _MAX_MICROS:
        raise FeedFormatError(f"{what} is out of range: {value}")
    # timedelta arithmetic keeps every microsecond; a float timestamp would not.
    return _EPOCH + timedelta(microseconds=value)


def time_to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime; feed times are UTC")
    return (moment - _EPOCH) // timedelta(microseconds=1)
