"""The market-data service against in-memory ports and a scripted ASGI connection."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Mapping, Sequence

import orjson
import pytest

from mocktrade.domain.events import TOPIC_MARKET_DATA, encode, market_data_payload
from mocktrade.domain.model import PriceTick
from mocktrade.ports import LogRecord
from mocktrade.services.marketdata import MarketDataService

SYMBOLS = ["MOCKAAA", "MOCKBBB"]
AT = datetime(2024, 11, 25, 16, 0, tzinfo=timezone.utc)


# -- in-memory ports ------------------------------------------------------------

class MemoryEventLog:
    def __init__(self) -> None:
        self.topics: dict[str, list[LogRecord]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        records = self.topics[topic]
        records.append(LogRecord(topic, 0, len(records), key, value, dict(headers or {})))
        async with self._changed:
            self._changed.notify_all()

    def consumer(self, topic: str, group: str,
                 reset: Literal["earliest", "latest"] = "earliest") -> "MemoryConsumer":
        return MemoryConsumer(self, topic, len(self.topics[topic]) if reset == "latest" else 0)

    async def close(self) -> None:
        pass


class MemoryConsumer:
    def __init__(self, log: MemoryEventLog, topic: str, position: int):
        self._log, self._topic, self._position = log, topic, position

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[LogRecord]:
        records = self._log.topics[self._topic]
        if self._position >= len(records):
            async with self._log._changed:
                try:
                    await asyncio.wait_for(self._log._changed.wait(), timeout)
                except asyncio.TimeoutError:
                    return []
        batch = records[self._position:self._position + max_records]
        self._position += len(batch)
        return batch

    async def commit(self, records: Sequence[LogRecord]) -> None:
        pass

    async def close(self) -> None:
        pass


class MemorySubscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[PriceTick] = asyncio.Queue()

    def __aiter__(self):
        return self

    async def __anext__(self) -> PriceTick:
        return await self.queue.get()

    async def aclose(self) -> None:
        pass


class MemoryPriceCache:
    def __init__(self) -> None:
        self.latest: dict[str, PriceTick] = {}
        self.subscriptions: list[MemorySubscription] = []

    async def set_price(self, tick: PriceTick) -> None:
        self.latest[tick.symbol] = tick
        for subscription in self.subscriptions:
            subscription.queue.put_nowait(tick)

    async def get_price(self, symbol: str) -> PriceTick | None:
        return self.latest.get(symbol)

    async def all_prices(self) -> dict[str, PriceTick]:
        return dict(self.latest)

    def subscribe(self) -> MemorySubscription:
        subscription = MemorySubscription()
        self.subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        pass


# -- a scripted WebSocket connection --------------------------------------------

class Connection:
    """The client side of one ASGI WebSocket connection to the endpoint."""

    def __init__(self, service: MarketDataService, query: str = "", stalled: bool = False):
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.stalled = stalled
        self.cursor = 0
        self.incoming.put_nowait({"type": "websocket.connect"})
        scope = {"type": "websocket", "path": "/v1/marketdata", "query_string": query.encode(),
                 "client": ("127.0.0.1", 5000)}
        endpoint = service.routes()[0].app
        self.task = asyncio.create_task(endpoint(scope, self.incoming.get, self._send))

    async def _send(self, message: dict[str, Any]) -> None:
        if self.stalled and message["type"] == "websocket.send":
            await asyncio.Event().wait()  # a socket whose peer never reads
        self.sent.append(message)
        self.arrived.set()

    def say(self, message: Any) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": orjson.dumps(message).decode()})

    def frames(self) -> list[Any]:
        return [orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    async def next_frame(self, timeout: float = 2.0) -> Any:
        """The frame after the last one this test read, waiting for it if need be."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.frames()) <= self.cursor:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), deadline - asyncio.get_running_loop().time())
        self.cursor += 1
        return self.frames()[self.cursor - 1]

    async def disconnect(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 2)


def v1(topic: str, event: str, ref: str = "1", payload: Any = None) -> dict[str, Any]:
    return {"topic": topic, "event": event, "payload": payload or {}, "ref": ref, "join_ref": ref}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def ports():
    return MemoryEventLog(), MemoryPriceCache()


@pytest.fixture
async def service(ports):
    event_log, cache = ports
    running = MarketDataService(event_log, cache, SYMBOLS, client_buffer=8, close_timeout=0.1)
    await running.start()
    yield running
    await running.stop()


def tick(price: str, symbol: str = "MOCKAAA") -> PriceTick:
    return PriceTick(symbol, Decimal(price), AT)


# -- market_data -> price cache -------------------------------------------------

async def test_market_data_events_become_cached_prices(ports, service):
    event_log, cache = ports
    await event_log.publish(TOPIC_MARKET_DATA, "MOCKAAA", encode("test", market_data_payload(tick("12.5000"))))
    for _ in range(100):
        if "MOCKAAA" in cache.latest:
            break
        await asyncio.sleep(0.01)
    assert cache.latest["MOCKAAA"] == tick("12.5000")
    assert service.stats()["ticksConsumed"] == 1


async def test_a_backlog_of_one_symbol_is_conflated_to_its_newest_tick(ports, service):
    event_log, cache = ports
    client = Connection(service)
    client.say(v1("prices:MOCKAAA", "phx_join"))
    await client.next_frame()
    await settle()
    for price in ("1.0000", "2.0000", "3.0000"):  # all land before the consumer polls again
        await event_log.publish(TOPIC_MARKET_DATA, "MOCKAAA",
                                encode("test", market_data_payload(tick(price))))
    assert (await client.next_frame())["payload"]["price"] == "3.0000"
    await settle()
    assert len(client.frames()) == 2
    assert cache.latest["MOCKAAA"].price == Decimal("3.0000")
    assert service.stats()["ticksConsumed"] == 3 and service.stats()["ticksConflated"] == 2


async def test_undecodable_records_go_to_the_dead_letter_topic(ports, service):
    event_log, cache = ports
    await event_log.publish(TOPIC_MARKET_DATA, "MOCKAAA", b"{not json", {"origin": "test"})
    for _ in range(100):
        if event_log.topics["market_data.dlq"]:
            break
        await asyncio.sleep(0.01)
    [letter] = event_log.topics["market_data.dlq"]
    assert letter.value == b"{not json" and letter.key == "MOCKAAA"
    assert "not JSON" in letter.headers["dlq.reason"]
    assert letter.headers["origin"] == "test"
    assert service.stats()["deadLettered"] == 1
    assert cache.latest == {}


# -- the Phoenix endpoint -------------------------------------------------------

async def test_join_replies_ok_with_the_latest_price_then_pushes_updates(ports, service):
    _, cache = ports
    await cache.set_price(tick("10.0000"))
    client = Connection(service)
    client.say(v1("prices:MOCKAAA", "phx_join", "7"))
    assert await client.next_frame() == {
        "topic": "prices:MOCKAAA", "event": "phx_reply", "ref": "7", "join_ref": "7",
        "payload": {"status": "ok", "response": {"symbol": "MOCKAAA", "price": "10.0000",
                                                 "timestamp": "2024-11-25T16:00:00.000000Z"}}}
    await cache.set_price(tick("10.5000"))
    assert await client.next_frame() == {
        "topic": "prices:MOCKAAA", "event": "price_update", "ref": None, "join_ref": None,
        "payload": {"symbol": "MOCKAAA", "price": "10.5000", "timestamp": "2024-11-25T16:00:00.000000Z"}}
    await client.disconnect()
    assert service.stats()["connectedClients"] == 0


async def test_v2_clients_get_arrays(ports, service):
    _, cache = ports
    client = Connection(service, "vsn=2.0.0")
    client.say(["4", "5", "prices:MOCKBBB", "phx_join", {}])
    assert await client.next_frame() == ["4", "5", "prices:MOCKBBB", "phx_reply",
                                         {"status": "ok", "response": {}}]
    await cache.set_price(tick("3.0000", "MOCKBBB"))
    push = await client.next_frame()
    assert push[:4] == [None, None, "prices:MOCKBBB", "price_update"]
    assert push[4]["price"] == "3.0000"


async def test_updates_reach_only_the_members_of_their_topic(ports, service):
    _, cache = ports
    a, b = Connection(service), Connection(service)
    a.say(v1("prices:MOCKAAA", "phx_join"))
    b.say(v1("prices:MOCKBBB", "phx_join"))
    await a.next_frame()
    await b.next_frame()
    await cache.set_price(tick("1.0000", "MOCKAAA"))
    assert (await a.next_frame())["payload"]["symbol"] == "MOCKAAA"
    await settle()
    assert len(b.frames()) == 1


async def test_each_update_is_encoded_once_per_serializer(ports, service):
    _, cache = ports
    clients = [Connection(service), Connection(service), Connection(service, "vsn=2.0.0")]
    for client in clients[:2]:
        client.say(v1("prices:MOCKAAA", "phx_join"))
    clients[2].say(["1", "1", "prices:MOCKAAA", "phx_join", {}])
    for client in clients:
        await client.next_frame()
    await cache.set_price(tick("2.0000"))
    for client in clients:
        await client.next_frame()
    first, second, third = (c.sent[-1] for c in clients)
    assert first is second  # the very same frame object went to both v1 clients
    assert third is not first and third["text"].startswith("[")


@pytest.mark.parametrize("topic", ["prices:NOPE", "prices:", "trades:MOCKAAA", "MOCKAAA"])
async def test_joining_an_unknown_symbol_or_malformed_topic_is_an_error(service, topic):
    client = Connection(service)
    client.say(v1(topic, "phx_join", "2"))
    reply = await client.next_frame()
    assert reply["event"] == "phx_reply" and reply["ref"] == "2"
    assert reply["payload"] == {"status": "error", "response": {"reason": "unknown symbol"}}


async def test_heartbeat_is_answered_ok(service):
    client = Connection(service)
    client.say({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"})
    assert await client.next_frame() == {"topic": "phoenix", "event": "phx_reply", "ref": "9",
                                         "join_ref": None, "payload": {"status": "ok", "response": {}}}


async def test_leave_replies_ok_closes_the_channel_and_stops_pushes(ports, service):
    _, cache = ports
    client = Connection(service)
    client.say(v1("prices:MOCKAAA", "phx_join", "1"))
    await client.next_frame()
    client.say({"topic": "prices:MOCKAAA", "event": "phx_leave", "payload": {}, "ref": "2", "join_ref": "1"})
    leave_reply = await client.next_frame()
    assert (leave_reply["event"], leave_reply["ref"], leave_reply["payload"]["status"]) == ("phx_reply", "2", "ok")
    close = await client.next_frame()
    assert (close["event"], close["ref"], close["join_ref"]) == ("phx_close", "1", "1")
    await cache.set_price(tick("4.0000"))
    await settle()
    assert len(client.frames()) == 3


async def test_other_events_on_topics_not_joined_are_unmatched(service):
    client = Connection(service)
    client.say(v1("prices:MOCKAAA", "shout"))
    assert (await client.next_frame())["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}


async def test_frames_that_are_not_phoenix_messages_are_ignored_and_counted(service):
    client = Connection(service)
    client.incoming.put_nowait({"type": "websocket.receive", "text": "hello"})
    client.say({"topic": "phoenix", "event": "heartbeat", "ref": "1"})
    assert (await client.next_frame())["payload"]["status"] == "ok"
    assert service.stats()["protocolErrors"] == 1


async def test_a_slow_client_is_dropped_with_1013_while_others_keep_receiving(ports, service):
    _, cache = ports
    fast, slow = Connection(service), Connection(service, stalled=True)
    fast.say(v1("prices:MOCKAAA", "phx_join"))
    slow.say(v1("prices:MOCKAAA", "phx_join"))
    await fast.next_frame()
    await settle()
    for i in range(20):  # more than the slow client's 8-frame queue
        await cache.set_price(tick(f"{i + 1}.0000"))
        await fast.next_frame()
    await asyncio.wait_for(slow.task, 2)
    stats = service.stats()
    assert stats["slowClientsDropped"] == 1
    assert stats["connectedClients"] == 1
    assert len(fast.frames()) == 21
    slow.stalled = False  # whether the close frame gets out depends on the peer reading
    await cache.set_price(tick("99.0000"))
    assert (await fast.next_frame())["payload"]["price"] == "99.0000"


async def test_the_close_after_a_drop_says_try_again_later(ports, service):
    _, cache = ports
    client = Connection(service, stalled=True)
    client.say(v1("prices:MOCKAAA", "phx_join"))
    await settle()
    for i in range(12):  # the join reply blocks the sender; updates fill the queue behind it
        await cache.set_price(tick(f"{i + 1}.0000"))
        await settle()
    client.stalled = False
    await asyncio.wait_for(client.task, 2)
    assert client.sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}


async def test_stop_closes_every_client_as_going_away(ports):
    event_log, cache = ports
    running = MarketDataService(event_log, cache, SYMBOLS, client_buffer=8)
    await running.start()
    client = Connection(running)
    client.say(v1("phoenix", "heartbeat"))
    await client.next_frame()
    await running.stop()
    await asyncio.wait_for(client.task, 2)
    assert client.sent[-1]["type"] == "websocket.close" and client.sent[-1]["code"] == 1001


def test_a_client_buffer_below_one_is_refused(ports):
    with pytest.raises(ValueError):
        MarketDataService(*ports, SYMBOLS, client_buffer=0)
