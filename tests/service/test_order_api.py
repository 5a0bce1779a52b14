"""POST /v1/orders through the gateway, over the embedded adapters."""

from __future__ import annotations

from decimal import Decimal

import orjson

from mocktrade.domain.events import TOPIC_TRADE_ORDERS, decode_envelope, decode_trade_order
from mocktrade.ports import DependencyUnavailable

from .conftest import SYMBOLS, make_api


async def published_orders(backends) -> list:
    consumer = backends.event_log.consumer(TOPIC_TRADE_ORDERS, "test-reader")
    try:
        records = await consumer.poll(1000, 0.05)
    finally:
        await consumer.close()
    return [(decode_trade_order(decode_envelope(r.value).payload), r) for r in records]


async def test_accepted_order_is_published_keyed_by_user(api, backends):
    response = await api.post("/v1/orders", json={"symbol": "mockaapl", "quantity": "2.5", "side": "BUY"})
    assert response.status_code == 202, response.text
    [(order, record)] = await published_orders(backends)
    assert record.key == "alice" and order.user_id == "alice"
    assert order.order_id == response.json()["orderId"]
    assert order.symbol == "MOCKAAPL" and order.quantity == Decimal("2.5")
    envelope = orjson.loads(record.value)
    assert envelope["sourceService"] == "order-service" and "traceparent" in envelope["traceContext"]


async def test_json_numbers_are_taken_exactly(api, backends):
    ok = await api.post("/v1/orders", content=b'{"symbol":"MOCKAAPL","quantity":0.1,"side":"BUY"}',
                        headers={"Content-Type": "application/json"})
    assert ok.status_code == 202
    tricky = await api.post("/v1/orders",
                            content=b'{"symbol":"MOCKAAPL","quantity":0.10000000000000001,"side":"BUY"}',
                            headers={"Content-Type": "application/json"})
    assert tricky.status_code == 400 and tricky.json()["error"]["field"] == "quantity"


async def test_rejections_publish_nothing(api, backends):
    assert (await api.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "3", "side": "BUY"})).status_code == 402
    assert (await api.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "1", "side": "SELL"})).status_code == 422
    assert (await api.post("/v1/orders", json={"symbol": "MOCKX", "quantity": "1", "side": "SELL"})).status_code == 400
    assert await published_orders(backends) == []


class PriceCacheDown:
    async def get_price(self, symbol):
        raise DependencyUnavailable("price cache", "connection refused")

    async def all_prices(self):
        raise DependencyUnavailable("price cache", "connection refused")


async def test_dependency_down_answers_503_and_publishes_nothing(backends, tokens):
    async with make_api(backends, tokens, prices=PriceCacheDown()) as api:
        response = await api.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"},
                                  headers={"Authorization": f"Bearer {tokens.issue('alice')}"})
    assert response.status_code == 503 and "price cache" in response.json()["error"]["message"]
    assert await published_orders(backends) == []


async def test_rate_limit_answers_429_with_retry_after(backends, tokens):
    async with make_api(backends, tokens, rate=1, burst=2) as api:
        api.headers["Authorization"] = f"Bearer {tokens.issue('alice')}"
        codes = [(await api.get("/v1/portfolio/alice")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await api.get("/v1/portfolio/alice")
        assert limited.headers["Retry-After"] == "1"


async def test_idempotent_retry_publishes_once(api, backends):
    body = {"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"}
    first = await api.post("/v1/orders", json=body, headers={"X-Idempotency-Key": "k1"})
    again = await api.post("/v1/orders", json=body, headers={"X-Idempotency-Key": "k1"})
    assert first.json()["orderId"] == again.json()["orderId"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    conflict = await api.post("/v1/orders", json={**body, "side": "SELL"}, headers={"X-Idempotency-Key": "k1"})
    assert conflict.status_code == 409
    assert len(await published_orders(backends)) == 1


async def test_expired_token_is_401(backends, tokens):
    async with make_api(backends, tokens) as api:
        stale = tokens.issue("alice", now=0)
        response = await api.get("/v1/portfolio/alice", headers={"Authorization": f"Bearer {stale}"})
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]


async def test_identical_volume_requests_in_flight_share_one_query(backends):
    import asyncio

    from mocktrade.services.query import QueryService

    calls = []

    class CountingAnalytics:
        async def volume(self, since, until, symbol=None):
            calls.append(symbol)
            await asyncio.sleep(0.05)
            return await backends.analytics.volume(since, until, symbol)

    query = QueryService(backends.history, CountingAnalytics(), backends.prices, SYMBOLS)
    answers = await asyncio.gather(*(query.volume("7d") for _ in range(10)),
                                   query.volume("7d", "MOCKAAPL"))
    assert len(calls) == 2 and all(a == answers[0] for a in answers[:10])
    await query.volume("7d")
    assert len(calls) == 3  # finished queries are not cached
