"""kill -9 with orders in flight: every accepted order ends exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import httpx
import pytest

from .conftest import RunningPlatform, process_alive, wait_for

pytestmark = pytest.mark.e2e

USERS = ("crash1", "crash2", "crash3")


class OrderLoad:
    """Three users sending market orders as fast as the server answers, in a
    thread, until stopped or the server dies under them."""

    def __init__(self, platform: RunningPlatform):
        self.platform = platform
        for user in USERS:
            platform.cli("accounts", "create", user, "--cash", "100000.00")
        self.tokens = {user: platform.token(user) for user in USERS}
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _one(self, user: str) -> None:
        async with httpx.AsyncClient(base_url=self.platform.base, timeout=5, headers={
                "Authorization": f"Bearer {self.tokens[user]}"}) as client:
            side = "BUY"
            for i in range(2000):
                if self._stop.is_set():
                    return
                try:
                    r = await client.post("/v1/orders", json={
                        "symbol": "MOCKAAPL", "quantity": "0.5", "side": side})
                except httpx.HTTPError:
                    return  # the server died under us
                if r.status_code == 202:
                    self.accepted.append(r.json()["orderId"])
                side = "SELL" if side == "BUY" and i % 3 == 2 else "BUY"

    async def _run(self) -> None:
        await asyncio.gather(*(self._one(u) for u in USERS))

    def __enter__(self) -> "OrderLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)

    def all_in_history(self) -> None:
        seen = set()
        for user in USERS:
            with self.platform.client(user) as client:
                token = None
                while True:
                    params = {"limit": 500, **({"pageToken": token} if token else {})}
                    page = client.get("/v1/trades/search", params=params).json()
                    seen.update(t["orderId"] for t in page["trades"])
                    token = page["nextPageToken"]
                    if not token:
                        break
        assert set(self.accepted) <= seen


def _verify(platform: RunningPlatform) -> None:
    result = platform.cli("verify", "--wait", "60", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kill_9_mid_load_loses_and_duplicates_nothing(tmp_path):
    platform = RunningPlatform(tmp_path / "data").start()
    try:
        with OrderLoad(platform) as load:
            wait_for(lambda: len(load.accepted) >= 300, timeout=30)
            platform.kill()
        assert len(load.accepted) >= 300
        # The job process died with `up` (it must not hold chDB for the next one).
        jobs_pid = int((platform.data_dir / "logs" / "jobs.pid").read_text())
        wait_for(lambda: not process_alive(jobs_pid), timeout=10)
        platform.start()
        _verify(platform)
        load.all_in_history()
    finally:
        platform.stop()


def test_kill_9_of_the_job_process_mid_load_loses_and_duplicates_nothing(tmp_path):
    platform = RunningPlatform(tmp_path / "data").start()
    try:
        with OrderLoad(platform) as load:
            wait_for(lambda: len(load.accepted) >= 200, timeout=30)
            first = int((platform.data_dir / "logs" / "jobs.pid").read_text())
            os.kill(first, signal.SIGKILL)
            # `up` starts it again; orders keep being accepted meanwhile.
            wait_for(lambda: int((platform.data_dir / "logs" / "jobs.pid").read_text()) != first,
                     timeout=30)
            count = len(load.accepted)
            wait_for(lambda: len(load.accepted) >= count + 200, timeout=30)
        _verify(platform)
        load.all_in_history()
    finally:
        platform.stop()
