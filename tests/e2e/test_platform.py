"""The embedded platform end to end: real process, real HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import httpx
import pytest
import websockets

from .conftest import RunningPlatform, wait_for

pytestmark = pytest.mark.e2e


def new_user(platform: RunningPlatform, cash: str = "10000.00") -> str:
    user = f"u{uuid.uuid4().hex[:10]}"
    platform.cli("accounts", "create", user, "--cash", cash)
    return user


def price_of(client: httpx.Client, symbol: str) -> Decimal:
    return Decimal(client.get(f"/v1/prices/{symbol}").json()["price"])


def trades(client: httpx.Client, **params) -> dict:
    response = client.get("/v1/trades/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_demo_accounts_and_openapi(platform):
    with platform.client("alice") as alice:
        body = alice.get("/v1/portfolio/alice").json()
        assert Decimal(body["cashBalance"]) <= Decimal("100000.00")
        spec = alice.get("/v1/openapi.json").json()
        assert {"/v1/orders", "/v1/portfolio/{userId}", "/v1/trades/search",
                "/v1/analytics/volume", "/v1/prices"} <= set(spec["paths"])


def test_price_pushes_arrive_for_a_joined_symbol(platform):
    async def scenario():
        async with websockets.connect(platform.ws_url + "?vsn=2.0.0") as ws:
            await ws.send(json.dumps(["1", "1", "prices:MOCKAAPL", "phx_join", {}]))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply[3] == "phx_reply" and reply[4]["status"] == "ok"
            pushes = []
            while len(pushes) < 3:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message[3] == "price_update":
                    pushes.append(message)
            assert all(p[2] == "prices:MOCKAAPL" and p[4]["symbol"] == "MOCKAAPL" for p in pushes)
            Decimal(pushes[0][4]["price"])

            await ws.send(json.dumps(["2", "2", "prices:NOSUCH", "phx_join", {}]))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message[3] == "phx_reply" and message[1] == "2":
                    assert message[4]["status"] == "error"
                    break
    asyncio.run(scenario())


def test_a_buy_executes_and_shows_everywhere(platform):
    user = new_user(platform, "50000.00")
    with platform.client(user) as client:
        accepted = client.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "3", "side": "BUY"})
        assert accepted.status_code == 202, accepted.text
        order_id = accepted.json()["orderId"]
        assert accepted.json()["status"] == "ACCEPTED"

        page = wait_for(lambda: trades(client)["totalCount"] == 1 and trades(client))
        trade = page["trades"][0]
        assert trade["orderId"] == order_id and trade["status"] == "EXECUTED"
        price = Decimal(trade["executionPrice"])

        portfolio = client.get(f"/v1/portfolio/{user}").json()
        assert portfolio["holdings"] == {"MOCKMSFT": "3.000000"}
        assert Decimal(portfolio["cashBalance"]) == Decimal("50000.00") - (3 * price).quantize(Decimal("0.01"))
        assert portfolio["positions"][0]["lastPrice"] is not None

        def volume():
            body = client.get("/v1/analytics/volume", params={"timeWindow": "1h", "symbol": "MOCKMSFT"}).json()
            rows = {r["symbol"]: Decimal(r["volume"]) for r in body["symbols"]}
            return rows.get("MOCKMSFT", 0) >= 3
        wait_for(volume)

        sell = client.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "1.5", "side": "SELL"})
        assert sell.status_code == 202
        wait_for(lambda: trades(client, side="SELL")["totalCount"] == 1)
        assert client.get(f"/v1/portfolio/{user}").json()["holdings"] == {"MOCKMSFT": "1.500000"}


def test_insufficient_funds_and_shares_are_rejected(platform):
    user = new_user(platform, "10.00")
    with platform.client(user) as client:
        poor = client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1000", "side": "BUY"})
        assert poor.status_code == 402 and poor.json()["error"]["code"] == "insufficient_funds"
        short = client.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "SELL"})
        assert short.status_code == 422 and short.json()["error"]["field"] == "quantity"
        assert trades(client)["totalCount"] == 0
        assert client.get(f"/v1/portfolio/{user}").json()["cashBalance"] == "10.00"


@pytest.mark.parametrize("body, field", [
    ({"symbol": "MOCKAAPL", "quantity": "-1", "side": "BUY"}, "quantity"),
    ({"symbol": "MOCKAAPL", "quantity": "0", "side": "BUY"}, "quantity"),
    ({"symbol": "MOCKAAPL", "quantity": "1.0000001", "side": "BUY"}, "quantity"),
    ({"symbol": "MOCKAAPL", "quantity": "lots", "side": "BUY"}, "quantity"),
    ({"symbol": "MOCKAAPL", "quantity": "1", "side": "HOLD"}, "side"),
    ({"symbol": "NOTASYMBOL", "quantity": "1", "side": "BUY"}, "symbol"),
    ({"quantity": "1", "side": "BUY"}, "symbol"),
    ({"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY", "userId": "bob"}, "userId"),
])
def test_malformed_orders_get_400_naming_the_field(platform, body, field):
    user = new_user(platform)
    with platform.client(user) as client:
        response = client.post("/v1/orders", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == field and field in error["message"]
        assert client.get(f"/v1/portfolio/{user}").json()["version"] == 0
        assert trades(client)["totalCount"] == 0


def test_bad_json_and_bad_queries_get_400(platform):
    with platform.client("alice") as client:
        response = client.post("/v1/orders", content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["field"] == "body"
        bad = client.get("/v1/trades/search", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "limit"
        bad = client.get("/v1/trades/search", params={"pageToken": "garbage!"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "pageToken"
        bad = client.get("/v1/analytics/volume", params={"timeWindow": "2y"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "timeWindow"


def test_auth_and_ownership(platform):
    anonymous = httpx.post(f"{platform.base}/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
    assert anonymous.status_code == 401
    forged = httpx.get(f"{platform.base}/v1/portfolio/alice", headers={"Authorization": "Bearer abc.def.ghi"})
    assert forged.status_code == 401
    with platform.client("alice") as alice:
        assert alice.get("/v1/portfolio/bob").status_code == 403
    with platform.client("nobody") as nobody:
        assert nobody.get("/v1/portfolio/nobody").status_code == 404


def test_idempotency_key(platform):
    user = new_user(platform)
    with platform.client(user) as client:
        body = {"symbol": "MOCKKO", "quantity": "1", "side": "BUY"}
        headers = {"X-Idempotency-Key": "abc-1"}
        first = client.post("/v1/orders", json=body, headers=headers)
        second = client.post("/v1/orders", json=body, headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.json()["orderId"] == second.json()["orderId"]
        other = client.post("/v1/orders", json={**body, "quantity": "2"}, headers=headers)
        assert other.status_code == 409
        wait_for(lambda: trades(client)["totalCount"] == 1)
        assert trades(client)["totalCount"] == 1
        assert client.get(f"/v1/portfolio/{user}").json()["holdings"] == {"MOCKKO": "1.000000"}


def test_fifty_concurrent_orders_never_overdraw(platform):
    user = new_user(platform, "1000.00")
    with platform.client(user) as probe:
        price = price_of(probe, "MOCKNVDA")
    # Each order alone is affordable; together they are ~5x the cash.
    quantity = (Decimal("100") / price).quantize(Decimal("0.000001"))
    token = platform.token(user)

    async def fire():
        async with httpx.AsyncClient(base_url=platform.base, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            return await asyncio.gather(*[
                client.post("/v1/orders", json={"symbol": "MOCKNVDA", "quantity": str(quantity), "side": "BUY"})
                for _ in range(50)])
    responses = asyncio.run(fire())
    accepted = [r for r in responses if r.status_code == 202]
    assert accepted and all(r.status_code in (202, 402) for r in responses)
    with platform.client(user) as client:
        wait_for(lambda: trades(client, limit=100)["totalCount"] == len(accepted), timeout=20)
        portfolio = client.get(f"/v1/portfolio/{user}").json()
        assert Decimal(portfolio["cashBalance"]) >= 0
        executed = trades(client, status="EXECUTED", limit=100)["totalCount"]
        failed = trades(client, status="FAILED_INSUFFICIENT_FUNDS", limit=100)["totalCount"]
        assert executed + failed == len(accepted)
        assert Decimal(portfolio["holdings"].get("MOCKNVDA", "0")) == executed * quantity
    assert platform.cli("verify", "--wait", "10").returncode == 0


def test_cli_errors_are_one_sentence(platform):
    result = platform.cli("accounts", "create", "alice", "--cash", "5", check=False)
    assert result.returncode != 0 and "already has an account" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = platform.cli("accounts", "create", "carol", "--cash", "ten", check=False)
    assert result.returncode != 0 and "--cash" in result.stderr and "Traceback" not in result.stderr
    if not platform.distributed:
        second = platform.cli("up", "--port", "1", check=False)
        assert second.returncode != 0 and "already running" in second.stderr
