"""The simulated exchange's WebSocket feed, served as an external vendor would.

Every connected client receives the same frames (see `parsers` for the wire
format): the ticks of the simulator's `run()`, which must be running for
ticks to flow. A client that cannot keep up is disconnected rather than
allowed to hold the others back or grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Sequence

import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..domain.model import PriceTick, utc_now
from ..domain.money import fmt
from .parsers import EVENT_HEARTBEAT, EVENT_TICK, EVENT_WELCOME, FEED_VERSION, time_to_micros
from .simulator import PriceSimulator

FEED_PATH = "/feed/v1/ticks"
FEED_NAME = "mocktrade-sim"
CLOSE_TRY_AGAIN_LATER = 1013

log = logging.getLogger("mocktrade.feed")


def format_ticks(ticks: Sequence[PriceTick]) -> str:
    return orjson.dumps([{"type": EVENT_TICK, "s": t.symbol, "p": fmt(t.price),
                          "t": time_to_micros(t.timestamp)} for t in ticks]).decode()


def format_control(kind: str, **fields: Any) -> str:
    return orjson.dumps([{"type": kind, **fields, "t": time_to_micros(utc_now())}]).decode()


class _FeedClient:
    def __init__(self, websocket: WebSocket, buffer: int):
        self.websocket = websocket
        self.frames: asyncio.Queue[str] = asyncio.Queue(buffer)
        self.overflowed = asyncio.Event()

    def offer(self, frame: str) -> None:
        try:
            self.frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def send_all(self) -> None:
        while True:
            await self.websocket.send_text(await self.frames.get())


class FeedBroadcaster:
    def __init__(self, simulator: PriceSimulator, client_buffer: int = 4096,
                 heartbeat_interval: float = 5.0):
        self._simulator = simulator
        self._client_buffer = client_buffer
        self._heartbeat_interval = heartbeat_interval
        self._clients: set[_FeedClient] = set()
        self._heartbeat: asyncio.Task | None = None
        self._last_frame_at = 0.0
        self.frames_sent = 0
        self.ticks_sent = 0
        self.clients_dropped = 0

    def stats(self) -> dict[str, int]:
        return {"clients": len(self._clients), "frames": self.frames_sent,
                "ticks": self.ticks_sent, "clientsDropped": self.clients_dropped}

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        client = _FeedClient(websocket, self._client_buffer)
        client.offer(format_control(EVENT_WELCOME, feed=FEED_NAME, version=FEED_VERSION,
                                    symbols=list(self._simulator.symbols)))
        self._join(client)
        tasks = [asyncio.create_task(client.send_all()),
                 asyncio.create_task(self._until_disconnect(websocket)),
                 asyncio.create_task(client.overflowed.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._leave(client)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if client.overflowed.is_set():
            self.clients_dropped += 1
            log.warning("feed client too slow; disconnected", extra={"client": _peer(websocket)})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(CLOSE_TRY_AGAIN_LATER, "slow consumer"), 1.0)

    @staticmethod
    async def _until_disconnect(websocket: WebSocket) -> None:
        # The feed takes no commands; reading only notices the client leaving.
        with contextlib.suppress(WebSocketDisconnect):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

    def _join(self, client: _FeedClient) -> None:
        if not self._clients:
            self._simulator.add_listener(self._on_ticks)
            self._heartbeat = asyncio.create_task(self._beat(), name="feed-heartbeat")
        self._clients.add(client)

    def _leave(self, client: _FeedClient) -> None:
        self._clients.discard(client)
        if not self._clients:
            self._simulator.remove_listener(self._on_ticks)
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                self._heartbeat = None

    def _on_ticks(self, batch: list[PriceTick]) -> None:
        self.ticks_sent += len(batch)
        self._broadcast(format_ticks(batch))

    def _broadcast(self, frame: str) -> None:
        self._last_frame_at = asyncio.get_running_loop().time()
        self.frames_sent += 1
        for client in self._clients:
            client.offer(frame)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if loop.time() - self._last_frame_at >= self._heartbeat_interval:
                self._broadcast(format_control(EVENT_HEARTBEAT))


def _peer(websocket: WebSocket) -> str:
    return f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown"


def feed_routes(simulator: PriceSimulator, *, client_buffer: int = 4096) -> list[BaseRoute]:
    """The feed endpoint, to mount on any Starlette or FastAPI app.

    Ticks flow while `simulator.run()` runs (a background task of the app).
    """
    return [WebSocketRoute(FEED_PATH, FeedBroadcaster(simulator, client_buffer).serve)]
