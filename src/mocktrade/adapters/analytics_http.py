"""Analytics over HTTP, for processes that do not own the analytics engine.

chDB lets one process open a data directory, so in distributed mode with chDB
the persistence job owns it and serves `internal_routes`; the query service
reaches it through `HttpAnalytics`. With a ClickHouse server every process
talks to the server directly and neither is needed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Sequence

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import orjson

from ..domain.bars import Bar
from ..domain.events import (decode_market_data, decode_trade_executed, format_time,
                             market_data_payload, parse_time, trade_executed_payload)
from ..domain.model import Execution, PriceTick
from ..ports import Analytics, DependencyUnavailable, SymbolVolume

VOLUME_PATH = "/internal/analytics/volume"
TRADES_PATH = "/internal/analytics/trades"
TICKS_PATH = "/internal/analytics/ticks"
BARS_PATH = "/internal/analytics/bars"


class HttpAnalytics:
    def __init__(self, base_url: str, token: str, timeout: float = 5.0):
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})

    async def record(self, executions: Sequence[Execution]) -> None:
        body = orjson.dumps([trade_executed_payload(e) for e in executions])
        await self._call("POST", TRADES_PATH, content=body)

    async def volume(self, since: datetime, until: datetime,
                     symbol: str | None = None) -> list[SymbolVolume]:
        params = {"since": format_time(since), "until": format_time(until)}
        if symbol:
            params["symbol"] = symbol
        rows = orjson.loads(await self._call("GET", VOLUME_PATH, params=params))
        return [SymbolVolume(r["symbol"], Decimal(r["volume"]), r["tradeCount"], Decimal(r["notional"]))
                for r in rows]

    async def record_ticks(self, ticks: Sequence[PriceTick]) -> None:
        body = orjson.dumps([market_data_payload(t) for t in ticks])
        await self._call("POST", TICKS_PATH, content=body)

    async def bars(self, symbol: str, timeframe: str, since: datetime | None,
                   until: datetime, limit: int) -> list[Bar]:
        params = {"symbol": symbol, "timeframe": timeframe, "until": format_time(until),
                  "limit": str(limit)}
        if since is not None:
            params["since"] = format_time(since)
        rows = orjson.loads(await self._call("GET", BARS_PATH, params=params))
        return [_bar(r) for r in rows]

    async def _call(self, method: str, path: str, **kwargs) -> bytes:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable("analytics", str(exc) or type(exc).__name__) from None
        if response.status_code != 200:
            raise DependencyUnavailable("analytics", f"{path} answered {response.status_code}")
        return response.content

    async def close(self) -> None:
        await self._client.aclose()


def internal_routes(analytics: Analytics, authorized) -> list[Route]:
    """The owner's side: `authorized(request) -> bool` guards both routes."""

    async def volume(request: Request) -> Response:
        if not authorized(request):
            return Response(status_code=401)
        q = request.query_params
        rows = await analytics.volume(parse_time(q["since"], "since"), parse_time(q["until"], "until"),
                                      q.get("symbol"))
        return Response(orjson.dumps([{"symbol": r.symbol, "volume": str(r.volume), "tradeCount": r.trade_count,
                                       "notional": str(r.notional)} for r in rows]),
                        media_type="application/json")

    async def trades(request: Request) -> Response:
        if not authorized(request):
            return Response(status_code=401)
        executions = [decode_trade_executed(p) for p in orjson.loads(await request.body())]
        await analytics.record(executions)
        return Response(b"[]", media_type="application/json")

    async def ticks(request: Request) -> Response:
        if not authorized(request):
            return Response(status_code=401)
        await analytics.record_ticks([decode_market_data(p) for p in orjson.loads(await request.body())])
        return Response(b"[]", media_type="application/json")

    async def bars(request: Request) -> Response:
        if not authorized(request):
            return Response(status_code=401)
        q = request.query_params
        since = parse_time(q["since"], "since") if "since" in q else None
        rows = await analytics.bars(q["symbol"], q["timeframe"], since, parse_time(q["until"], "until"),
                                    int(q["limit"]))
        return Response(orjson.dumps([_bar_json(b) for b in rows]), media_type="application/json")

    return [Route(VOLUME_PATH, volume, methods=["GET"]), Route(TRADES_PATH, trades, methods=["POST"]),
            Route(TICKS_PATH, ticks, methods=["POST"]), Route(BARS_PATH, bars, methods=["GET"])]


def _bar_json(b: Bar) -> dict:
    return {"t": format_time(b.start), "o": str(b.open), "h": str(b.high), "l": str(b.low),
            "c": str(b.close), "v": str(b.volume), "n": b.ticks}


def _bar(r: dict) -> Bar:
    return Bar(parse_time(r["t"], "t"), Decimal(r["o"]), Decimal(r["h"]), Decimal(r["l"]),
               Decimal(r["c"]), Decimal(r["v"]), r["n"])
