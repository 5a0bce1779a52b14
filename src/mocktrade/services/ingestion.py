"""Ingestion: the exchange feed in, `market_data` events out.

One tick becomes one event keyed by symbol, so each symbol's prices stay in
order within their partition. A malformed tick is logged, counted and
skipped: one bad event from a vendor must not stop the prices of everyone
else. A lost connection is retried with capped exponential backoff and
jitter, so a restarting feed is not hammered by every ingester at once.

Reading the feed and publishing to the log are two tasks joined by a FIFO
buffer, so a slow or unavailable log never stops the reading. When they were
one loop, a publish waiting on the log (a fresh Kafka broker answers the
idempotent producer "coordinator load in progress" for tens of seconds) left
the feed unread: the feed dropped the connection as too slow, and the drop
was only noticed, and the feed reconnected, once that publish returned. Now
the reader notices a drop at once and reconnects while the publisher waits.

Order: the publisher takes the oldest waiting ticks as one batch and
publishes nothing else until that batch is acknowledged (a failed batch is
retried whole, before anything newer), so ticks reach the log in the order
they were accepted and each symbol's prices keep their order. The buffer is
bounded: if the log stays away longer than it holds, the oldest waiting ticks
are dropped (counted, logged), since a newer price of their symbol waits
behind them and only the newest matters once the log is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque

import websockets
from websockets.exceptions import InvalidURI, WebSocketException

from .. import metrics
from ..domain.events import TOPIC_MARKET_DATA, encode, market_data_payload
from ..domain.feed_clock import Correction, FeedClock
from ..domain.model import PriceTick, utc_now
from ..feed.parsers import FeedFormatError, parse_events, parse_tick
from ..ports import DependencyUnavailable, EventLog, PriceCache

SOURCE_SERVICE = "ingestion"

log = logging.getLogger("mocktrade.ingestion")


class IngestionService:
    def __init__(self, feed_url: str, event_log: EventLog, *, initial_backoff: float = 0.1,
                 max_backoff: float = 5.0, stale_after: float = 30.0,
                 max_waiting: int = 100_000, max_batch: int = 5_000,
                 publish_timeout: float = 30.0, prices: PriceCache | None = None):
        """`prices`: where the feed clock resumes from (the latest tick per symbol)."""
        self.feed_url = feed_url
        self._event_log = event_log
        self._prices = prices
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        # Ticks read but not yet published, oldest first: 20 s at 5,000 ticks/s.
        self._waiting: deque[PriceTick] = deque(maxlen=max_waiting)
        self._ticks_arrived = asyncio.Event()
        self._max_batch = max_batch
        # A backstop, well above the log's own delivery timeout (Kafka: 5 s):
        # a publish that neither returns nor fails must not hold the ticks
        # behind it forever; it is given up and its batch sent again.
        self._publish_timeout = publish_timeout
        self._dropping = False
        # The feed sends heartbeats while quiet, so silence this long means a
        # dead connection that TCP has not noticed yet.
        self._stale_after = stale_after
        self.ticks_published = 0
        self.malformed_ticks = 0
        self.ticks_dropped = 0
        # The feed's clock is checked against ours; see domain/feed_clock.py.
        self.clock = FeedClock()
        self._clock_trouble: set[str] = set()  # symbols whose last tick was corrected
        self.reconnects = 0
        self.connected = False

    def stats(self) -> dict[str, int | bool]:
        return {"connected": self.connected, "ticksPublished": self.ticks_published,
                "malformedTicks": self.malformed_ticks, "reconnects": self.reconnects,
                "ticksWaiting": len(self._waiting), "ticksDropped": self.ticks_dropped,
                "clockCorrected": self.clock.corrections[Correction.CLOCK],
                "orderCorrected": self.clock.corrections[Correction.ORDER]}

    async def run(self) -> None:
        """Ingest until cancelled, reconnecting whenever the feed goes away.

        Ends (raises) only if reading or publishing fails for a reason other
        than an unavailable feed or log (a bad feed URL, a record the log
        refuses): then the other task is stopped too.
        """
        await self._resume_clock()
        tasks = [asyncio.create_task(self._read_feed(), name="ingestion-read"),
                 asyncio.create_task(self._publish_waiting(), name="ingestion-publish")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resume_clock(self) -> None:
        """The feed clock carries on from the price cache's latest ticks (see
        domain/feed_clock.py); if the cache cannot say, ingestion starts anyway."""
        if self._prices is None:
            return
        try:
            async with asyncio.timeout(5):
                latest = await self._prices.all_prices()
        except (DependencyUnavailable, TimeoutError, OSError) as exc:
            log.warning("feed clock not resumed from the price cache", extra={"reason": repr(exc)})
            return
        self.clock.resume({symbol: tick.timestamp for symbol, tick in latest.items()})

    async def _read_feed(self) -> None:
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
                self._accept(ticks)
            # With a backlog every recv() is ready at once and would never
            # give the loop away: let the publisher run between frames.
            await asyncio.sleep(0)

    def _accept(self, ticks: list[PriceTick]) -> None:
        """Queue a frame's ticks for the publisher, dropping the oldest waiting
        ones if the buffer is full (see the module docstring)."""
        room = self._waiting.maxlen - len(self._waiting)
        self._waiting.extend(ticks)
        dropped = len(ticks) - room
        if dropped > 0:
            self.ticks_dropped += dropped
            metrics.FEED_TICKS_DROPPED.inc(dropped)
            if not self._dropping:
                self._dropping = True
                log.warning("event log behind; dropping the oldest waiting ticks",
                            extra={"ticksWaiting": len(self._waiting), "feedUrl": self.feed_url})
        self._ticks_arrived.set()

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

    async def _publish_waiting(self) -> None:
        """Publish the waiting ticks, oldest first, one batch at a time: each
        batch holds whatever arrived while the previous one was in flight (up
        to max_batch), so the round trips per tick fall as the rate rises."""
        while True:
            if not self._waiting:
                if self._dropping:
                    self._dropping = False
                    log.info("event log caught up", extra={"ticksDropped": self.ticks_dropped})
                self._ticks_arrived.clear()
                await self._ticks_arrived.wait()
                continue
            count = min(len(self._waiting), self._max_batch)
            await self._publish([self._waiting.popleft() for _ in range(count)])

    async def _publish(self, ticks: list[PriceTick]) -> None:
        """Publish one batch (one round trip, not one per tick; each symbol's
        ticks keep their order), waiting out an unavailable log rather than
        losing them; the feed is read meanwhile.

        A retried batch may repeat ticks that were written before the failure
        (each copy in order): the latest price wins, so that is harmless.
        """
        batch = [(tick.symbol, encode(SOURCE_SERVICE, market_data_payload(tick)), None)
                 for tick in ticks]
        delay = self._initial_backoff
        while True:
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await self._event_log.publish_many(TOPIC_MARKET_DATA, batch)
                break
            except (DependencyUnavailable, TimeoutError) as exc:
                log.warning("event log unavailable; retrying ticks",
                            extra={"ticks": len(batch), "reason": str(exc) or type(exc).__name__})
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self._max_backoff)
        self.ticks_published += len(batch)
        metrics.FEED_TICKS.inc(len(batch))
