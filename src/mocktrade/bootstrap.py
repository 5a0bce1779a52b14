"""The only place that picks adapters for ports and wires services to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import AsyncIterator

from fastapi import FastAPI

from .config import Settings
from .domain.events import TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS
from .jobs.execution import ExecutionHandler
from .jobs.persistence import PersistenceHandler
from .jobs.runner import run_consumer
from .ports import (AccountExists, Analytics, EventLog, IdempotencyStore, PortfolioStore,
                    PriceCache, TradeHistory)
from .services.auth import TokenIssuer
from .services.gateway import GatewayParts, create_app
from .services.orders import OrderService
from .services.portfolio import PortfolioService
from .services.query import QueryService
from .services.ratelimit import RateLimiter
from .supervisor import Supervisor

log = logging.getLogger("mocktrade.bootstrap")

EXECUTION_GROUP = "trade-execution"
PERSISTENCE_GROUP = "trade-persistence"


def data_paths(settings: Settings) -> dict[str, object]:
    root = settings.data_dir
    return {
        "eventlog": root / "eventlog.sqlite3",
        "prices": root / "prices.sqlite3",
        "portfolios": root / "portfolios.sqlite3",
        "history": root / "history.sqlite3",
        "analytics": root / "analytics",
    }


def open_portfolios(settings: Settings) -> PortfolioStore:
    from .adapters.embedded.portfolios import SqlitePortfolioStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqlitePortfolioStore(data_paths(settings)["portfolios"])


def open_history(settings: Settings) -> TradeHistory:
    from .adapters.embedded.history import SqliteTradeHistory

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteTradeHistory(data_paths(settings)["history"])


def open_event_log(settings: Settings) -> EventLog:
    from .adapters.embedded.eventlog import SqliteEventLog

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteEventLog(data_paths(settings)["eventlog"], partitions=settings.log_partitions)


@dataclass
class Backends:
    event_log: EventLog
    prices: PriceCache
    portfolios: PortfolioStore
    idempotency: IdempotencyStore
    history: TradeHistory
    analytics: Analytics

    async def close(self) -> None:
        for backend in (self.analytics, self.history, self.idempotency, self.portfolios,
                        self.prices, self.event_log):
            with contextlib.suppress(Exception):
                await backend.close()


def open_embedded_backends(settings: Settings) -> Backends:
    from .adapters.embedded.analytics import ChdbAnalytics
    from .adapters.embedded.idempotency import SqliteIdempotencyStore
    from .adapters.embedded.prices import EmbeddedPriceCache

    paths = data_paths(settings)
    return Backends(
        event_log=open_event_log(settings),
        prices=EmbeddedPriceCache(paths["prices"]),
        portfolios=open_portfolios(settings),
        idempotency=SqliteIdempotencyStore(paths["portfolios"]),
        history=open_history(settings),
        analytics=ChdbAnalytics(paths["analytics"]),
    )


def token_issuer(settings: Settings) -> TokenIssuer:
    return TokenIssuer(settings.resolved_jwt_secret(), settings.token_ttl_seconds)


class Platform:
    """Every service and job of the reference architecture in one process."""

    def __init__(self, settings: Settings, backends: Backends):
        from .feed.simulator import PriceSimulator
        from .services.ingestion import IngestionService
        from .services.marketdata import MarketDataService

        self.settings, self.backends = settings, backends
        symbols = frozenset(settings.symbols)
        b = backends
        self.simulator = PriceSimulator(list(settings.symbols), settings.feed_ticks_per_second,
                                        settings.feed_volatility, seed=settings.feed_seed)
        feed_url = settings.feed_url or f"ws://{settings.host}:{settings.port}/feed/v1/ticks"
        self.ingestion = IngestionService(feed_url, b.event_log)
        self.marketdata = MarketDataService(b.event_log, b.prices, symbols, settings.ws_client_buffer)
        self.orders = OrderService(b.event_log, b.prices, b.portfolios, b.idempotency, symbols)
        self.portfolio = PortfolioService(b.portfolios, b.prices)
        self.query = QueryService(b.history, b.analytics, b.prices, symbols)
        self.execution = ExecutionHandler(b.portfolios, b.prices, b.event_log)
        self.persistence = PersistenceHandler(b.history, b.analytics, b.event_log)
        self.tokens = token_issuer(settings)
        self.supervisor = Supervisor()

    async def ensure_demo_accounts(self) -> list[str]:
        created = []
        now = datetime.now(timezone.utc)
        if await self.backends.portfolios.accounts():
            return created
        for user in self.settings.demo_users:
            with contextlib.suppress(AccountExists):
                await self.backends.portfolios.create_account(user, self.settings.demo_cash, now)
                created.append(user)
        return created

    async def start(self) -> None:
        await self.ensure_demo_accounts()
        log_ = self.backends.event_log
        self.supervisor.start("feed-simulator", self.simulator.run)
        await self.marketdata.start()
        self.supervisor.start("ingestion", self.ingestion.run)
        self.supervisor.start("execution-job", lambda: run_consumer(
            log_, TOPIC_TRADE_ORDERS, EXECUTION_GROUP, self.execution.handle, max_records=500))
        self.supervisor.start("persistence-job", lambda: run_consumer(
            log_, TOPIC_TRADE_EXECUTED, PERSISTENCE_GROUP, self.persistence.handle,
            max_records=5000, poll_timeout=0.2))
        self.supervisor.start("log-retention", self._retain)

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(3600)
            await self.backends.event_log.apply_retention()

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.marketdata.stop()
        await self.backends.close()

    async def readiness(self) -> dict[str, str]:
        checks = {name: "ok" if alive else "stopped" for name, alive in self.supervisor.running().items()}
        checks["prices"] = "ok" if await self.backends.prices.all_prices() else "no prices yet"
        return checks

    def app(self) -> FastAPI:
        from .feed.server import feed_routes

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        return create_app(GatewayParts(
            tokens=self.tokens,
            limiter=RateLimiter(self.settings.rate_limit_per_second, self.settings.rate_limit_burst),
            orders=self.orders, portfolio=self.portfolio, query=self.query,
            extra_routes=[*self.marketdata.routes(), *feed_routes(self.simulator)],
            readiness=self.readiness, lifespan=lifespan))
