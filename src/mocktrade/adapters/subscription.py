"""What every price subscription shares: a bounded buffer that never blocks
the publisher. When the reader falls behind, the oldest update makes room
(counted in `dropped`): for prices the newest matters most."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ..domain.model import PriceTick

END = None  # queued after the last update when a subscription ends


class BoundedSubscription:
    """ports.PriceSubscription's iteration; adapters add how updates arrive."""

    def __init__(self, maxsize: int):
        self._queue: asyncio.Queue[PriceTick | None] = asyncio.Queue(maxsize)
        self._closed = False
        self.dropped = 0

    def offer(self, item: PriceTick | None) -> None:
        """Enqueue without ever blocking; the oldest update makes room."""
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[PriceTick]:
        return self

    async def __anext__(self) -> PriceTick:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        tick = await self._queue.get()
        if tick is END:
            self._closed = True
            raise StopAsyncIteration
        return tick

    def _discard_and_end(self) -> None:
        """Forget what is pending and wake a reader blocked in __anext__."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(END)
