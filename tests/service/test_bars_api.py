"""GET /v1/bars/{symbol}: ticks from market_data through the persistence job's
tick consumer into analytics, and out through the gateway."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from mocktrade.domain.events import (TOPIC_MARKET_DATA, encode,
                                     market_data_payload)
from mocktrade.domain.model import Execution, ExecutionStatus, PriceTick, Side
from mocktrade.jobs.tick_persistence import TICK_PERSISTENCE_GROUP, TickPersistenceHandler
from mocktrade.services.auth import TokenIssuer
from mocktrade.services.gateway import GatewayParts, create_app
from mocktrade.services.query import QueryService
from mocktrade.services.ratelimit import RateLimiter

from .conftest import NOW, SYMBOLS
from .test_pipeline import drain

START = NOW - timedelta(minutes=10)  # NOW is 12:00:00; ticks run to 12:00:30


@pytest.fixture
async def bars_api(backends, tokens: TokenIssuer):
    parts = GatewayParts(tokens=tokens, limiter=RateLimiter(1000, 1000),
                         query=QueryService(backends.history, backends.analytics, backends.prices,
                                            SYMBOLS, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(parts)),
                                 base_url="http://test") as client:
        client.headers["Authorization"] = f"Bearer {tokens.issue('alice')}"
        yield client


@pytest.fixture
async def stored(backends):
    """Ticks every 10 s from 11:50 to 12:00:30, published twice (a replay), and
    one bad record, through the tick persistence handler; two trades."""
    ticks = [PriceTick("MOCKAAPL", (Decimal(100) + Decimal(i) / 3).quantize(Decimal("0.0001")),
                       START + timedelta(seconds=10 * i))
             for i in range(64)]
    for _ in range(2):
        for t in ticks:
            await backends.event_log.publish(TOPIC_MARKET_DATA, t.symbol,
                                             encode("ingestion", market_data_payload(t)))
    await backends.event_log.publish(TOPIC_MARKET_DATA, "MOCKAAPL", b"not json")
    handler = TickPersistenceHandler(backends.analytics)
    await drain(backends.event_log, TOPIC_MARKET_DATA, TICK_PERSISTENCE_GROUP, handler.handle)
    assert handler.stats.undecodable == 1
    await backends.analytics.record([
        Execution("t1", "alice", "MOCKAAPL", Decimal("1.5"), Side.BUY, ExecutionStatus.EXECUTED,
                  Decimal("100.5000"), START + timedelta(seconds=5), None, START),
        Execution("t2", "alice", "MOCKAAPL", Decimal("2"), Side.SELL, ExecutionStatus.EXECUTED,
                  Decimal("101.0000"), NOW + timedelta(seconds=1), None, NOW)])
    return ticks


async def test_newest_bars_oldest_first_with_the_forming_bar(bars_api, stored):
    answer = await bars_api.get("/v1/bars/mockaapl", params={"timeframe": "1m"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["symbol"], body["timeframe"], body["nextPageToken"]) == ("MOCKAAPL", "1m", None)
    bars = body["bars"]
    assert [b["t"] for b in bars][:2] == ["2026-11-25T11:50:00.000000Z", "2026-11-25T11:51:00.000000Z"]
    assert len(bars) == 11  # 11:50 .. 12:00, the last still forming
    assert bars[0] == {"t": "2026-11-25T11:50:00.000000Z", "o": "100.0000", "h": "101.6667",
                       "l": "100.0000", "c": "101.6667", "v": "1.500000", "n": 6, "final": True}
    assert bars[-1]["final"] is False and bars[-1]["n"] == 4 and bars[-1]["v"] == "2.000000"
    assert all(b["final"] for b in bars[:-1])
    hourly = (await bars_api.get("/v1/bars/MOCKAAPL", params={"timeframe": "1h"})).json()["bars"]
    assert [(b["t"], b["n"], b["v"], b["final"]) for b in hourly] == [
        ("2026-11-25T11:00:00.000000Z", 60, "1.500000", True),
        ("2026-11-25T12:00:00.000000Z", 4, "2.000000", False)]


async def test_pages_forward_from_start(bars_api, stored):
    params = {"timeframe": "1m", "start": "2026-11-25T11:50:00Z", "end": "2026-11-25T12:30:00Z",
              "limit": "4"}
    seen, token = [], None
    while True:
        page = (await bars_api.get("/v1/bars/MOCKAAPL",
                                   params=params | ({"pageToken": token} if token else {}))).json()
        seen += [b["t"] for b in page["bars"]]
        token = page["nextPageToken"]
        if token is None:
            break
    everything = (await bars_api.get("/v1/bars/MOCKAAPL", params={"timeframe": "1m"})).json()
    assert seen == [b["t"] for b in everything["bars"]]
    assert len(seen) == 11


async def test_older_history_by_end(bars_api, stored):
    params = {"timeframe": "5m", "end": "2026-11-25T12:00:00+00:00", "limit": "1"}
    bars = (await bars_api.get("/v1/bars/MOCKAAPL", params=params)).json()["bars"]
    assert [b["t"] for b in bars] == ["2026-11-25T11:55:00.000000Z"]


@pytest.mark.parametrize("params, field", [
    ({"timeframe": "2m"}, "timeframe"),
    ({"timeframe": "1M"}, "timeframe"),
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-11-25T11:00:00"}, "start"),  # no offset
    ({"end": "2026-13-01T00:00:00Z"}, "end"),
    ({"start": "2026-11-25T12:00:00Z", "end": "2026-11-25T11:00:00Z"}, "start"),
    ({"limit": "0"}, "limit"),
    ({"limit": "2001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"pageToken": "garbage!"}, "pageToken"),
])
async def test_bad_parameters_are_400_naming_the_field(bars_api, params, field):
    answer = await bars_api.get("/v1/bars/MOCKAAPL", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field


async def test_a_page_token_of_another_query_is_400(bars_api, stored):
    page = (await bars_api.get("/v1/bars/MOCKAAPL", params={
        "timeframe": "1m", "start": "2026-11-25T11:50:00Z", "limit": "2"})).json()
    assert page["nextPageToken"]
    for params in ({"timeframe": "5m"}, {"timeframe": "1m", "start": "2026-11-25T11:59:00Z"}):
        answer = await bars_api.get("/v1/bars/MOCKAAPL",
                                    params=params | {"pageToken": page["nextPageToken"]})
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "pageToken"
    other = await bars_api.get("/v1/bars/MOCKMSFT", params={
        "timeframe": "1m", "pageToken": page["nextPageToken"]})
    assert other.status_code == 400


async def test_unknown_symbol_is_404_and_a_known_quiet_one_empty(bars_api):
    answer = await bars_api.get("/v1/bars/MOCKNOPE")
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "symbol"
    quiet = await bars_api.get("/v1/bars/MOCKMSFT")
    assert quiet.status_code == 200
    assert quiet.json() == {"symbol": "MOCKMSFT", "timeframe": "1m", "bars": [],
                            "nextPageToken": None}


async def test_bars_need_a_token(bars_api):
    answer = await bars_api.get("/v1/bars/MOCKAAPL", headers={"Authorization": ""})
    assert answer.status_code == 401
