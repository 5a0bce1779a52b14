"""Price bars (candles) for charting: the query service's side of
`GET /v1/bars/{symbol}`.

Order: oldest first, always, as TradingView lightweight-charts' `setData`
requires (ascending `time`, no duplicates); a client appends `update()`s for
the forming bar and prepends older pages.

Paging:
- with `start`: the bars opening in [start, end), oldest first, `limit` at a
  time; `nextPageToken` continues forward from the last one (null at the end);
- without `start`: the newest `limit` bars opening before `end` (default: the
  end of the bar forming now, so that bar is the last one), for a chart's first paint; to
  load older history ask again with `end` = the oldest bar's `t`
  (lightweight-charts' "infinite history" pattern). `nextPageToken` is null.

A bar is `final: false` while its interval has not ended by the server's
clock (the forming bar). Ticks arrive through the pipeline a moment late, so a
bar's last ticks may still land in the second or so after it turned final.
Only intervals with at least one feed tick are bars; executed volume in an
interval without ticks has no bar to carry it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from ..domain.bars import (TIMEFRAMES, Bar, UnknownTimeframe, bucket_floor, from_epoch,
                           timeframe_seconds)
from ..domain.events import format_time
from ..domain.money import PRICE_QUANTUM, QUANTITY_QUANTUM, fmt
from ..ports import Analytics

DEFAULT_BARS = 500
MAX_BARS = 2000


class InvalidBarsRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class UnknownSymbol(LookupError):
    pass


# The times the analytics engine stores (ClickHouse DateTime64 reaches 1900 to
# 2299); a window reaching past them is cut to them: no bar lies outside.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2262, 1, 1, tzinfo=timezone.utc)


def parse_instant(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidBarsRequest(field, f"{field} must be an ISO-8601 time, e.g. "
                                        f"2026-01-02T15:04:05Z") from None
    if moment.tzinfo is None:
        raise InvalidBarsRequest(field, f"{field} must include a UTC offset, e.g. Z")
    try:
        return min(max(moment.astimezone(timezone.utc), EARLIEST), LATEST)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        return EARLIEST if moment.year < 2000 else LATEST


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_BARS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_BARS:
        raise InvalidBarsRequest("limit", f"limit must be an integer from 1 to {MAX_BARS}")
    return limit


def encode_page_token(symbol: str, timeframe: str, next_start: datetime) -> str:
    raw = orjson.dumps({"s": symbol, "tf": timeframe, "t": int(next_start.timestamp())})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, symbol: str, timeframe: str) -> datetime:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] != symbol or data["tf"] != timeframe or not isinstance(data["t"], int):
            raise ValueError
        return from_epoch(data["t"])
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError, OSError):
        raise InvalidBarsRequest("pageToken", "pageToken is not one this query returned") from None


def bar_view(bar: Bar, seconds: int, now: datetime) -> dict[str, Any]:
    return {"t": format_time(bar.start), "o": fmt(bar.open.quantize(PRICE_QUANTUM)),
            "h": fmt(bar.high.quantize(PRICE_QUANTUM)), "l": fmt(bar.low.quantize(PRICE_QUANTUM)),
            "c": fmt(bar.close.quantize(PRICE_QUANTUM)),
            "v": fmt(bar.volume.quantize(QUANTITY_QUANTUM)), "n": bar.ticks,
            "final": bar.start + timedelta(seconds=seconds) <= now}


async def bars_page(analytics: Analytics, symbols: frozenset[str], now: datetime, symbol: str, *,
                    timeframe: str | None, start: str | None, end: str | None,
                    limit: str | None, page_token: str | None) -> dict[str, Any]:
    """One page of bars, or InvalidBarsRequest naming the bad field, or UnknownSymbol."""
    name = timeframe or "1m"
    try:
        seconds = timeframe_seconds(name)
    except UnknownTimeframe as exc:
        raise InvalidBarsRequest("timeframe", str(exc)) from None
    # No end: up to the end of the bar forming now (so it is there even at its first instant).
    since = parse_instant(start, "start")
    until = parse_instant(end, "end") or from_epoch(bucket_floor(now, seconds) + seconds)
    count = parse_limit(limit)
    if since is not None and since >= until:
        if start is not None and end is not None and \
                datetime.fromisoformat(start) < datetime.fromisoformat(end):
            return {"symbol": symbol, "timeframe": name, "bars": [], "nextPageToken": None}
        raise InvalidBarsRequest("start", "start must be before end")
    if symbol not in symbols:
        raise UnknownSymbol(f"unknown symbol {symbol}")
    if page_token is not None:
        resume = decode_page_token(page_token, symbol, name)
        if since is not None and resume < since:
            raise InvalidBarsRequest("pageToken", "pageToken is not one this query returned")
        since = resume
    if since is None:
        rows = await analytics.bars(symbol, name, None, until, count)
        next_token = None
    else:
        rows = await analytics.bars(symbol, name, since, until, count + 1)
        next_token = (encode_page_token(symbol, name, rows[count].start)
                      if len(rows) > count else None)
        rows = rows[:count]
    return {"symbol": symbol, "timeframe": name,
            "bars": [bar_view(b, seconds, now) for b in rows], "nextPageToken": next_token}


__all__ = ["DEFAULT_BARS", "MAX_BARS", "TIMEFRAMES", "InvalidBarsRequest", "UnknownSymbol",
           "bars_page"]
