"""The time a feed tick is recorded at, when the feed's clock cannot be trusted.

A tick's time drives candles (the bucket it lands in), the latest price (a
later tick replaces an earlier one) and DAY expiry (a trigger from a tick at
or after the session close expires the order instead of filling it). A feed
whose clock jumps would corrupt all three: an hour back rewrites old candles,
an hour ahead opens candles in the future and expires DAY orders whose close
has not come. So ingestion stamps each tick by two rules, as market-data
handlers do with vendor times:

1. Skew: a feed time more than MAX_AHEAD ahead of the platform's UTC clock,
   or more than MAX_BEHIND behind it, is not believed; the tick is recorded
   at the platform's time of receipt instead (correction CLOCK). The
   platform's clock, not the feed's, decides when a session closed. The
   window is lopsided on purpose: nothing can be stamped in the future, but
   a tick delayed in transit (a backlog after a reconnect, a loaded machine)
   is still true for a while and keeps its minute.
2. Order: per symbol, recorded times strictly increase. A tick not later
   than its symbol's last recorded time is recorded 1 microsecond after it
   (correction ORDER); its price is still the newest (arrival order is the
   feed's order), it just cannot move a candle or the price history back.

Nothing is dropped: prices keep flowing while the feed's clock is wrong, and
each correction is counted so an operator sees the bad clock.

The order rule holds across restarts of ingestion too: a new FeedClock
resumes from the last recorded times (the price cache's latest tick per
symbol), else the first tick of each symbol after a restart could be
recorded up to MAX_BEHIND before the last one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

MAX_AHEAD = timedelta(seconds=5)
MAX_BEHIND = timedelta(seconds=60)
STEP = timedelta(microseconds=1)


class Correction(str, enum.Enum):
    NONE = "none"
    CLOCK = "clock"   # feed time too far from the platform's clock: time of receipt used
    ORDER = "order"   # not after the symbol's last recorded time: moved just after it


@dataclass(frozen=True, slots=True)
class Stamp:
    time: datetime
    correction: Correction


def stamp(feed_time: datetime, now: datetime, last: datetime | None,
          max_ahead: timedelta = MAX_AHEAD, max_behind: timedelta = MAX_BEHIND) -> Stamp:
    """The time to record a tick at; `last` is its symbol's last recorded time."""
    if feed_time.tzinfo is None or now.tzinfo is None:
        raise ValueError("naive datetime; all times are UTC")
    correction = Correction.NONE
    time = feed_time
    if feed_time - now > max_ahead or now - feed_time > max_behind:
        time, correction = now, Correction.CLOCK
    if last is not None and time <= last:
        time, correction = last + STEP, Correction.ORDER
    return Stamp(time, correction)


class FeedClock:
    """Per-symbol last recorded times, and counts of each correction."""

    def __init__(self, max_ahead: timedelta = MAX_AHEAD, max_behind: timedelta = MAX_BEHIND):
        self.max_ahead, self.max_behind = max_ahead, max_behind
        self._last: dict[str, datetime] = {}
        self.corrections = {Correction.CLOCK: 0, Correction.ORDER: 0}

    def resume(self, last: Mapping[str, datetime]) -> None:
        """Carry on from times recorded before (never moving a symbol's back)."""
        for symbol, time in last.items():
            if time.tzinfo is None:
                raise ValueError("naive datetime; all times are UTC")
            if symbol not in self._last or self._last[symbol] < time:
                self._last[symbol] = time

    def stamp(self, symbol: str, feed_time: datetime, now: datetime) -> Stamp:
        result = stamp(feed_time, now, self._last.get(symbol), self.max_ahead, self.max_behind)
        self._last[symbol] = result.time
        if result.correction is not Correction.NONE:
            self.corrections[result.correction] += 1
        return result
