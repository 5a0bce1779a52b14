"""Persistence of prices: market_data ticks into analytics, for price bars.

The persistence job's second consumer (group `trade-persistence-bars`, so it
keeps its own offsets on market_data beside the market-data service's and
the trigger job's). Each polled batch is one `Analytics.record_ticks` call;
the analytics store is idempotent on (symbol, feed time), so a batch handled
again after a crash (before the offset commit) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from ..domain.events import EventDecodeError, decode_envelope, decode_market_data
from ..domain.model import PriceTick
from ..ports import Analytics, LogRecord

TICK_PERSISTENCE_GROUP = "trade-persistence-bars"


@dataclass
class TickPersistenceStats:
    recorded: int = 0
    undecodable: int = 0


class TickPersistenceHandler:
    def __init__(self, analytics: Analytics):
        self._analytics = analytics
        self.stats = TickPersistenceStats()

    async def handle(self, records: Sequence[LogRecord]) -> None:
        ticks: dict[tuple[str, datetime], PriceTick] = {}
        for record in records:
            try:
                tick = decode_market_data(decode_envelope(record.value).payload)
            except EventDecodeError:
                self.stats.undecodable += 1
                continue  # the market-data service dead-letters these
            ticks[(tick.symbol, tick.timestamp)] = tick
        if not ticks:
            return
        await self._analytics.record_ticks(list(ticks.values()))
        self.stats.recorded += len(ticks)
