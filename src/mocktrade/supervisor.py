"""Background tasks that restart after a crash instead of dying silently."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("mocktrade.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._keep_running(name, factory), name=name)

    async def _keep_running(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        delay = 0.1
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.exception("background task crashed; restarting", extra={"task": name})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def running(self) -> dict[str, bool]:
        return {name: not task.done() for name, task in self._tasks.items()}

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
