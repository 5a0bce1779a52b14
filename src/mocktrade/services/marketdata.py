"""The market-data service: prices from the log into the cache, and out to users.

Two background tasks. The first consumes `market_data` as the "market-data"
group and stores each tick in the price cache, which publishes it. The
second subscribes to the cache's updates and pushes them to WebSocket
clients joined to `prices:{SYMBOL}`, speaking the Phoenix Channels protocol.
Going through the cache (rather than pushing straight from the log) is what
lets several replicas each serve their own clients every update.

When the service falls behind, a polled batch holding several ticks of one
symbol is conflated to the newest: only that one is still the price, and
pushing the older ones first would only make it later.

Fan-out never waits on a client: each update is encoded once per serializer
and offered to every member's bounded queue, which that client's own sender
task drains. A client whose queue is full is too slow to be worth the memory
and is disconnected with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable, Iterable, MutableMapping
from urllib.parse import parse_qs

from starlette.routing import BaseRoute, WebSocketRoute

from .. import metrics
from ..domain.events import (TOPIC_MARKET_DATA, EventDecodeError, decode_envelope,
                             decode_market_data, format_time)
from ..domain.model import PriceTick
from ..domain.money import fmt
from ..jobs.deadletter import dead_letter
from ..jobs.runner import run_consumer
from ..ports import EventLog, LogRecord, PortfolioStore, PriceCache, PriceSubscription
from ..supervisor import Supervisor
from . import limits, phoenix
from .auth import TokenIssuer
from .client_address import ClientAddress
from .order_stream import ORDER_TOPIC_PREFIX, JoinRefused, OrderStream, order_push
from .phoenix import PhoenixMessage, PhoenixProtocolError, Serializer

CONSUMER_GROUP = "market-data"
MARKETDATA_PATH = "/v1/marketdata"
PRICE_TOPIC_PREFIX = "prices:"
EVENT_PRICE_UPDATE = "price_update"
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013

log = logging.getLogger("mocktrade.marketdata")

AsgiMessage = MutableMapping[str, Any]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]
AsgiReceive = Callable[[], Awaitable[AsgiMessage]]


def price_payload(tick: PriceTick) -> dict[str, str]:
    return {"symbol": tick.symbol, "price": fmt(tick.price), "timestamp": format_time(tick.timestamp)}


def _text_frame(text: str) -> AsgiMessage:
    return {"type": "websocket.send", "text": text}


class Subscriber:
    """One WebSocket client: its joined topics and its bounded outgoing queue."""

    __slots__ = ("_send", "_queue", "serializer", "topics", "close_code", "_sender", "peer",
                 "address")

    def __init__(self, send: AsgiSend, buffer: int, serializer: Serializer, peer: str,
                 address: str | None = None):
        self._send = send
        self._queue: asyncio.Queue[AsgiMessage] = asyncio.Queue(buffer)
        self.serializer = serializer
        self.topics: dict[str, str | None] = {}  # topic -> join_ref
        self.close_code: int | None = None
        self._sender: asyncio.Task | None = None
        self.peer = peer
        # The client address bad tokens are throttled by (services.client_address).
        self.address = address

    def offer(self, frame: AsgiMessage) -> bool:
        """Queue a frame without waiting; False when the client has fallen behind."""
        try:
            self._queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            return False

    def backlog(self) -> int:
        return self._queue.qsize()

    def start_sending(self) -> asyncio.Task:
        self._sender = asyncio.create_task(self._send_all())
        return self._sender

    async def _send_all(self) -> None:
        queue, send = self._queue, self._send
        while True:
            await send(await queue.get())

    def kick(self, code: int) -> None:
        """Stop sending now, even mid-send to a stalled socket; the connection closes with `code`."""
        if self.close_code is None:
            self.close_code = code
        if self._sender is not None:
            self._sender.cancel()


class PriceHub:
    """Who is joined to which price topic, and the fan-out of one update."""

    def __init__(self, on_slow: Callable[[Subscriber], None]):
        self._members: dict[str, set[Subscriber]] = {}
        self._on_slow = on_slow
        self.pushes = 0

    def join(self, subscriber: Subscriber, topic: str, join_ref: str | None) -> None:
        subscriber.topics[topic] = join_ref
        self._members.setdefault(topic, set()).add(subscriber)

    def leave(self, subscriber: Subscriber, topic: str) -> None:
        subscriber.topics.pop(topic, None)
        members = self._members.get(topic)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._members[topic]

    def remove(self, subscriber: Subscriber) -> None:
        for topic in list(subscriber.topics):
            self.leave(subscriber, topic)

    def publish(self, tick: PriceTick) -> None:
        topic = PRICE_TOPIC_PREFIX + tick.symbol
        members = self._members.get(topic)
        if not members:
            return
        payload = price_payload(tick)
        frames: list[AsgiMessage | None] = [None, None]
        slow: list[Subscriber] = []
        for subscriber in members:
            frame = frames[subscriber.serializer]
            if frame is None:
                message = phoenix.broadcast(topic, EVENT_PRICE_UPDATE, payload)
                frame = frames[subscriber.serializer] = _text_frame(
                    phoenix.encode_message(message, subscriber.serializer))
            if subscriber.offer(frame):
                self.pushes += 1
            else:
                slow.append(subscriber)
        for subscriber in slow:
            self._on_slow(subscriber)


class _AsgiEndpoint:
    """A plain ASGI app, so Starlette routes to it without its WebSocket wrapper."""

    def __init__(self, serve: Callable[[AsgiMessage, AsgiReceive, AsgiSend], Awaitable[None]]):
        self._serve = serve

    async def __call__(self, scope: AsgiMessage, receive: AsgiReceive, send: AsgiSend) -> None:
        await self._serve(scope, receive, send)


class MarketDataService:
    def __init__(self, event_log: EventLog, price_cache: PriceCache, symbols: Iterable[str],
                 client_buffer: int = 256, *, close_timeout: float = 2.0,
                 portfolios: PortfolioStore | None = None, tokens: TokenIssuer | None = None,
                 client_address: ClientAddress | None = None,
                 max_topics: int = limits.WS_MAX_TOPICS,
                 message_rate: float = limits.WS_MESSAGES_PER_SECOND,
                 message_burst: int = limits.WS_MESSAGE_BURST):
        if client_buffer < 1:
            raise ValueError("client_buffer must be at least 1")
        self._event_log = event_log
        self._price_cache = price_cache
        self._symbols = frozenset(symbols)
        self._client_buffer = client_buffer
        self._close_timeout = close_timeout
        self._client_address = client_address or ClientAddress()
        self._hub = PriceHub(self._drop_slow)
        self._subscribers: set[Subscriber] = set()
        self._latest: dict[str, PriceTick] = {}
        self._supervisor = Supervisor()
        self._subscription: PriceSubscription | None = None
        self._stopping = asyncio.Event()
        # The users' own order channels, where a portfolio store is at hand.
        self._orders = (OrderStream(event_log, portfolios, tokens, self._offer_order_update)
                        if portfolios is not None and tokens is not None else None)
        self.ticks_consumed = 0
        self.ticks_conflated = 0
        self.dead_lettered = 0
        self.updates_fanned_out = 0
        self.slow_clients_dropped = 0
        self.protocol_errors = 0
        # Per connection (services.limits): channels joined at once, and messages per second.
        self._max_topics, self._message_rate = max_topics, (message_rate, message_burst)
        self.joins_refused = 0
        self.messages_rate_limited = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        # Subscribed before returning, so no update published after start() is missed.
        self._subscription = self._price_cache.subscribe()
        self._supervisor.start("market-data-consumer", self._consume)
        self._supervisor.start("market-data-fanout", self._fan_out)
        if self._orders is not None:
            self._supervisor.start("order-stream", lambda: self._orders.consume(self._stopping))

    async def stop(self) -> None:
        self._stopping.set()
        await self._supervisor.stop()
        for subscriber in list(self._subscribers):
            subscriber.kick(CLOSE_GOING_AWAY)

    def stats(self) -> dict[str, int]:
        return {"connectedClients": len(self._subscribers), "pushes": self._hub.pushes,
                "slowClientsDropped": self.slow_clients_dropped,
                "ticksConsumed": self.ticks_consumed, "ticksConflated": self.ticks_conflated,
                "deadLettered": self.dead_lettered,
                "orderUpdatesPushed": self._orders.pushed if self._orders else 0,
                "updatesFannedOut": self.updates_fanned_out,
                "protocolErrors": self.protocol_errors, "joinsRefused": self.joins_refused,
                "messagesRateLimited": self.messages_rate_limited}

    def routes(self) -> list[BaseRoute]:
        # Phoenix JS appends "/websocket" to the socket URL it is given.
        endpoint = _AsgiEndpoint(self._serve)
        return [WebSocketRoute(MARKETDATA_PATH, endpoint, name="marketdata"),
                WebSocketRoute(MARKETDATA_PATH + "/websocket", endpoint, name="marketdata-websocket")]

    # -- market_data -> price cache ------------------------------------------

    async def _consume(self) -> None:
        # Only the latest price matters, so a new group starts at the end.
        await run_consumer(self._event_log, TOPIC_MARKET_DATA, CONSUMER_GROUP, self._apply,
                           reset="latest", stop=self._stopping)

    async def _apply(self, records: list[LogRecord]) -> None:
        latest: dict[str, PriceTick] = {}
        undecodable: list[tuple[LogRecord, str]] = []
        for record in records:
            try:
                tick = decode_market_data(decode_envelope(record.value).payload)
            except EventDecodeError as exc:
                undecodable.append((record, str(exc)))
                continue
            # A symbol lives in one partition, so its records arrive in order.
            latest[tick.symbol] = tick
        decoded = len(records) - len(undecodable)
        # A batch of several ticks per symbol means we are behind: only the
        # newest is still a price, so the older ones are conflated away
        # rather than pushed late to every client.
        for tick in latest.values():
            await self._price_cache.set_price(tick)
        self.ticks_consumed += decoded
        self.ticks_conflated += decoded - len(latest)
        # Dead letters go last: if the cache fails first, the batch is retried
        # without publishing them twice (setting a price again is harmless).
        for record, reason in undecodable:
            await dead_letter(self._event_log, record, reason)
            self.dead_lettered += 1

    # -- price cache -> clients --------------------------------------------

    async def _fan_out(self) -> None:
        subscription, self._subscription = self._subscription, None
        subscription = subscription or self._price_cache.subscribe()
        try:
            async for tick in subscription:
                self._latest[tick.symbol] = tick
                self.updates_fanned_out += 1
                self._hub.publish(tick)
                metrics.price_fanned_out(tick.timestamp)
        finally:
            await subscription.aclose()

    def _offer_order_update(self, subscriber: Subscriber, topic: str, payload: dict) -> bool:
        if subscriber.close_code is not None:
            return False
        frame = _text_frame(phoenix.encode_message(order_push(topic, payload), subscriber.serializer))
        if subscriber.offer(frame):
            return True
        self._drop_slow(subscriber)
        return False

    def _drop_slow(self, subscriber: Subscriber) -> None:
        if self._orders is not None:
            self._orders.remove(subscriber)
        self._hub.remove(subscriber)
        self.slow_clients_dropped += 1
        metrics.WS_DROPPED.inc()
        log.warning("slow market-data client disconnected",
                    extra={"client": subscriber.peer, "buffer": self._client_buffer})
        subscriber.kick(CLOSE_TRY_AGAIN_LATER)

    # -- one WebSocket connection --------------------------------------------

    async def _serve(self, scope: AsgiMessage, receive: AsgiReceive, send: AsgiSend) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        subscriber = Subscriber(send, self._client_buffer, _announced_serializer(scope), _peer(scope),
                                self._client_address.of(scope))
        self._subscribers.add(subscriber)
        metrics.WS_CLIENTS.inc()
        reader = asyncio.create_task(self._read(subscriber, receive))
        sender = subscriber.start_sending()
        try:
            await asyncio.wait((reader, sender), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._orders is not None:
                self._orders.remove(subscriber)
            self._hub.remove(subscriber)
            self._subscribers.discard(subscriber)
            metrics.WS_CLIENTS.dec()
            reader.cancel()
            sender.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
        if subscriber.close_code is not None:
            # A stalled client may never take the close frame; do not wait forever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(send({"type": "websocket.close", "code": subscriber.close_code,
                                             "reason": _close_reason(subscriber.close_code)}),
                                       self._close_timeout)

    async def _read(self, subscriber: Subscriber, receive: AsgiReceive) -> None:
        rate = limits.MessageRate(*self._message_rate)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            await self._handle(subscriber, frame, rate.allow())
            # A burst of messages must not fill the client's queue with replies
            # before its sender runs: read on once it has drained to half.
            # (A client that reads nothing is dropped by the next push.)
            while (subscriber.backlog() > self._client_buffer // 2
                   and subscriber.close_code is None):
                await asyncio.sleep(0.002)

    async def _handle(self, subscriber: Subscriber, frame: str | bytes, allowed: bool = True) -> None:
        try:
            message, serializer = phoenix.decode_message(frame)
        except PhoenixProtocolError as exc:
            self.protocol_errors += 1
            log.info("ignored a frame that is not a Phoenix message",
                     extra={"client": subscriber.peer, "reason": str(exc)})
            return
        # What the client actually sends beats what its vsn parameter promised.
        subscriber.serializer = serializer
        if not allowed:  # over the connection's message rate: answered, not acted on
            self.messages_rate_limited += 1
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR,
                                                  {"reason": "rate limited"}))
        elif message.event == phoenix.EVENT_HEARTBEAT and message.topic == phoenix.PHOENIX_TOPIC:
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_OK))
        elif (message.event == phoenix.EVENT_JOIN and message.topic not in subscriber.topics
              and len(subscriber.topics) >= self._max_topics):
            self.joins_refused += 1
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR,
                                                  {"reason": "too many joins"}))
        elif message.event == phoenix.EVENT_JOIN:
            await self._join(subscriber, message)
        elif message.event == phoenix.EVENT_LEAVE:
            self._leave(subscriber, message)
        elif message.topic in subscriber.topics:
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR,
                                                  {"reason": f"unsupported event {message.event}"}))
        else:
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR,
                                                  {"reason": "unmatched topic"}))

    async def _join(self, subscriber: Subscriber, message: PhoenixMessage) -> None:
        if message.topic.startswith(ORDER_TOPIC_PREFIX) and self._orders is not None:
            await self._join_orders(subscriber, message)
            return
        symbol = message.topic.removeprefix(PRICE_TOPIC_PREFIX)
        if not message.topic.startswith(PRICE_TOPIC_PREFIX) or symbol not in self._symbols:
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR,
                                                  {"reason": "unknown symbol"}))
            return
        latest = await self._latest_price(symbol)
        # Reply first, then join, so the client never sees a push before its join reply.
        if self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_OK,
                                                 price_payload(latest) if latest else {})):
            self._hub.join(subscriber, message.topic, message.join_ref)

    async def _join_orders(self, subscriber: Subscriber, message: PhoenixMessage) -> None:
        assert self._orders is not None
        if message.topic in subscriber.topics:
            self._orders.leave(subscriber, message.topic)  # a rejoin starts afresh
        # Joined before the reply so no update slips between; pushes queue
        # behind the reply on the subscriber's one queue, so order holds.
        subscriber.topics[message.topic] = message.join_ref
        try:
            response = await self._orders.join(subscriber, message.topic, message.payload)
        except JoinRefused as exc:
            subscriber.topics.pop(message.topic, None)
            self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_ERROR, {"reason": str(exc)}))
            return
        except Exception:
            subscriber.topics.pop(message.topic, None)
            self._orders.leave(subscriber, message.topic)
            raise
        self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_OK, response))

    async def _latest_price(self, symbol: str) -> PriceTick | None:
        if symbol in self._latest:
            return self._latest[symbol]
        try:
            return await self._price_cache.get_price(symbol)
        except Exception as exc:  # a join without a snapshot beats a failed join
            log.warning("price cache read failed on join", extra={"symbol": symbol, "reason": repr(exc)})
            return None

    def _leave(self, subscriber: Subscriber, message: PhoenixMessage) -> None:
        joined = message.topic in subscriber.topics
        join_ref = subscriber.topics.get(message.topic)
        if self._orders is not None and message.topic.startswith(ORDER_TOPIC_PREFIX):
            self._orders.leave(subscriber, message.topic)
        self._hub.leave(subscriber, message.topic)
        if self._reply(subscriber, phoenix.reply(message, phoenix.STATUS_OK)) and joined:
            self._reply(subscriber, phoenix.close_notice(message.topic, join_ref))

    def _reply(self, subscriber: Subscriber, message: PhoenixMessage) -> bool:
        if subscriber.close_code is not None:
            return False
        if subscriber.offer(_text_frame(phoenix.encode_message(message, subscriber.serializer))):
            return True
        self._drop_slow(subscriber)
        return False


def _announced_serializer(scope: AsgiMessage) -> Serializer:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return phoenix.serializer_for_vsn(query.get("vsn", [None])[0])


def _peer(scope: AsgiMessage) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _close_reason(code: int) -> str:
    return "slow consumer" if code == CLOSE_TRY_AGAIN_LATER else "server shutting down"
