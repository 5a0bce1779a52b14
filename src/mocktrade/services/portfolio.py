"""Portfolio service: a user's cash and holdings, valued at the latest prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..domain.events import format_time
from ..domain.model import ZERO, Portfolio
from ..domain.money import CASH_QUANTUM, QUANTITY_QUANTUM, fmt
from ..ports import PortfolioStore, PriceCache


class PortfolioNotFound(Exception):
    pass


class PortfolioService:
    def __init__(self, portfolios: PortfolioStore, prices: PriceCache):
        self._portfolios, self._prices = portfolios, prices

    async def view(self, user_id: str) -> dict[str, Any]:
        portfolio = await self._portfolios.get(user_id)
        if portfolio is None:
            raise PortfolioNotFound(f"no portfolio for user {user_id}")
        return await self._valued(portfolio)

    async def _valued(self, portfolio: Portfolio) -> dict[str, Any]:
        positions = []
        market_total = basis_total = ZERO
        priced = True
        for symbol, quantity in portfolio.holdings.items():
            basis = portfolio.cost_basis.get(symbol, ZERO)
            tick = await self._prices.get_price(symbol)
            position: dict[str, Any] = {
                "symbol": symbol, "quantity": fmt(quantity),
                "availableQuantity": fmt(portfolio.available_shares(symbol)),
                "reservedQuantity": fmt(portfolio.reserved_shares.get(symbol, ZERO).quantize(QUANTITY_QUANTUM)),
                "costBasis": fmt(basis),
                "averageCost": fmt((basis / quantity).quantize(Decimal("0.0001"))),
                "lastPrice": None, "marketValue": None, "unrealizedPnl": None,
            }
            if tick is None:
                priced = False
            else:
                value = (quantity * tick.price).quantize(CASH_QUANTUM)
                market_total += value
                basis_total += basis
                position.update(lastPrice=fmt(tick.price), marketValue=fmt(value),
                                unrealizedPnl=fmt(value - basis),
                                priceTimestamp=format_time(tick.timestamp))
            positions.append(position)
        return {
            "userId": portfolio.user_id,
            "cashBalance": fmt(portfolio.cash),
            "reservedCash": fmt(portfolio.reserved_cash.quantize(CASH_QUANTUM)),
            "buyingPower": fmt(portfolio.buying_power),
            # The reference's map form, symbol -> quantity, beside the valued positions.
            "holdings": {p["symbol"]: p["quantity"] for p in positions},
            "positions": positions,
            "marketValue": fmt(market_total),
            "unrealizedPnl": fmt(market_total - basis_total),
            "totalValue": fmt(portfolio.cash + market_total),
            "allPositionsPriced": priced,
            "lastUpdatedTimestamp": format_time(portfolio.last_updated),
            "version": portfolio.version,
        }
