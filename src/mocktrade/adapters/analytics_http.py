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
# The owner serves these routes behind the services' request limits.
from ..services.limits import MAX_BODY_BYTES

VOLUME_PATH = "/internal/analytics/volume"
TRADES_PATH = "/internal/analytics/trades"
TICKS_PATH = "/internal/analytics/ticks"
BARS_PATH = "/internal/analytics/bars"


def json_arrays(payloads: Sequence[dict], max_bytes: int):
    """The payloads as consecutive JSON arrays of at most max_bytes each (a
    payload larger than that alone goes in an array of its own)."""
    part: list[bytes] = []
    size = 2  # the brackets
    for payload in payloads:
        encoded = orjson.dumps(payload)
        if part and size + 1 + len(encoded) > max_bytes:
            yield b"[" + b",".join(part) + b"]"
            part, size = [], 2
        size += len(encoded) + (1 if part else 0)
        part.append(encoded)
    if part or not payloads:
        yield b"[" + b",".join(part) + b"]"


class HttpAnalytics:
    def __init__(self, base_url: str, token: str, timeout: float = 5.0, max_body: int = MAX_BODY_BYTES):
        self.max_body = max_body
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})

    async def record(self, executions: Sequence[Execution]) -> None:
        await self._post_in_parts(TRADES_PATH, [trade_executed_payload(e) for e in executions])

    async def volume(self, since: datetime, until: datetime,
                     symbol: str | None = None) -> list[SymbolVolume]:
        params = {"since": format_time(since), "until": format_time(until)}
        if symbol:
            params["symbol"] = symbol
        rows = orjson.loads(await self._call("GET", VOLUME_PATH, params=params))
        return [SymbolVolume(r["symbol"], Decimal(r["volume"]), r["tradeCount"], Decimal(r["notional"]))
                for r in rows]

    async def record_ticks(self, ticks: Sequence[PriceTick]) -> None:
        await self._post_in_parts(TICKS_PATH, [market_data_payload(t) for t in ticks])

    async def _post_in_parts(self, path: str, payloads: list[dict]) -> None:
        """POST the payloads as JSON arrays each within the owner's body limit.

        A job catching up after an outage writes batches of hundreds (500
        trades are about 200 kB): sent whole, the owner answers 413 to every
        retry and the job never moves on. A part that was recorded and is sent
        again when a later part fails is no second copy: the owner drops
        replays (trades by order id, ticks by symbol and time).
        """
        for body in json_arrays(payloads, self.max_body):
            await self._call("POST", path, content=body)

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
