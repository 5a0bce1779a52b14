"""The price path end to end: feed -> ingestion -> market_data -> cache -> Phoenix clients.

A real uvicorn server (in a thread with its own event loop) runs the feed
endpoint, ingestion, and the market-data service on the embedded adapters;
real `websockets` clients talk to it over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette

from mocktrade.adapters.embedded.eventlog import SqliteEventLog
from mocktrade.adapters.embedded.prices import EmbeddedPriceCache
from mocktrade.domain.events import TOPIC_MARKET_DATA, decode_envelope, decode_market_data, parse_time
from mocktrade.feed.parsers import parse_events, parse_frame
from mocktrade.feed.server import FEED_PATH, feed_routes
from mocktrade.feed.simulator import PriceSimulator
from mocktrade.services.ingestion import IngestionService
from mocktrade.services.marketdata import MarketDataService

pytestmark = pytest.mark.e2e

SYMBOLS = ["MOCKAAA", "MOCKBBB", "MOCKCCC"]


@dataclass
class PricePathServer:
    data_dir: Path
    symbols: list[str]
    ticks_per_second: float
    client_buffer: int = 256
    send_buffer: int | None = None  # SO_SNDBUF for accepted sockets; small makes stalls quick
    port: int = 0
    marketdata: MarketDataService | None = None
    ingestion: IngestionService | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _sockets: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/marketdata"

    def _app(self) -> Starlette:
        # Built here, used only on the server's loop: none of them binds a
        # loop before first use.
        simulator = PriceSimulator(self.symbols, self.ticks_per_second, 0.4, seed=11)
        event_log = SqliteEventLog(self.data_dir / "eventlog.sqlite3")
        prices = EmbeddedPriceCache(self.data_dir / "prices.sqlite3")
        # A dropped client gets its close frame once it reads again: allow a loaded
        # machine more than the default 2 s for the test's slow reader to get there.
        self.marketdata = MarketDataService(event_log, prices, self.symbols, self.client_buffer,
                                            close_timeout=10.0)
        self.ingestion = IngestionService(f"ws://127.0.0.1:{self.port}{FEED_PATH}", event_log)

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            await self.marketdata.start()
            tasks = [asyncio.create_task(simulator.run()), asyncio.create_task(self.ingestion.run())]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.marketdata.stop()
                await prices.close()
                await event_log.close()

        return Starlette(routes=[*feed_routes(simulator), *self.marketdata.routes()], lifespan=lifespan)

    def start(self) -> "PricePathServer":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.send_buffer:
            # Accepted sockets inherit it, and a fixed size turns off autotuning.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._sockets = [listener]
        app = self._app()
        config = uvicorn.Config(app, ws="websockets-sansio", log_level="warning", access_log=False,
                                ws_per_message_deflate=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=(self._sockets,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("price path server did not start")
            time.sleep(0.02)
        while self.marketdata.stats()["ticksConsumed"] < 2 * len(self.symbols):
            if time.monotonic() > deadline:
                raise RuntimeError("no prices flowing through the price path")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = PricePathServer(tmp_path_factory.mktemp("price-path"), SYMBOLS, 150.0).start()
    yield running
    running.stop()


# -- a small Phoenix client -------------------------------------------------------

class Phoenix:
    def __init__(self, ws: websockets.ClientConnection, v2: bool):
        self.ws, self.v2 = ws, v2

    async def send(self, topic: str, event: str, ref: str, join_ref: str | None = None,
                   payload: Any = None) -> None:
        payload = payload or {}
        message: Any = ([join_ref, ref, topic, event, payload] if self.v2 else
                        {"topic": topic, "event": event, "payload": payload, "ref": ref,
                         "join_ref": join_ref})
        await self.ws.send(orjson.dumps(message).decode())

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message, as a v1-shaped dict whichever serializer carried it."""
        raw = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if self.v2:
            assert isinstance(raw, list) and len(raw) == 5, raw
            join_ref, ref, topic, event, payload = raw
            return {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
        assert isinstance(raw, dict), raw
        return raw

    async def join(self, topic: str, ref: str = "1") -> dict[str, Any]:
        await self.send(topic, "phx_join", ref, ref)
        return await self.receive()

    async def updates(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await self.receive(timeout)
            if message["event"] == "price_update":
                found.append(message)
        return found


@contextlib.asynccontextmanager
async def phoenix(url: str, v2: bool = False, **options):
    # A client that stops reading with pushes in flight can miss the server's
    # close reply behind its own full queue; do not wait the default 10 s.
    async with websockets.connect(url + ("?vsn=2.0.0" if v2 else "?vsn=1.0.0"),
                                  compression=None, close_timeout=1, **options) as ws:
        yield Phoenix(ws, v2)


# -- the feed ------------------------------------------------------------------------

async def test_the_feed_greets_then_streams_ticks_of_the_configured_symbols(server):
    async with websockets.connect(f"ws://127.0.0.1:{server.port}{FEED_PATH}") as feed:
        welcome = parse_events(await asyncio.wait_for(feed.recv(), 5))
        assert welcome[0]["type"] == "welcome" and welcome[0]["symbols"] == SYMBOLS
        ticks = []
        while len(ticks) < 10:
            ticks.extend(parse_frame(await asyncio.wait_for(feed.recv(), 5)))
    assert {t.symbol for t in ticks} == set(SYMBOLS)
    assert all(t.price.as_tuple().exponent == -4 for t in ticks)


# -- the Phoenix endpoint ------------------------------------------------------------

async def test_a_v1_client_joins_and_receives_price_updates(server):
    async with phoenix(server.url) as client:
        reply = await client.join("prices:MOCKAAA", "7")
        assert (reply["event"], reply["ref"], reply["join_ref"]) == ("phx_reply", "7", "7")
        assert reply["payload"]["status"] == "ok"
        snapshot = reply["payload"]["response"]
        assert snapshot["symbol"] == "MOCKAAA" and Decimal(snapshot["price"]) > 0
        updates = await client.updates(10)
    for update in updates:
        assert update["topic"] == "prices:MOCKAAA"
        assert set(update["payload"]) == {"symbol", "price", "timestamp"}
        assert update["payload"]["symbol"] == "MOCKAAA"
        assert Decimal(update["payload"]["price"]).as_tuple().exponent == -4
    stamps = [parse_time(u["payload"]["timestamp"], "timestamp") for u in updates]
    assert stamps == sorted(stamps)


async def test_a_v2_client_on_the_websocket_alias_gets_arrays(server):
    async with websockets.connect(server.url + "/websocket?vsn=2.0.0", compression=None) as ws:
        await ws.send(orjson.dumps(["3", "4", "prices:MOCKBBB", "phx_join", {}]).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply[:4] == ["3", "4", "prices:MOCKBBB", "phx_reply"]
        assert reply[4]["status"] == "ok"
        push = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert push[:4] == [None, None, "prices:MOCKBBB", "price_update"]
    assert push[4]["symbol"] == "MOCKBBB"


async def test_joining_an_unknown_symbol_is_an_error(server):
    async with phoenix(server.url, v2=True) as client:
        reply = await client.join("prices:NOTLISTED", "2")
        assert reply["event"] == "phx_reply" and reply["ref"] == "2"
        assert reply["payload"] == {"status": "error", "response": {"reason": "unknown symbol"}}
        # The connection stays usable.
        assert (await client.join("prices:MOCKCCC", "3"))["payload"]["status"] == "ok"


async def test_heartbeat_is_answered_ok(server):
    async with phoenix(server.url) as client:
        await client.send("phoenix", "heartbeat", "5")
        reply = await client.receive()
    assert reply == {"topic": "phoenix", "event": "phx_reply", "ref": "5", "join_ref": None,
                     "payload": {"status": "ok", "response": {}}}


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
async def test_leave_stops_the_pushes_of_that_topic(server, v2):
    async with phoenix(server.url, v2=v2) as client:
        await client.join("prices:MOCKAAA", "1")
        await client.join("prices:MOCKBBB", "2")
        await client.updates(3)
        await client.send("prices:MOCKAAA", "phx_leave", "3", "1")
        while (message := await client.receive())["ref"] != "3":
            pass  # pushes that were already queued before the leave
        assert message["event"] == "phx_reply" and message["payload"]["status"] == "ok"
        close = await client.receive()
        assert (close["topic"], close["event"], close["join_ref"]) == ("prices:MOCKAAA", "phx_close", "1")
        # Half a second is ~25 MOCKAAA ticks; none may arrive, MOCKBBB's still do.
        after = await client.updates(10)
    assert {u["topic"] for u in after} == {"prices:MOCKBBB"}


async def test_a_slow_client_is_dropped_while_a_fast_client_keeps_receiving(tmp_path):
    path = PricePathServer(tmp_path, ["MOCKAAA"], 500.0, client_buffer=64, send_buffer=8192).start()
    try:
        # The slow client reads nothing: one frame fills its queue, then its
        # tiny receive window fills, then the server's send buffer, then its
        # queue on the server. The fast client has the same buffers, and reads.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
        stalled.connect(("127.0.0.1", path.port))
        async with phoenix(path.url, sock=stalled, max_queue=1) as slow, phoenix(path.url) as fast:
            await slow.send("prices:MOCKAAA", "phx_join", "1", "1")
            await fast.join("prices:MOCKAAA")
            received = 0
            deadline = time.monotonic() + 20
            while path.marketdata.stats()["slowClientsDropped"] == 0:
                assert time.monotonic() < deadline, "the slow client was never dropped"
                received += len(await fast.updates(20))
            received += len(await fast.updates(50))  # and the fast one carries on
            stats = path.marketdata.stats()
            assert stats["slowClientsDropped"] == 1 and stats["connectedClients"] == 1
            # Once the slow client reads again, it finds the server closed it.
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        path.stop()
    assert received >= 70


# -- ingestion -----------------------------------------------------------------------

async def test_ingestion_skips_malformed_ticks_and_reconnects(tmp_path):
    connections = 0

    async def exchange(ws):
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.send('[{"type":"welcome","feed":"test","version":1,"symbols":[],"t":1}]')
            await ws.send('[{"type":"tick","s":"MOCKAAA","p":"oops","t":1732550400000000},'
                          ' {"type":"tick","s":"MOCKAAA","p":"10.0000","t":1732550400000001}]')
            await ws.send("garbage")
            return  # the exchange drops the connection
        await ws.send('[{"type":"tick","s":"MOCKBBB","p":"20.5000","t":1732550401000000}]')
        await ws.wait_closed()

    event_log = SqliteEventLog(tmp_path / "eventlog.sqlite3")
    ingestion = await _ingest(exchange, event_log, 2, initial_backoff=0.05)
    assert ingestion.malformed_ticks == 2 and ingestion.reconnects >= 1
    consumer = event_log.consumer(TOPIC_MARKET_DATA, "test")
    records = await consumer.poll(10, 1)
    await event_log.close()
    ticks = sorted((r.key, decode_market_data(decode_envelope(r.value).payload)) for r in records)
    assert [(key, tick.symbol, tick.price) for key, tick in ticks] == [
        ("MOCKAAA", "MOCKAAA", Decimal("10.0000")), ("MOCKBBB", "MOCKBBB", Decimal("20.5000"))]
    assert decode_envelope(records[0].value).source_service == "ingestion"


async def _ingest(exchange, event_log, ticks: int, **options) -> IngestionService:
    """Run ingestion against a feed served by `exchange` until it has
    published `ticks` ticks (10 s at most), then stop it."""
    async with websockets.serve(exchange, "127.0.0.1", 0) as feed_server:
        port = feed_server.sockets[0].getsockname()[1]
        ingestion = IngestionService(f"ws://127.0.0.1:{port}/", event_log, **options)
        task = asyncio.create_task(ingestion.run())
        try:
            deadline = time.monotonic() + 10
            while ingestion.ticks_published < ticks:
                assert time.monotonic() < deadline, ingestion.stats()
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return ingestion


async def test_a_restarted_ingestion_never_records_a_tick_before_the_last_price(tmp_path):
    """The feed clock resumes from the price cache: a feed lagging 20 s
    (inside the skew window) right after ingestion restarts must not record
    a tick before the price the platform already has."""
    from datetime import datetime, timedelta, timezone

    from mocktrade.domain.model import PriceTick

    last = datetime.now(timezone.utc).replace(microsecond=0)
    lagging_us = int((last - timedelta(seconds=20)).timestamp() * 1_000_000)

    async def exchange(ws):
        await ws.send(f'[{{"type":"tick","s":"MOCKAAA","p":"11.0000","t":{lagging_us}}}]')
        await ws.wait_closed()

    event_log = SqliteEventLog(tmp_path / "eventlog.sqlite3")
    prices = EmbeddedPriceCache(tmp_path / "prices.sqlite3")
    await prices.set_price(PriceTick("MOCKAAA", Decimal("10.0000"), last))
    ingestion = await _ingest(exchange, event_log, 1, prices=prices)
    [record] = await event_log.consumer(TOPIC_MARKET_DATA, "test").poll(10, 1)
    await prices.close()
    await event_log.close()
    tick = decode_market_data(decode_envelope(record.value).payload)
    assert tick.price == Decimal("11.0000") and tick.timestamp > last
    assert ingestion.stats()["orderCorrected"] == 1


async def test_undecodable_market_data_is_dead_lettered_on_the_embedded_log(tmp_path):
    event_log = SqliteEventLog(tmp_path / "eventlog.sqlite3")
    prices = EmbeddedPriceCache(tmp_path / "prices.sqlite3")
    service = MarketDataService(event_log, prices, SYMBOLS)
    await service.start()
    try:
        await asyncio.sleep(0.1)  # the consumer starts at the end of the topic
        await event_log.publish(TOPIC_MARKET_DATA, "MOCKAAA", b'{"schemaVersion": 1}')
        dlq = event_log.consumer("market_data.dlq", "test")
        [letter] = await dlq.poll(10, 5)
    finally:
        await service.stop()
        await prices.close()
        await event_log.close()
    assert letter.key == "MOCKAAA" and letter.value == b'{"schemaVersion": 1}'
    assert letter.headers["dlq.topic"] == TOPIC_MARKET_DATA
    assert "payload" in letter.headers["dlq.reason"]
    assert service.stats()["deadLettered"] == 1
