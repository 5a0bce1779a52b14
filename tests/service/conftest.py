"""Services over the real embedded adapters, in-process, with a fixed price."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from mocktrade.adapters.embedded.analytics import ChdbAnalytics
from mocktrade.adapters.embedded.eventlog import SqliteEventLog
from mocktrade.adapters.embedded.history import SqliteTradeHistory
from mocktrade.adapters.embedded.idempotency import SqliteIdempotencyStore
from mocktrade.adapters.embedded.portfolios import SqlitePortfolioStore
from mocktrade.adapters.embedded.prices import EmbeddedPriceCache
from mocktrade.domain.model import PriceTick
from mocktrade.services.auth import TokenIssuer
from mocktrade.services.gateway import GatewayParts, create_app
from mocktrade.services.orders import OrderService
from mocktrade.services.portfolio import PortfolioService
from mocktrade.services.query import QueryService
from mocktrade.services.ratelimit import RateLimiter

@dataclass
class Backends:
    event_log: SqliteEventLog
    prices: EmbeddedPriceCache
    portfolios: SqlitePortfolioStore
    idempotency: SqliteIdempotencyStore
    history: SqliteTradeHistory
    analytics: ChdbAnalytics

    async def close(self) -> None:
        for adapter in vars(self).values():
            await adapter.close()


SYMBOLS = frozenset({"MOCKAAPL", "MOCKMSFT"})
NOW = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)


@pytest.fixture
async def backends(tmp_path):
    b = Backends(
        event_log=SqliteEventLog(tmp_path / "log.sqlite3"),
        prices=EmbeddedPriceCache(tmp_path / "prices.sqlite3"),
        portfolios=SqlitePortfolioStore(tmp_path / "portfolios.sqlite3"),
        idempotency=SqliteIdempotencyStore(tmp_path / "idempotency.sqlite3"),
        history=SqliteTradeHistory(tmp_path / "history.sqlite3"),
        analytics=ChdbAnalytics(tmp_path / "analytics"),
    )
    await b.prices.set_price(PriceTick("MOCKAAPL", Decimal("100.0000"), NOW))
    await b.prices.set_price(PriceTick("MOCKMSFT", Decimal("400.0000"), NOW))
    await b.portfolios.create_account("alice", Decimal("1000.00"), NOW)
    yield b
    await b.close()


@pytest.fixture
def tokens():
    return TokenIssuer("test-secret-of-at-least-thirty-two-bytes", 3600)


def make_api(backends: Backends, tokens: TokenIssuer, prices=None, rate: float = 1000,
             burst: int = 1000) -> httpx.AsyncClient:
    prices = prices or backends.prices
    parts = GatewayParts(
        tokens=tokens, limiter=RateLimiter(rate, burst),
        orders=OrderService(backends.event_log, prices, backends.portfolios,
                            backends.idempotency, SYMBOLS),
        portfolio=PortfolioService(backends.portfolios, prices),
        query=QueryService(backends.history, backends.analytics, prices, SYMBOLS))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(parts)),
                             base_url="http://test")


@pytest.fixture
async def api(backends, tokens):
    async with make_api(backends, tokens) as client:
        client.headers["Authorization"] = f"Bearer {tokens.issue('alice')}"
        yield client
