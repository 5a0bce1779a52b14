"""Price bars (candles): timeframes and the bucket arithmetic, pure.

A bar covers [t, t + timeframe) in UTC; t is a multiple of the timeframe's
length since the Unix epoch (so 1d bars open at 00:00 UTC, 1h bars on the
hour). Every engine computes the same buckets: the analytics adapter does it
in SQL as intDiv(epoch, seconds) * seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

TIMEFRAMES: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
MINUTE = 60


class UnknownTimeframe(ValueError):
    pass


def timeframe_seconds(name: str) -> int:
    try:
        return TIMEFRAMES[name]
    except KeyError:
        raise UnknownTimeframe(
            f"timeframe must be one of {', '.join(TIMEFRAMES)}, not {name!r}") from None


def epoch_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime; all times are UTC")
    return moment.timestamp()


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def bucket_floor(moment: datetime, seconds: int) -> int:
    """Epoch second at which the bar containing `moment` opens."""
    epoch = epoch_seconds(moment)
    return int(epoch // seconds) * seconds


def bucket_ceil(moment: datetime, seconds: int) -> int:
    """Epoch second of the first bar opening at or after `moment`."""
    floor = bucket_floor(moment, seconds)
    return floor if floor == epoch_seconds(moment) else floor + seconds


def minute_span(since: datetime | None, until: datetime, seconds: int) -> tuple[int | None, int]:
    """The minutes [lo, hi) (epoch seconds) that make up the bars opening in [since, until).

    Each bar is whole: a bar opening before `until` includes its minutes after it."""
    lo = bucket_ceil(since, seconds) if since is not None else None
    return lo, bucket_ceil(until, seconds)


@dataclass(frozen=True, slots=True)
class Bar:
    """One candle: prices from the feed's ticks, volume from executed trades."""

    start: datetime          # opening instant of the interval (UTC)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal          # executed shares on the platform in the interval
    ticks: int               # feed ticks in the interval

    def end(self, seconds: int) -> datetime:
        return self.start + timedelta(seconds=seconds)
