"""A feed whose prices the test chooses: a WebSocket server speaking the
exchange feed's wire format (see mocktrade.feed.parsers), for MOCKTRADE_FEED_URL.

It repeats each symbol's latest price every `interval` seconds, so the
platform has prices from the start and a reconnecting ingester catches up;
repeating a price crosses nothing new. `tick()` sends a new price at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from decimal import Decimal

import orjson
from websockets.asyncio.server import ServerConnection, serve


def _micros() -> int:
    return time.time_ns() // 1000


class ControlledFeed:
    def __init__(self, prices: dict[str, str], interval: float = 0.5):
        self.prices = {s: Decimal(p) for s, p in prices.items()}
        self.interval = interval
        # Seconds added to the feed's clock: a feed whose clock jumps.
        self.clock_offset = 0.0
        self._clients: set[ServerConnection] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/feed"

    def start(self) -> "ControlledFeed":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self._stop = asyncio.Event()
        async with serve(self._client, sock=sock, compression=None):
            repeater = asyncio.create_task(self._repeat())
            await self._stop.wait()
            repeater.cancel()

    async def _client(self, ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "welcome", "feed": "test", "version": 1,
                                    "symbols": sorted(self.prices), "t": _micros()}).decode())
        self._clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            self._clients.discard(ws)

    async def _repeat(self) -> None:
        while True:
            await self._broadcast(dict(self.prices))
            await asyncio.sleep(self.interval)

    async def _broadcast(self, prices: dict[str, Decimal]) -> None:
        t = _micros() + int(self.clock_offset * 1_000_000)
        frame = orjson.dumps([{"type": "tick", "s": s, "p": str(p), "t": t}
                              for s, p in prices.items()]).decode()
        for ws in list(self._clients):
            try:
                await ws.send(frame)
            except Exception:
                self._clients.discard(ws)

    def tick(self, symbol: str, price: str) -> None:
        """Send a new price now (and repeat it from then on)."""
        self.prices[symbol] = Decimal(price)
        asyncio.run_coroutine_threadsafe(
            self._broadcast({symbol: self.prices[symbol]}), self._loop).result(5)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        time.sleep(0.1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
