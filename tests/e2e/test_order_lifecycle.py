"""The order lifecycle end to end, on prices the test chooses.

`mocktrade up` (embedded, and distributed on the real engines) reads its
feed from a ControlledFeed, so every trigger is asserted exactly: which tick
fills an order, at what price, and what the user's order channel shows.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import orjson
import pytest
import websockets

from tests.e2e.conftest import RunningPlatform, verify, wait_for
from tests.e2e.feedctl import ControlledFeed

pytestmark = pytest.mark.e2e

SYMBOLS = ("MOCKAAA", "MOCKBBB", "MOCKCCC")
# Seconds from start-up to the session close: the DAY order placed at start
# expires then, while the other tests run.
SESSION_LEFT = {"embedded": 45, "distributed": 120}


@pytest.fixture(scope="module")
def feed():
    running = ControlledFeed({s: "100.0000" for s in SYMBOLS}).start()
    yield running
    running.stop()


class Lifecycle:
    def __init__(self, platform: RunningPlatform, feed: ControlledFeed):
        self.platform, self.feed = platform, feed
        self.alice = platform.client("alice")
        self.bob = platform.client("bob")
        self.day_order: str | None = None

    def price(self, symbol: str, price: str) -> None:
        """Move the market and wait until the platform has seen it."""
        self.feed.tick(symbol, price)
        wait_for(lambda: self.alice.get(f"/v1/prices/{symbol}").json().get("price") == price,
                 timeout=20)

    def place(self, client: httpx.Client | None = None, **order) -> str:
        body = {"quantity": "1", "side": "BUY", **order}
        answer = (client or self.alice).post("/v1/orders", json=body)
        assert answer.status_code == 202, answer.text
        return answer.json()["orderId"]

    def order(self, order_id: str, client: httpx.Client | None = None) -> dict:
        return (client or self.alice).get(f"/v1/orders/{order_id}").json()

    def wait_status(self, order_id: str, *statuses: str, timeout: float = 30,
                    client: httpx.Client | None = None) -> dict:
        def reached():
            answer = (client or self.alice).get(f"/v1/orders/{order_id}")
            return answer.json() if answer.status_code == 200 and answer.json()["status"] in statuses \
                else None
        return wait_for(reached, timeout=timeout, interval=0.05)

    def portfolio(self) -> dict:
        return self.alice.get("/v1/portfolio/alice").json()


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def lc(request, tmp_path_factory, feed):
    engines = request.getfixturevalue("real_engines") if request.param == "distributed" else None
    data_dir = tmp_path_factory.mktemp("lifecycle") / "data"
    for _ in range(3):
        # Bob's DAY order far from the market, placed first; the last test sees
        # it expire. The close must still be ahead once the order is placed: on
        # a loaded machine start-up can take longer than planned, then again.
        close = datetime.now(timezone.utc) + timedelta(seconds=SESSION_LEFT[request.param])
        env = {"MOCKTRADE_FEED_URL": feed.url, "MOCKTRADE_SYMBOLS": ",".join(SYMBOLS),
               "MOCKTRADE_SESSION_CLOSE": close.time().isoformat(timespec="seconds")}
        platform = RunningPlatform(data_dir, env=env, engines=engines).start(timeout=180)
        state = Lifecycle(platform, feed)
        wait_for(lambda: state.alice.get("/v1/prices/MOCKCCC").status_code == 200, timeout=30)
        state.price("MOCKCCC", "100.0000")
        state.day_order = state.place(state.bob, symbol="MOCKCCC", type="LIMIT", limitPrice="50.00")
        expire_at = close.replace(microsecond=0)
        if (expire_at - datetime.now(timezone.utc)).total_seconds() > 5:
            break
        state.wait_status(state.day_order, "OPEN", client=state.bob)
        state.bob.delete(f"/v1/orders/{state.day_order}")  # it would rest till tomorrow
        state.wait_status(state.day_order, "CANCELED", client=state.bob)
        platform.stop()
    yield state
    platform.stop()


def test_a_limit_buy_rests_reserving_cash_and_fills_at_the_first_price_at_or_below(lc):
    lc.price("MOCKAAA", "100.0000")
    before = Decimal(lc.portfolio()["buyingPower"])
    oid = lc.place(symbol="MOCKAAA", quantity="2", type="LIMIT", limitPrice="95.00",
                   timeInForce="GTC", clientOrderId="dip-buy")
    opened = lc.wait_status(oid, "OPEN")
    assert opened["reservedCash"] == "190.00" and opened["clientOrderId"] == "dip-buy"
    assert Decimal(lc.portfolio()["buyingPower"]) == before - Decimal("190.00")
    lc.price("MOCKAAA", "95.0100")  # above the limit: nothing
    time.sleep(0.5)
    assert lc.order(oid)["status"] == "OPEN"
    lc.feed.tick("MOCKAAA", "94.5000")
    filled = lc.wait_status(oid, "EXECUTED")
    assert filled["executionPrice"] == "94.5000" and filled["filledQuantity"] == "2.000000"
    assert [t["status"] for t in filled["transitions"]] == ["ACCEPTED", "OPEN", "EXECUTED"]
    portfolio = lc.portfolio()
    assert portfolio["reservedCash"] == "0.00"
    assert Decimal(portfolio["buyingPower"]) == before - Decimal("189.00")
    found = lc.alice.get("/v1/orders", params={"clientOrderId": "dip-buy"}).json()["orders"]
    assert [o["orderId"] for o in found] == [oid]
    again = lc.alice.post("/v1/orders", json={"symbol": "MOCKAAA", "quantity": "1", "side": "BUY",
                                              "clientOrderId": "dip-buy"})
    assert again.status_code == 409 and again.json()["error"]["orderId"] == oid


def test_a_marketable_limit_fills_at_once_at_the_current_price(lc):
    lc.price("MOCKAAA", "90.0000")
    oid = lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="100.00")
    assert lc.wait_status(oid, "EXECUTED")["executionPrice"] == "90.0000"


def test_stop_sell_triggers_on_the_way_down_and_fills_at_that_tick(lc):
    lc.price("MOCKBBB", "100.0000")
    lc.wait_status(lc.place(symbol="MOCKBBB", quantity="3"), "EXECUTED")
    oid = lc.place(symbol="MOCKBBB", quantity="3", side="SELL", type="STOP", stopPrice="90.00",
                   timeInForce="GTC")
    assert lc.wait_status(oid, "OPEN")["reservedShares"] == "3.000000"
    position = {p["symbol"]: p for p in lc.portfolio()["positions"]}["MOCKBBB"]
    assert position["availableQuantity"] == "0.000000"
    # No shares left to sell while the stop holds them.
    assert lc.alice.post("/v1/orders", json={"symbol": "MOCKBBB", "quantity": "1",
                                             "side": "SELL"}).status_code == 422
    lc.price("MOCKBBB", "90.0100")
    assert lc.order(oid)["status"] == "OPEN"
    lc.feed.tick("MOCKBBB", "88.0000")  # gaps through the stop
    assert lc.wait_status(oid, "EXECUTED")["executionPrice"] == "88.0000"


def test_a_stop_limit_becomes_a_limit_then_fills_within_it(lc):
    lc.price("MOCKBBB", "100.0000")
    oid = lc.place(symbol="MOCKBBB", type="STOP_LIMIT", stopPrice="105.00", limitPrice="106.00",
                   timeInForce="GTC")
    assert lc.wait_status(oid, "OPEN")["reservedCash"] == "106.00"
    lc.price("MOCKBBB", "107.0000")  # stop crossed, limit not
    assert lc.wait_status(oid, "OPEN")["stopTriggered"] is True or \
        wait_for(lambda: lc.order(oid)["stopTriggered"], timeout=20)
    assert lc.order(oid)["status"] == "OPEN"
    lc.feed.tick("MOCKBBB", "105.5000")
    assert lc.wait_status(oid, "EXECUTED")["executionPrice"] == "105.5000"


@pytest.mark.parametrize("tif", ["IOC", "FOK"])
def test_ioc_and_fok_that_cannot_fill_at_once_expire(lc, tif):
    lc.price("MOCKAAA", "100.0000")
    oid = lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="90.00", timeInForce=tif)
    expired = lc.wait_status(oid, "EXPIRED", "OPEN")
    assert expired["status"] == "EXPIRED" and expired["reservedCash"] == "0.00"
    assert lc.wait_status(lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="101.00",
                                   timeInForce=tif), "EXECUTED")["executionPrice"] == "100.0000"


def test_cancel_releases_the_reservation_and_a_final_order_cannot_be_canceled(lc):
    lc.price("MOCKAAA", "100.0000")
    before = lc.portfolio()["buyingPower"]
    oid = lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="80.00", timeInForce="GTC")
    lc.wait_status(oid, "OPEN")
    assert lc.bob.delete(f"/v1/orders/{oid}").status_code == 404  # not bob's to know of
    answer = lc.alice.delete(f"/v1/orders/{oid}")
    assert answer.status_code == 202 and answer.json()["status"] == "PENDING_CANCEL"
    canceled = lc.wait_status(oid, "CANCELED")
    assert [t["status"] for t in canceled["transitions"]][-2:] == ["PENDING_CANCEL", "CANCELED"]
    assert lc.portfolio()["buyingPower"] == before
    again = lc.alice.delete(f"/v1/orders/{oid}")
    assert again.status_code == 422 and again.json()["error"]["status"] == "CANCELED"
    assert lc.alice.delete("/v1/orders/no-such-order").status_code == 404


def test_a_cancel_racing_a_fill_ends_one_way_only(lc):
    lc.price("MOCKAAA", "100.0000")
    oids = [lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="99.00", timeInForce="GTC")
            for _ in range(6)]
    for oid in oids:
        lc.wait_status(oid, "OPEN")
    lc.feed.tick("MOCKAAA", "98.0000")
    for oid in oids:
        lc.alice.delete(f"/v1/orders/{oid}")  # 202 or 422, whichever the owner has seen
    finals = [lc.wait_status(oid, "EXECUTED", "CANCELED") for oid in oids]
    for final in finals:
        statuses = [t["status"] for t in final["transitions"]]
        assert sum(s in ("EXECUTED", "CANCELED") for s in statuses) == 1, statuses
        assert (final["executionPrice"] == "98.0000") == (final["status"] == "EXECUTED")
    assert lc.portfolio()["reservedCash"] == "0.00"


def test_open_orders_list_and_cancel_all(lc):
    lc.price("MOCKAAA", "100.0000")
    oids = {lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="70.00", timeInForce="GTC")
            for _ in range(3)}
    for oid in oids:
        lc.wait_status(oid, "OPEN")
    listed = lc.alice.get("/v1/orders", params={"status": "open", "symbol": "MOCKAAA"}).json()
    assert oids <= {o["orderId"] for o in listed["orders"]}
    page = lc.alice.get("/v1/orders", params={"status": "all", "limit": 2}).json()
    assert len(page["orders"]) == 2 and page["nextPageToken"]
    times = [o["orderTimestamp"] for o in page["orders"]]
    assert times == sorted(times, reverse=True)
    result = lc.alice.delete("/v1/orders")
    assert result.status_code == 202
    assert oids <= {r["orderId"] for r in result.json()["orders"]}
    for oid in oids:
        lc.wait_status(oid, "CANCELED")


async def _join(url: str, topic: str, payload: dict) -> tuple[websockets.ClientConnection, dict]:
    ws = await websockets.connect(url + "?vsn=2.0.0", compression=None, close_timeout=1)
    await ws.send(orjson.dumps(["1", "1", topic, "phx_join", payload]).decode())
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message[3] == "phx_reply":
            return ws, message[4]


async def _updates(ws, count: int) -> list[dict]:
    found = []
    while len(found) < count:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if message[3] == "order_update":
            found.append(message[4])
    return found


async def test_own_orders_stream_live_and_resume_after_a_reconnect_without_gap(lc):
    url, token = lc.platform.ws_url, lc.platform.token("alice")
    _, refused = await _join(url, "orders:alice", {"token": lc.platform.token("bob")})
    assert refused["status"] == "error"
    _, refused = await _join(url, "orders:alice", {"token": "not-a-token"})
    assert refused["status"] == "error"

    lc.price("MOCKAAA", "100.0000")
    ws, joined = await _join(url, "orders:alice", {"token": token})
    assert joined["status"] == "ok"
    seq = joined["response"]["seq"]
    oid = lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="60.00", timeInForce="GTC")
    live = await _updates(ws, 2)
    assert [(u["orderId"], u["status"], u["seq"]) for u in live] == \
        [(oid, "ACCEPTED", seq + 1), (oid, "OPEN", seq + 2)]
    await ws.close()

    lc.alice.delete(f"/v1/orders/{oid}")  # happens while disconnected
    lc.wait_status(oid, "CANCELED")
    ws, joined = await _join(url, "orders:alice", {"token": token, "since": seq + 2})
    missed = await _updates(ws, 2)
    assert [(u["status"], u["seq"]) for u in missed] == [("PENDING_CANCEL", seq + 3),
                                                          ("CANCELED", seq + 4)]
    assert joined["response"]["seq"] == seq + 4
    market = lc.place(symbol="MOCKAAA")
    assert [(u["orderId"], u["status"], u["seq"]) for u in await _updates(ws, 2)] == \
        [(market, "ACCEPTED", seq + 5), (market, "EXECUTED", seq + 6)]
    await ws.close()


def test_a_retried_decline_stays_declined(lc):
    lc.price("MOCKAAA", "100.0000")
    body = {"symbol": "MOCKAAA", "quantity": "100000", "side": "BUY"}
    first = lc.alice.post("/v1/orders", json=body, headers={"X-Idempotency-Key": "too-big"})
    assert first.status_code == 402
    lc.alice.post("/v1/account/reset", json={"cash": "100000000.00"})
    wait_for(lambda: lc.portfolio()["cashBalance"] == "100000000.00", timeout=30)
    retried = lc.alice.post("/v1/orders", json=body, headers={"X-Idempotency-Key": "too-big"})
    assert retried.status_code == 402 and retried.json() == first.json()
    assert retried.headers.get("Idempotent-Replayed") == "true"


def test_reset_cancels_open_orders_and_restores_cash(lc):
    lc.price("MOCKAAA", "100.0000")
    oid = lc.place(symbol="MOCKAAA", type="LIMIT", limitPrice="50.00", timeInForce="GTC")
    lc.wait_status(oid, "OPEN")
    lc.wait_status(lc.place(symbol="MOCKAAA", quantity="3"), "EXECUTED")
    answer = lc.alice.post("/v1/account/reset", json={"cash": "5000.00"})
    assert answer.status_code == 202
    assert lc.wait_status(oid, "CANCELED")["failureReason"] == "account reset"
    portfolio = wait_for(lambda: (p := lc.portfolio())["cashBalance"] == "5000.00" and p)
    assert portfolio["holdings"] == {} and portfolio["reservedCash"] == "0.00"
    assert lc.alice.post("/v1/account/reset", json={"cash": "-1"}).status_code == 400


def test_the_day_order_expires_at_the_session_close_and_verify_passes(lc):
    order = lc.order(lc.day_order, lc.bob)
    assert order["timeInForce"] == "DAY" and order["expireAt"]
    expires = datetime.fromisoformat(order["expireAt"].replace("Z", "+00:00"))
    left = (expires - datetime.now(timezone.utc)).total_seconds()
    assert left < 200, f"the session close is {left:.0f}s away: start-up took too long"
    expired = lc.wait_status(lc.day_order, "EXPIRED", timeout=max(left, 0) + 30, client=lc.bob)
    at = datetime.fromisoformat(expired["transitions"][-1]["time"].replace("Z", "+00:00"))
    assert at >= expires and expired["executionPrice"] is None
    assert [t["status"] for t in expired["transitions"]] == ["ACCEPTED", "OPEN", "EXPIRED"]
    assert lc.bob.get("/v1/portfolio/bob").json()["reservedCash"] == "0.00"
    verify(lc.platform)
