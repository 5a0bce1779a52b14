"""kill -9 with orders in flight: every accepted order ends exactly once."""

from __future__ import annotations

import asyncio
import json
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


JOB_CHILDREN = ("execution", "persistence")  # bootstrap.EMBEDDED_JOB_PROCESSES


def test_kill_9_mid_load_loses_and_duplicates_nothing(tmp_path):
    platform = RunningPlatform(tmp_path / "data").start()
    try:
        with OrderLoad(platform) as load:
            wait_for(lambda: len(load.accepted) >= 300, timeout=30)
            platform.kill()
        assert len(load.accepted) >= 300
        # Both job children died with `up` (the persistence child must not hold
        # chDB for the next one).
        for child in JOB_CHILDREN:
            pid = platform.pid_of(child)
            wait_for(lambda: not process_alive(pid), timeout=10)
        platform.start()
        _verify(platform)
        load.all_in_history()
    finally:
        platform.stop()


def restarts_of(platform: RunningPlatform, child: str) -> int:
    document = json.loads((platform.data_dir / "processes.json").read_text())
    return next(p["restarts"] for p in document["processes"] if p["name"] == child)


def volume(client: httpx.Client) -> httpx.Response:
    return client.get("/v1/analytics/volume", params={"timeWindow": "1h"})


@pytest.mark.parametrize("child", JOB_CHILDREN)
def test_kill_9_of_a_job_process_mid_load_loses_and_duplicates_nothing(tmp_path, child):
    platform = RunningPlatform(tmp_path / "data").start()
    try:
        with OrderLoad(platform) as load, platform.client(USERS[0]) as reader:
            wait_for(lambda: len(load.accepted) >= 200, timeout=30)
            # The persistence child owns chDB and answers the analytics route.
            assert volume(reader).status_code == 200
            first = platform.pid_of(child)
            other = platform.pid_of(next(c for c in JOB_CHILDREN if c != child))
            os.kill(first, signal.SIGKILL)
            if child == "persistence":
                # Until it is back, analytics is a clear 503, as when it hangs.
                down = wait_for(lambda: (r := volume(reader)).status_code == 503 and r,
                                timeout=10, interval=0.02)
                assert down.json()["error"]["code"] == "dependency_unavailable", down.text
                assert down.headers["Retry-After"] == "1"
            # `up` starts it again; orders keep being accepted meanwhile, and
            # the other child runs on untouched.
            wait_for(lambda: platform.pid_of(child) != first, timeout=30)
            wait_for(lambda: restarts_of(platform, child) == 1, timeout=10)
            count = len(load.accepted)
            wait_for(lambda: len(load.accepted) >= count + 200, timeout=30)
            assert platform.pid_of(next(c for c in JOB_CHILDREN if c != child)) == other
            assert process_alive(other)
            wait_for(lambda: volume(reader).status_code == 200, timeout=30, interval=0.2)
        _verify(platform)
        load.all_in_history()
    finally:
        platform.stop()


def test_analytics_answers_503_while_the_persistence_process_hangs_and_orders_still_execute(tmp_path):
    platform = RunningPlatform(tmp_path / "data").start()
    persistence = platform.pid_of("persistence")
    try:
        with platform.client("alice") as alice:
            assert volume(alice).status_code == 200
            os.kill(persistence, signal.SIGSTOP)
            try:
                answer = volume(alice)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "dependency_unavailable"
                assert "analytics" in answer.json()["error"]["message"]
                readiness = httpx.get(f"{platform.base}/readyz", timeout=10).json()
                assert readiness["checks"]["persistence-process"] != "ok", readiness
                assert readiness["checks"]["execution-process"] == "ok", readiness
                # Execution does not wait for persistence: orders still fill.
                placed = alice.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1",
                                                        "side": "BUY"})
                assert placed.status_code == 202, placed.text
                order = placed.json()["orderId"]
                wait_for(lambda: alice.get(f"/v1/orders/{order}").json().get("status") == "EXECUTED",
                         timeout=20, interval=0.2)
            finally:
                os.kill(persistence, signal.SIGCONT)
            # Back: analytics answers and the trade reaches history and the volume.
            wait_for(lambda: volume(alice).status_code == 200, timeout=20, interval=0.2)
            wait_for(lambda: any(t["orderId"] == order for t in
                                 alice.get("/v1/trades/search").json()["trades"]), timeout=20)
            wait_for(lambda: sum(s["tradeCount"] for s in volume(alice).json()["symbols"]) >= 1,
                     timeout=20)
        _verify(platform)
    finally:
        platform.stop()
