"""Query service: trade history, market volume analytics and latest prices."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from ..domain.events import format_time, trade_executed_payload
from ..domain.model import ExecutionStatus, PriceTick, Side, utc_now
from ..domain.money import fmt
from ..ports import Analytics, PriceCache, TradeHistory, TradeQuery

TIME_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
MAX_PAGE_SIZE = 500


class UnknownSymbolPrice(Exception):
    pass


def price_view(tick: PriceTick) -> dict[str, str]:
    return {"symbol": tick.symbol, "price": fmt(tick.price), "timestamp": format_time(tick.timestamp)}


class QueryService:
    def __init__(self, history: TradeHistory, analytics: Analytics, prices: PriceCache,
                 symbols: frozenset[str], clock=utc_now):
        self._history, self._analytics, self._prices = history, analytics, prices
        self._symbols, self._clock = symbols, clock
        self._volume_in_flight: dict[tuple[str, str | None], asyncio.Future] = {}

    async def search_trades(self, user_id: str, *, symbol: str | None = None,
                            status: ExecutionStatus | None = None, side: Side | None = None,
                            start: datetime | None = None, end: datetime | None = None,
                            limit: int = 50, page_token: str | None = None) -> dict[str, Any]:
        page = await self._history.search(TradeQuery(
            user_id=user_id, symbol=symbol, status=status, side=side, start=start, end=end,
            limit=limit, page_token=page_token))
        return {
            "trades": [trade_executed_payload(t) for t in page.trades],
            "totalCount": page.total_count,
            "nextPageToken": page.next_page_token,
        }

    async def volume(self, window: str, symbol: str | None = None) -> dict[str, Any]:
        """Identical requests arriving while one is being answered share its
        answer (one query, not one each: the analytics engine serves queries
        one at a time on chDB, so a burst would otherwise queue)."""
        key = (window, symbol)
        running = self._volume_in_flight.get(key)
        if running is None:
            running = asyncio.ensure_future(self._volume(window, symbol))
            self._volume_in_flight[key] = running
            running.add_done_callback(lambda _: self._volume_in_flight.pop(key, None))
        return await asyncio.shield(running)

    async def _volume(self, window: str, symbol: str | None) -> dict[str, Any]:
        until = self._clock()
        since = until - TIME_WINDOWS[window]
        rows = await self._analytics.volume(since, until, symbol)
        return {
            "timeWindow": window,
            "from": format_time(since),
            "to": format_time(until),
            "symbols": [{"symbol": r.symbol, "volume": fmt(r.volume), "tradeCount": r.trade_count,
                         "notional": fmt(r.notional)} for r in rows],
        }

    async def bars(self, symbol: str, **request: str | None) -> dict[str, Any]:
        """GET /v1/bars/{symbol}: see services.bars (timeframe, start, end, limit, page_token)."""
        from .bars import bars_page
        return await bars_page(self._analytics, self._symbols, self._clock(), symbol, **request)

    async def prices(self) -> dict[str, Any]:
        ticks = await self._prices.all_prices()
        return {"prices": [price_view(ticks[s]) for s in sorted(ticks)]}

    async def price(self, symbol: str) -> dict[str, str]:
        tick = await self._prices.get_price(symbol)
        if tick is None:
            raise UnknownSymbolPrice(f"no price for symbol {symbol}")
        return price_view(tick)
