"""Ingestion: the exchange feed in, `market_data` events out.

One tick becomes one event keyed by symbol, so each symbol's prices stay in
order within their partition. A malformed tick is logged, counted and
skipped: one bad event from a vendor must not stop the prices of everyone
else. A lost connection is retried with capped exponential backoff and
jitter, so a restarting feed is not hammered by every ingester at once.
"""

from __future__ import annotations

import asyncio
import logging
import random

import websockets
from websockets.exceptions import InvalidURI, WebSocketException

from .. import metrics
from ..domain.events import TOPIC_MARKET_DATA, encode, market_data_payload
from ..domain.feed_clock import Correction, FeedClock
from ..domain.model import PriceTick, utc_now
from ..feed.parsers import FeedFormatError, parse_events, parse_tick
from ..ports import DependencyUnavailable, EventLog

SOURCE_SERVICE = "ingestion"

log = logging.getLogger("mocktrade.ingestion")


class IngestionService:
    def __init__(self, feed_url: str, event_log: EventLog, *, initial_backoff: float = 0.1,
                 max_backoff: float = 5.0, stale_after: float = 30.0):
        self.feed_url = feed_url
        self._event_log = event_log
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        # The feed sends heartbeats while quiet, so silence this long means a
        # dead connection that TCP has not noticed yet.
        self._stale_after = stale_after
        self.ticks_published = 0
        self.malformed_ticks = 0
        # The feed's clock is checked against ours; see domain/feed_clock.py.
        self.clock = FeedClock()
        self._clock_trouble: set[str] = set()  # symbols whose last tick was corrected
        self.reconnects = 0
        self.connected = False

    def stats(self) -> dict[str, int | bool]:
        return {"connected": self.connected, "ticksPublished": self.ticks_published,
                "malformedTicks": self.malformed_ticks, "reconnects": self.reconnects,
                "clockCorrected": self.clock.corrections[Correction.CLOCK],
                "orderCorrected": self.clock.corrections[Correction.ORDER]}

    async def run(self) -> None:
        """Ingest until cancelled, reconnecting whenever the feed goes away."""
        backoff = self._initial_backoff
        attempts = failures = 0
        while True:
            if attempts:
                self.reconnects += 1
            attempts += 1
            try:
                async with websockets.connect(self.feed_url, compression=None,
                                              open_timeout=5, max_size=2 ** 22,
                                              # a feed that keeps sending never answers our
                                              # close frame at once: do not hold a stop 10 s
                                              close_timeout=1) as feed:
                    self.connected = True
                    log.info("connected to feed", extra={"feedUrl": self.feed_url})
                    backoff, failures = self._initial_backoff, 0
                    await self._ingest(feed)
            except InvalidURI:
                raise
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                failures += 1
                log.warning("feed connection lost" if self.connected else "feed unreachable",
                            extra={"feedUrl": self.feed_url, "reason": repr(exc),
                                   "consecutiveFailures": failures})
            finally:
                self.connected = False
            delay = random.uniform(0, backoff)  # full jitter
            backoff = min(backoff * 2, self._max_backoff)
            await asyncio.sleep(delay)

    async def _ingest(self, feed: websockets.ClientConnection) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
            # cancellation that arrives when recv() has already completed,
            # which at thousands of ticks/s is nearly every time, and the
            # service would then outlive the platform stopping it.
            async with asyncio.timeout(self._stale_after):
                frame = await feed.recv()
            ticks = self._ticks_of(frame)
            if ticks:
                await self._publish(ticks)

    def _ticks_of(self, frame: str | bytes) -> list[PriceTick]:
        try:
            events = parse_events(frame)
        except FeedFormatError as exc:
            self._malformed(exc, frame)
            return []
        ticks = []
        for event in events:
            try:
                tick = parse_tick(event)
            except FeedFormatError as exc:
                self._malformed(exc, event)
                continue
            if tick is not None:
                ticks.append(self._stamped(tick))
        return ticks

    def _stamped(self, tick: PriceTick) -> PriceTick:
        """The tick at the time the platform records it (domain/feed_clock.py);
        a symbol's first corrected tick after good ones is logged, the rest counted."""
        result = self.clock.stamp(tick.symbol, tick.timestamp, utc_now())
        if result.correction is Correction.NONE:
            self._clock_trouble.discard(tick.symbol)
            return tick
        metrics.FEED_CLOCK_CORRECTIONS.labels(result.correction.value).inc()
        if tick.symbol not in self._clock_trouble:
            self._clock_trouble.add(tick.symbol)
            log.warning("feed tick time corrected", extra={
                "symbol": tick.symbol, "feedTime": tick.timestamp.isoformat(),
                "recordedAt": result.time.isoformat(), "correction": result.correction.value,
                "feedUrl": self.feed_url})
        return PriceTick(tick.symbol, tick.price, result.time)

    def _malformed(self, error: FeedFormatError, what: object) -> None:
        self.malformed_ticks += 1
        log.warning("malformed feed tick skipped",
                    extra={"reason": str(error), "tick": repr(what)[:300], "feedUrl": self.feed_url})

    async def _publish(self, ticks: list[PriceTick]) -> None:
        """Publish a frame's ticks as one batch (one round trip, not one per
        tick; each symbol's ticks keep their order), waiting out an
        unavailable log rather than losing them.

        While we wait the feed backs up; if the feed drops us for it, the
        reconnect loop takes over. A retried batch may repeat ticks that were
        written before the failure: the latest price wins, so that is harmless.
        """
        batch = [(tick.symbol, encode(SOURCE_SERVICE, market_data_payload(tick)), None)
                 for tick in ticks]
        delay = self._initial_backoff
        while True:
            try:
                await self._event_log.publish_many(TOPIC_MARKET_DATA, batch)
                break
            except DependencyUnavailable as exc:
                log.warning("event log unavailable; retrying ticks",
                            extra={"ticks": len(batch), "reason": str(exc)})
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self._max_backoff)
        self.ticks_published += len(batch)
        metrics.FEED_TICKS.inc(len(batch))
