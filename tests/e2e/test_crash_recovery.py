"""kill -9 with orders in flight: every accepted order ends exactly once."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from .conftest import RunningPlatform, wait_for

pytestmark = pytest.mark.e2e


def test_kill_9_mid_load_loses_and_duplicates_nothing(tmp_path):
    platform = RunningPlatform(tmp_path / "data").start()
    try:
        for user in ("crash1", "crash2", "crash3"):
            platform.cli("accounts", "create", user, "--cash", "100000.00")
        tokens = {user: platform.token(user) for user in ("crash1", "crash2", "crash3")}
        accepted: list[str] = []
        stop = threading.Event()

        async def load(user: str):
            async with httpx.AsyncClient(base_url=platform.base, timeout=5,
                                         headers={"Authorization": f"Bearer {tokens[user]}"}) as client:
                side = "BUY"
                for i in range(2000):
                    if stop.is_set():
                        return
                    try:
                        r = await client.post("/v1/orders", json={
                            "symbol": "MOCKAAPL", "quantity": "0.5", "side": side})
                    except httpx.HTTPError:
                        return  # the server died under us
                    if r.status_code == 202:
                        accepted.append(r.json()["orderId"])
                    side = "SELL" if side == "BUY" and i % 3 == 2 else "BUY"

        async def run():
            await asyncio.gather(*(load(u) for u in tokens))

        loader = threading.Thread(target=lambda: asyncio.run(run()))
        loader.start()
        wait_for(lambda: len(accepted) >= 300, timeout=30)
        platform.kill()
        stop.set()
        loader.join(30)
        assert len(accepted) >= 300

        platform.start()
        result = platform.cli("verify", "--wait", "30", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        seen = set()
        for user in tokens:
            with platform.client(user) as client:
                token = None
                while True:
                    params = {"limit": 500, **({"pageToken": token} if token else {})}
                    page = client.get("/v1/trades/search", params=params).json()
                    seen.update(t["orderId"] for t in page["trades"])
                    token = page["nextPageToken"]
                    if not token:
                        break
        assert set(accepted) <= seen
    finally:
        platform.stop()
