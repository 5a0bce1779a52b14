"""`GET /v1/bars/{symbol}`: price bars for charting (see services.bars).

No `from __future__ import annotations`: the route's annotations name the
gateway's user dependency, a local, which FastAPI must see as an object."""


from typing import Annotated, Any

from fastapi import FastAPI, Path, Query

from . import schemas
from .bars import MAX_BARS, TIMEFRAMES, InvalidBarsRequest, UnknownSymbol
from .http import ApiError, JsonResponse


def add_bars_route(app: FastAPI, query: Any, user: Any) -> None:
    """`query`: the QueryService; `user`: the gateway's authenticated-user dependency."""

    @app.get("/v1/bars/{symbol}", tags=["analytics"],
             summary="Price bars (candles), oldest first",
             description=f"OHLC from the feed's ticks, `v` the platform's executed share "
                         f"volume, `n` the tick count; timeframes {', '.join(TIMEFRAMES)}. "
                         f"With `start`: bars opening in [start, end), `limit` (1-{MAX_BARS}) "
                         f"per page, `nextPageToken` continues. Without `start`: the newest "
                         f"`limit` bars before `end` (default now). The forming bar has "
                         f"`final: false`.",
             responses=schemas.errors(400, 401, 404, 429, 503,
                                      e400="Bad timeframe, start, end, limit or pageToken",
                                      e404="Unknown symbol"))
    async def bars(_user: user, symbol: Annotated[str, Path(max_length=16)],
                   timeframe: Annotated[str | None, Query(pattern="^(" + "|".join(TIMEFRAMES) + ")$")] = None,
                   start: Annotated[str | None, Query(pattern=schemas.DATE_TIME_PATTERN,
                                                     description="RFC 3339 with an offset")] = None,
                   end: Annotated[str | None, Query(pattern=schemas.DATE_TIME_PATTERN,
                                                   description="RFC 3339 with an offset")] = None,
                   limit: Annotated[int | None, Query(ge=1, le=MAX_BARS)] = None,
                   page_token: Annotated[str | None, Query(alias="pageToken", max_length=512)] = None):
        try:
            return JsonResponse(await query.bars(symbol.upper(), timeframe=timeframe, start=start,
                                                 end=end, limit=None if limit is None else str(limit),
                                                 page_token=page_token))
        except InvalidBarsRequest as exc:
            raise ApiError(400, "invalid_request", str(exc), exc.field) from None
        except UnknownSymbol as exc:
            raise ApiError(404, "not_found", str(exc), "symbol") from None
