"""kill -9 under a load of resting orders: none is lost, none fills twice.

Users rest limit buys at many price levels; the test walks the price down
through the levels while killing the job processes (distributed: the
execution and trigger jobs, restarted by `up`; embedded: the whole process,
restarted by the test), then walks it through the rest. Every order ends
EXECUTED exactly once, at a price at or below its limit, and `verify` passes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.conftest import RunningPlatform, verify, wait_for
from tests.e2e.feedctl import ControlledFeed

pytestmark = pytest.mark.e2e

SYMBOL = "MOCKAAA"
LEVELS = [f"{price}.00" for price in range(99, 79, -1)]  # 20 limit prices, 99 down to 80
USERS = ("rest1", "rest2", "rest3")


@pytest.mark.parametrize("mode", ["embedded", "distributed"])
def test_kill_9_with_resting_orders_loses_none_and_fills_none_twice(mode, request, tmp_path):
    engines = request.getfixturevalue("real_engines") if mode == "distributed" else None
    feed = ControlledFeed({SYMBOL: "100.0000", "MOCKBBB": "50.0000"}).start()
    platform = RunningPlatform(tmp_path / "data", engines=engines, env={
        "MOCKTRADE_FEED_URL": feed.url, "MOCKTRADE_SYMBOLS": f"{SYMBOL},MOCKBBB"}).start(timeout=180)
    try:
        for user in USERS:
            platform.cli("accounts", "create", user, "--cash", "100000.00")
        clients = {user: platform.client(user) for user in USERS}
        wait_for(lambda: clients[USERS[0]].get(f"/v1/prices/{SYMBOL}").status_code == 200, timeout=30)
        orders: dict[str, tuple[str, str]] = {}  # orderId -> (user, limit)
        for limit in LEVELS:
            for user, client in clients.items():
                answer = client.post("/v1/orders", json={
                    "symbol": SYMBOL, "quantity": "1", "side": "BUY", "type": "LIMIT",
                    "limitPrice": limit, "timeInForce": "GTC"})
                assert answer.status_code == 202, answer.text
                orders[answer.json()["orderId"]] = (user, limit)

        def status(order_id: str) -> dict:
            user, _ = orders[order_id]
            return clients[user].get(f"/v1/orders/{order_id}").json()

        wait_for(lambda: all(status(o)["status"] == "OPEN" for o in orders), timeout=60, interval=0.3)

        def walk(prices: list[str]) -> None:
            for price in prices:
                feed.tick(SYMBOL, price)
                time.sleep(0.05)

        walk(["98.5000", "97.5000", "96.5000", "95.5000"])
        if mode == "embedded":
            platform.kill()
            walk(["94.5000", "93.5000"])  # ticks the platform never sees
            platform.start(timeout=120)
        else:
            for job in ("execution", "triggers"):
                os.kill(platform.pid_of(job), signal.SIGKILL)
            walk(["94.5000", "93.5000"])
        walk([f"{p}.5000" for p in range(92, 78, -1)])

        def all_final() -> bool:
            return all(status(o)["status"] == "EXECUTED" for o in orders)
        wait_for(all_final, timeout=120, interval=0.5)
        for order_id, (_, limit) in orders.items():
            final = status(order_id)
            assert float(final["executionPrice"]) <= float(limit)
            assert [t["status"] for t in final["transitions"]] == ["ACCEPTED", "OPEN", "EXECUTED"]
        for user, client in clients.items():
            portfolio = client.get(f"/v1/portfolio/{user}").json()
            assert portfolio["holdings"] == {SYMBOL: f"{len(LEVELS)}.000000"}
            assert portfolio["reservedCash"] == "0.00"
        verify(platform)
    finally:
        platform.stop()
        feed.stop()
