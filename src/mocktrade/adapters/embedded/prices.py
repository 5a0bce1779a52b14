"""The embedded stand-in for Redis: latest price per symbol plus pub/sub.

Reads come from memory; every update is also upserted into SQLite so prices
survive a restart (like `price:{SYMBOL}` keys in a persistent Redis). SQLite
calls stay on the event-loop thread: one upsert is microseconds.

Each subscriber gets its own bounded queue. A publisher never waits for a
subscriber: when a queue is full its oldest update is dropped and counted, as a
slow Redis pub/sub client loses messages rather than slowing the server. For
prices only the newest tick matters, so dropping the oldest is the right end.
"""

from __future__ import annotations

from pathlib import Path

from ...domain.events import format_time, parse_time
from ...domain.model import PriceTick
from ...domain.money import fmt
from ..subscription import END, BoundedSubscription
from ._sqlite import connect, dec

DEFAULT_SUBSCRIBER_BUFFER = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest_prices (
    symbol TEXT PRIMARY KEY,
    price TEXT NOT NULL,
    feed_timestamp TEXT NOT NULL
) WITHOUT ROWID;
"""

class PriceSubscriptionQueue(BoundedSubscription):
    """ports.PriceSubscription: every update after subscribing, oldest first."""

    def __init__(self, cache: "EmbeddedPriceCache", maxsize: int):
        super().__init__(maxsize)
        self._cache = cache

    async def aclose(self) -> None:
        if not self._closed:
            self._cache._unsubscribe(self)
            self._discard_and_end()


class EmbeddedPriceCache:
    """ports.PriceCache in memory, persisted to SQLite; see the module docstring."""

    def __init__(self, path: str | Path, subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
                 *, read_file: bool = False):
        """`read_file`: another process sets the prices (the embedded jobs
        process beside the HTTP one), so reads go to the file, not memory."""
        if subscriber_buffer < 1:
            raise ValueError("subscriber_buffer must be at least 1")
        self._buffer = subscriber_buffer
        self._read_file = read_file
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)
        self._latest: dict[str, PriceTick] = {
            symbol: PriceTick(symbol, dec(price), parse_time(ts, "feed_timestamp"))
            for symbol, price, ts in self._conn.execute(
                "SELECT symbol, price, feed_timestamp FROM latest_prices")}
        self._subscribers: set[PriceSubscriptionQueue] = set()
        self._closed = False

    async def set_price(self, tick: PriceTick) -> None:
        self._conn.execute(
            "INSERT INTO latest_prices (symbol, price, feed_timestamp) VALUES (?, ?, ?) "
            "ON CONFLICT (symbol) DO UPDATE "
            "SET price = excluded.price, feed_timestamp = excluded.feed_timestamp",
            (tick.symbol, fmt(tick.price), format_time(tick.timestamp)))
        self._latest[tick.symbol] = tick
        for subscriber in self._subscribers:
            subscriber.offer(tick)

    async def get_price(self, symbol: str) -> PriceTick | None:
        if self._read_file:
            row = self._conn.execute("SELECT price, feed_timestamp FROM latest_prices WHERE symbol = ?",
                                     (symbol,)).fetchone()
            return PriceTick(symbol, dec(row[0]), parse_time(row[1], "feed_timestamp")) if row else None
        return self._latest.get(symbol)

    async def all_prices(self) -> dict[str, PriceTick]:
        if self._read_file:
            return {symbol: PriceTick(symbol, dec(price), parse_time(ts, "feed_timestamp"))
                    for symbol, price, ts in self._conn.execute(
                        "SELECT symbol, price, feed_timestamp FROM latest_prices")}
        return dict(self._latest)

    def subscribe(self) -> PriceSubscriptionQueue:
        if self._closed:
            raise RuntimeError("price cache is closed")
        subscription = PriceSubscriptionQueue(self, self._buffer)
        self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: PriceSubscriptionQueue) -> None:
        self._subscribers.discard(subscription)

    @property
    def dropped(self) -> int:
        """Updates dropped so far across current subscribers (slow readers)."""
        return sum(s.dropped for s in self._subscribers)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscribers):
            subscription.offer(END)
        self._subscribers.clear()
        self._conn.close()
