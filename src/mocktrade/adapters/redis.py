"""Redis adapters: the latest prices with their pub/sub updates, and the
idempotency keys of POST /v1/orders.

Keys (every name behind an optional `key_prefix`, so several platforms or
tests can share one Redis):

* `price:{SYMBOL}`   the latest price as a plain decimal string (the
                     reference's key, readable by any Redis tool);
* `price_ts:{SYMBOL}` the feed timestamp of that price (ISO-8601 UTC);
* `price_symbols`    a set of every symbol with a price, so `all_prices` is
                     one SMEMBERS and one MGET instead of a keyspace SCAN;
* channel `price_updates` carries `{"symbol", "price", "feedTimestamp"}` JSON;
* `idempotency:{userId}:{key}` a hash {orderId, fingerprint, published,
                     created} that expires after `ttl_seconds`.

`set_price` is one server-side script (EVALSHA): the price, its timestamp,
the symbol set and the PUBLISH change together, as in a MULTI/EXEC, so a
subscriber never sees an update whose price a reader could not yet get. One
command instead of MULTI + 4 + EXEC makes it about twice as fast from
redis-py.

A subscription has its own pub/sub connection and a reader task that moves
messages into a bounded local queue. As in the embedded cache, a publisher
never waits for a subscriber: when the queue is full the oldest update is
dropped and counted (`dropped`). If the connection breaks, the reader
reconnects with exponential backoff and jitter; updates published while it
was away are lost (pub/sub keeps nothing), so after a reconnect it first
replays the latest price of every symbol, which leaves the subscriber
up to date again.

`subscribe()` returns at once, but Redis only delivers updates published
after it has confirmed the SUBSCRIBE. So that "every update from now on"
holds for updates set through the same cache, `set_price` first waits (at
most `ready_timeout`) for the subscriptions still being established.

Errors: a Redis that cannot be reached or does not answer within the socket
timeouts (1.5 s by default) becomes `ports.DependencyUnavailable("redis")`, so
the order service answers 503 instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import AsyncIterator, Iterator
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..domain.events import EventDecodeError, format_time, parse_time
from ..domain.model import PriceTick
from ..domain.money import fmt
from ..ports import DependencyUnavailable, IdempotencyRecord
from .subscription import END, BoundedSubscription

log = logging.getLogger(__name__)

DEFAULT_SUBSCRIBER_BUFFER = 1024
DEFAULT_SOCKET_TIMEOUT = 1.5
RECONNECT_BACKOFF_MIN = 0.1
RECONNECT_BACKOFF_MAX = 5.0
# A price without its timestamp key (written by some other tool) is reported
# with this time: as old as can be, so nobody takes it for fresh.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


@contextlib.contextmanager
def _unavailable_as_port_error() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
    except RuntimeError as exc:
        # uvloop's answer to a write on a socket that a Redis restart closed
        # under redis-py ("unable to perform operation on <TCPTransport
        # closed=True ...>; the handler is closed"): the chaos test saw it
        # turn an order into a 500 while Redis was being restarted.
        if "handler is closed" not in str(exc):
            raise
        raise DependencyUnavailable("redis", f"connection closed: {exc}") from exc


def _client(url: str, socket_timeout: float | None) -> aioredis.Redis:
    # One immediate retry on a broken connection: it replaces a pooled
    # connection that a Redis restart closed; a Redis that is really down
    # refuses twice, fast. A timeout is not retried: it already took its time.
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_timeout=socket_timeout,
        socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))


def _decode_price(price: str | None, timestamp: str | None, symbol: str) -> PriceTick | None:
    if price is None:
        return None
    try:
        when = parse_time(timestamp, "price timestamp") if timestamp else UNKNOWN_TIME
        return PriceTick(symbol, Decimal(price), when)
    except (InvalidOperation, EventDecodeError):
        log.warning("unreadable price in redis", extra={"symbol": symbol, "price": price})
        return None


def _decode_update(data: str | bytes) -> PriceTick:
    """The JSON of one `price_updates` message; raises ValueError if unreadable."""
    try:
        body = orjson.loads(data)
        return PriceTick(body["symbol"], Decimal(body["price"]),
                         parse_time(body["feedTimestamp"], "feedTimestamp"))
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation, EventDecodeError) as exc:
        raise ValueError(f"unreadable price update: {exc}") from None


# -- PriceCache ----------------------------------------------------------------



class RedisPriceSubscription(BoundedSubscription):
    """ports.PriceSubscription over its own Redis pub/sub connection."""

    def __init__(self, cache: "RedisPriceCache", maxsize: int):
        super().__init__(maxsize)
        self._cache = cache
        self.ready = asyncio.Event()  # set once Redis confirmed the SUBSCRIBE
        self.undecodable = 0
        self.reconnects = 0
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name="redis-price-subscription")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._cache._unsubscribe(self)
        self._closed = True
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._discard_and_end()

    def _end(self) -> asyncio.Task:
        """The cache closed: the iteration ends after what is queued."""
        self._reader.cancel()
        self.offer(END)
        self._closed = True
        return self._reader

    async def _read(self) -> None:
        backoff = RECONNECT_BACKOFF_MIN
        first = True
        while True:
            # No socket timeout: a quiet market is not a dead connection. The
            # health check PINGs an idle connection so a dead one is noticed.
            client = aioredis.Redis.from_url(
                self._cache.url, decode_responses=True, socket_timeout=None,
                socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT, health_check_interval=10,
                retry=Retry(NoBackoff(), 0))
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._cache.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.ready.set()
                        backoff = RECONNECT_BACKOFF_MIN
                        if not first:
                            await self._catch_up()
                        first = False
                    elif message["type"] == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a subscriber outlives any one failure
                self.ready.set()  # publishers must not wait for a Redis that is down
                log.log(logging.WARNING if isinstance(exc, _UNAVAILABLE) else logging.ERROR,
                        "price subscription lost its redis connection; reconnecting",
                        exc_info=not isinstance(exc, _UNAVAILABLE),
                        extra={"error": str(exc), "retryInSeconds": round(backoff, 2)})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
            self.reconnects += 1

    def _deliver(self, data: str) -> None:
        try:
            self.offer(_decode_update(data))
        except ValueError as exc:
            self.undecodable += 1
            log.warning("ignored an unreadable price update", extra={"error": str(exc)})

    async def _catch_up(self) -> None:
        """After a reconnect: what was published meanwhile is lost, so replay
        the latest price of every symbol."""
        try:
            latest = await self._cache.all_prices()
        except DependencyUnavailable:
            return
        for tick in sorted(latest.values(), key=lambda t: t.timestamp):
            self.offer(tick)


# The latest price, its time and the symbol set, then the update: atomic.
# (The channel is an argument: PUBLISH names no key.)
_SET_PRICE = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return redis.call('PUBLISH', ARGV[4], ARGV[5])
"""


class RedisPriceCache:
    """ports.PriceCache on Redis keys and pub/sub; see the module docstring."""

    def __init__(self, url: str, *, key_prefix: str = "", channel: str = "price_updates",
                 subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT, ready_timeout: float = 2.0):
        if subscriber_buffer < 1:
            raise ValueError("subscriber_buffer must be at least 1")
        self.url = url
        self.channel = key_prefix + channel
        self._prefix = key_prefix
        self._symbols_key = key_prefix + "price_symbols"
        self._buffer = subscriber_buffer
        self._ready_timeout = ready_timeout
        self._redis = _client(url, socket_timeout)
        self._set_price = self._redis.register_script(_SET_PRICE)
        self._subscriptions: set[RedisPriceSubscription] = set()
        self._closed = False

    def price_key(self, symbol: str) -> str:
        return f"{self._prefix}price:{symbol}"

    def _time_key(self, symbol: str) -> str:
        return f"{self._prefix}price_ts:{symbol}"

    async def set_price(self, tick: PriceTick) -> None:
        await self._subscriptions_ready()
        price, when = fmt(tick.price), format_time(tick.timestamp)
        update = orjson.dumps({"symbol": tick.symbol, "price": price, "feedTimestamp": when})
        with _unavailable_as_port_error():
            await self._set_price(
                keys=[self.price_key(tick.symbol), self._time_key(tick.symbol),
                      self._symbols_key],
                args=[price, when, tick.symbol, self.channel, update])

    async def get_price(self, symbol: str) -> PriceTick | None:
        with _unavailable_as_port_error():
            price, when = await self._redis.mget(self.price_key(symbol), self._time_key(symbol))
        return _decode_price(price, when, symbol)

    async def all_prices(self) -> dict[str, PriceTick]:
        with _unavailable_as_port_error():
            symbols = sorted(await self._redis.smembers(self._symbols_key))
            if not symbols:
                return {}
            values = await self._redis.mget(
                [self.price_key(s) for s in symbols] + [self._time_key(s) for s in symbols])
        prices, times = values[:len(symbols)], values[len(symbols):]
        latest = {}
        for symbol, price, when in zip(symbols, prices, times):
            tick = _decode_price(price, when, symbol)
            if tick is not None:
                latest[symbol] = tick
        return latest

    def subscribe(self) -> RedisPriceSubscription:
        if self._closed:
            raise RuntimeError("price cache is closed")
        subscription = RedisPriceSubscription(self, self._buffer)
        self._subscriptions.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: RedisPriceSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def _subscriptions_ready(self) -> None:
        pending = [s.ready.wait() for s in self._subscriptions if not s.ready.is_set()]
        if pending:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), self._ready_timeout)

    @property
    def dropped(self) -> int:
        """Updates dropped so far across current subscribers (slow readers)."""
        return sum(s.dropped for s in self._subscriptions)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        readers = [subscription._end() for subscription in self._subscriptions]
        self._subscriptions.clear()
        await asyncio.gather(*readers, return_exceptions=True)
        await self._redis.aclose()


# -- IdempotencyStore ----------------------------------------------------------

# Insert-if-absent, then read back whichever record holds the key: atomic,
# because a script runs alone on the server.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'orderId', ARGV[1], 'fingerprint', ARGV[2],
             'published', '0', 'created', ARGV[3])
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return redis.call('HMGET', KEYS[1], 'orderId', 'fingerprint', 'published', 'decline')
"""

# Only a key that still exists is marked (HSET keeps its time to live).
_MARK_PUBLISHED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""


class RedisIdempotencyStore:
    """ports.IdempotencyStore: one hash per (user, key), claimed atomically by
    a Lua script, forgotten after `ttl_seconds` (0: kept forever)."""

    def __init__(self, url: str, *, key_prefix: str = "", ttl_seconds: int = 86400,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT):
        self._prefix = key_prefix
        self._ttl = int(ttl_seconds)
        self._redis = _client(url, socket_timeout)
        self._reserve = self._redis.register_script(_RESERVE)
        self._mark_published = self._redis.register_script(_MARK_PUBLISHED)

    def _key(self, user_id: str, key: str) -> str:
        # The user id is escaped so that no user:key pair can spell another.
        return f"{self._prefix}idempotency:{quote(user_id, safe='')}:{key}"

    async def lookup(self, user_id: str, key: str) -> IdempotencyRecord | None:
        with _unavailable_as_port_error():
            values = await self._redis.hmget(self._key(user_id, key),
                                              ["orderId", "fingerprint", "published", "decline"])
        return self._record(values)

    async def reserve(self, user_id: str, key: str, fingerprint: str,
                      order_id: str) -> IdempotencyRecord:
        with _unavailable_as_port_error():
            values = await self._reserve(
                keys=[self._key(user_id, key)],
                args=[order_id, fingerprint, format_time(datetime.now(timezone.utc)), self._ttl])
        record = self._record(values)
        if record is None:  # only if the key expired within the script: impossible
            raise RuntimeError(f"idempotency key {key!r} vanished while being reserved")
        return record

    async def mark_published(self, user_id: str, key: str) -> None:
        with _unavailable_as_port_error():
            await self._mark_published(keys=[self._key(user_id, key)], args=["published", "1"])

    async def remember_decline(self, user_id: str, key: str, decline: str) -> None:
        with _unavailable_as_port_error():
            await self._mark_published(keys=[self._key(user_id, key)], args=["decline", decline])

    @staticmethod
    def _record(values: list[str | None]) -> IdempotencyRecord | None:
        order_id, fingerprint, published, decline = values
        if order_id is None or fingerprint is None:
            return None
        return IdempotencyRecord(order_id, fingerprint, published == "1", decline)

    async def close(self) -> None:
        await self._redis.aclose()
