"""Distributed mode under failure and scale-out: real engines, one process per
service and job, replicas, and engines or replicas going away under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import pytest
import websockets

from mocktrade import stack

from .conftest import RunningPlatform, verify, wait_for

pytestmark = pytest.mark.e2e

USERS = ("load1", "load2", "load3", "load4")


@pytest.fixture(scope="module")
def cluster(real_engines, tmp_path_factory):
    running = RunningPlatform(tmp_path_factory.mktemp("cluster") / "data", engines=real_engines,
                              extra_args=("--replicas", "marketdata=2,execution=2"))
    running.start()
    for user in USERS:
        running.cli("accounts", "create", user, "--cash", "1000000.00")
    yield running
    running.stop()


class Load:
    """Orders from several users in a background thread until stopped."""

    PAUSE = 0.01  # between one user's orders

    def __init__(self, platform: RunningPlatform):
        self.platform = platform
        self.tokens = {u: platform.token(u) for u in USERS}
        self.accepted: list[str] = []
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _one_user(self, user: str) -> None:
        async with httpx.AsyncClient(base_url=self.platform.base, timeout=10,
                                     headers={"Authorization": f"Bearer {self.tokens[user]}"}) as client:
            i = 0
            while not self._stop.is_set():
                side = "SELL" if i % 4 == 3 else "BUY"
                try:
                    r = await client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "0.1", "side": side})
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
                    continue
                self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
                if r.status_code == 202:
                    self.accepted.append(r.json()["orderId"])
                i += 1
                await asyncio.sleep(self.PAUSE)

    async def _run(self) -> None:
        await asyncio.gather(*(self._one_user(u) for u in USERS))

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def test_two_marketdata_replicas_each_push_every_price(cluster):
    async def first_pushes(port: int) -> list:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/marketdata?vsn=2.0.0") as ws:
            await ws.send(json.dumps(["1", "1", "prices:MOCKMSFT", "phx_join", {}]))
            pushes = []
            while len(pushes) < 3:
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if message[3] == "price_update":
                    pushes.append(message[4])
            return pushes

    async def both():
        return await asyncio.gather(first_pushes(cluster.port + 1), first_pushes(cluster.port + 21))
    one, two = asyncio.run(both())
    assert all(p["symbol"] == "MOCKMSFT" for p in one + two)


def test_kill_9_an_execution_replica_under_load(cluster):
    with Load(cluster) as load:
        wait_for(lambda: len(load.accepted) >= 100, timeout=60)
        os.kill(cluster.pid_of("execution"), signal.SIGKILL)
        time.sleep(3)  # orders keep coming while the other replica takes over
    assert len(load.accepted) >= 100
    verify(cluster)


def test_redis_down_answers_503_and_recovers(cluster):
    stack.down(cluster.stack_dir, ["redis"])
    try:
        with cluster.client("load1") as client:
            response = client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
            assert response.status_code == 503, response.text
            assert "redis" in response.json()["error"]["message"]
    finally:
        stack.up(cluster.stack_dir, ["redis"])
    with cluster.client("load1") as client:
        def accepted():
            r = client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
            return r.status_code == 202
        wait_for(accepted, timeout=60, interval=0.5)
    verify(cluster)


def test_kafka_broker_restart_under_load(cluster):
    with Load(cluster) as load:
        wait_for(lambda: len(load.accepted) >= 50, timeout=60)
        stack.down(cluster.stack_dir, ["kafka"])
        time.sleep(2)
        stack.up(cluster.stack_dir, ["kafka"])
        before = len(load.accepted)
        wait_for(lambda: len(load.accepted) >= before + 50, timeout=120, interval=0.5)
    # A restarted broker loads its group and transaction coordinators before
    # consumer groups settle again (~12 s when idle here; once over 60 s for
    # the persistence group under CI's load): verify may wait longer for it.
    verify(cluster, wait=180)
