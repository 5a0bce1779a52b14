"""The only place that picks adapters for ports and wires services to them.

A role is served by its real engine when its setting names one (see
config.Settings), else by the embedded stand-in in the data directory. The
same services and jobs run either way: all in one process (`Platform`, the
embedded default) or one per process (`service_app`, distributed mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone
from functools import cached_property
from typing import AsyncIterator, Awaitable, Callable, Sequence

from fastapi import FastAPI

from .config import Settings
from .domain.events import (TOPIC_MARKET_DATA, TOPIC_ORDER_COMMANDS, TOPIC_TRADE_EXECUTED,
                            TOPIC_TRADE_ORDERS)
from .jobs.execution import ExecutionHandler
from .jobs.persistence import PersistenceHandler
from .jobs.runner import run_consumer
from .jobs.triggers import TriggerHandler, run_triggers
from .ports import (AccountExists, Analytics, EventLog, IdempotencyStore, PortfolioStore,
                    PriceCache, TradeHistory)
from .services.accounts import AccountService, SignupPolicy
from .services.auth import TokenIssuer
from .services.client_address import ClientAddress
from .services.gateway import GatewayParts, create_app
from .services.orders import OrderService
from .services.portfolio import PortfolioService
from .services.query import QueryService
from .services.ratelimit import RateLimiter
from .supervisor import Supervisor

log = logging.getLogger("mocktrade.bootstrap")

EXECUTION_GROUP = "trade-execution"
PERSISTENCE_GROUP = "trade-persistence"
INTERNAL_USER = "mocktrade-internal"

SERVICES = ("gateway", "order", "portfolio", "query", "marketdata", "ingestion", "feed")
JOBS = ("execution", "persistence", "triggers")

# The roles (see readiness.configured_engines) each process needs.
ROLES = {
    "gateway": {"log", "prices", "portfolios", "history", "analytics"},
    "order": {"log", "prices", "portfolios"},
    "portfolio": {"prices", "portfolios"},
    "query": {"prices", "history", "analytics"},
    "marketdata": {"log", "prices", "portfolios"},
    "ingestion": {"log"},
    "feed": set(),
    "execution": {"log", "prices", "portfolios"},
    "persistence": {"log", "history", "analytics"},
    "triggers": {"log", "portfolios"},
    "all": {"log", "prices", "portfolios", "history", "analytics"},
}


class Resources:
    """The adapters of one process, each opened on first use and closed once."""

    def __init__(self, settings: Settings, *, owns_analytics: bool = True,
                 sets_prices: bool = True):
        """`sets_prices=False`: another process of this embedded platform
        writes the prices; this one reads them from the file."""
        self.settings, self.owns_analytics, self.sets_prices = settings, owns_analytics, sets_prices
        self._opened: list = []

    def _keep(self, adapter):
        self._opened.append(adapter)
        return adapter

    def _path(self, name: str):
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return self.settings.data_dir / name

    @cached_property
    def event_log(self) -> EventLog:
        s = self.settings
        if s.kafka_bootstrap:
            from .adapters.kafka import KafkaEventLog
            return self._keep(KafkaEventLog(s.kafka_bootstrap, topic_prefix=s.table_prefix,
                                            partitions=s.kafka_partitions))
        from .adapters.embedded.eventlog import SqliteEventLog
        return self._keep(SqliteEventLog(self._path("eventlog.sqlite3"), partitions=s.log_partitions))

    @cached_property
    def prices(self) -> PriceCache:
        if self.settings.redis_url:
            from .adapters.redis import RedisPriceCache
            return self._keep(RedisPriceCache(self.settings.redis_url, key_prefix=self.settings.table_prefix))
        from .adapters.embedded.prices import EmbeddedPriceCache
        return self._keep(EmbeddedPriceCache(self._path("prices.sqlite3"),
                                             read_file=not self.sets_prices))

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        if self.settings.redis_url:
            from .adapters.redis import RedisIdempotencyStore
            return self._keep(RedisIdempotencyStore(self.settings.redis_url,
                                                    key_prefix=self.settings.table_prefix))
        from .adapters.embedded.idempotency import SqliteIdempotencyStore
        return self._keep(SqliteIdempotencyStore(self._path("idempotency.sqlite3"),
                                                 carry_over_from=self._path("portfolios.sqlite3")))

    @cached_property
    def portfolios(self) -> PortfolioStore:
        s = self.settings
        if s.dynamodb_endpoint:
            from .adapters.dynamodb import DynamoDbPortfolioStore
            endpoint = None if s.dynamodb_endpoint == "aws" else s.dynamodb_endpoint
            return self._keep(DynamoDbPortfolioStore(endpoint, region=s.dynamodb_region,
                                                     table_prefix=s.table_prefix))
        from .adapters.embedded.portfolios import SqlitePortfolioStore
        return self._keep(SqlitePortfolioStore(self._path("portfolios.sqlite3")))

    @cached_property
    def history(self) -> TradeHistory:
        if self.settings.elasticsearch_url:
            from .adapters.elasticsearch import ElasticsearchTradeHistory
            # The persistence job commits offsets only after the bulk write is
            # durable; waiting for a refresh (~1 s) would buy nothing there.
            return self._keep(ElasticsearchTradeHistory(self.settings.elasticsearch_url,
                                                        index_prefix=self.settings.table_prefix,
                                                        replicas=self.settings.elasticsearch_replicas,
                                                        refresh=False))
        from .adapters.embedded.history import SqliteTradeHistory
        return self._keep(SqliteTradeHistory(self._path("history.sqlite3")))

    @cached_property
    def analytics(self) -> Analytics:
        s = self.settings
        if s.analytics_url and not self.owns_analytics:
            from .adapters.analytics_http import HttpAnalytics
            return self._keep(HttpAnalytics(s.analytics_url, self.tokens.issue(INTERNAL_USER)))
        if s.clickhouse_url:
            from .adapters.clickhouse import ClickHouseAnalytics
            return self._keep(ClickHouseAnalytics.from_url(s.clickhouse_url, table_prefix=s.table_prefix))
        from .adapters.embedded.analytics import ChdbAnalytics
        return self._keep(ChdbAnalytics(self._path("analytics")))

    @cached_property
    def tokens(self) -> TokenIssuer:
        s = self.settings
        return TokenIssuer(s.key_ring(), s.token_ttl_seconds,
                           RateLimiter(s.bad_token_rate, s.bad_token_burst))

    def limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)

    async def close(self) -> None:
        for adapter in reversed(self._opened):
            with contextlib.suppress(Exception):
                await adapter.close()
        self._opened.clear()


# -- the single-purpose pieces, shared by both modes ---------------------------

def order_service(r: Resources) -> OrderService:
    return OrderService(r.event_log, r.prices, r.portfolios, r.idempotency,
                        frozenset(r.settings.symbols), session_close=r.settings.session_close)


def account_service(r: Resources) -> AccountService:
    s = r.settings
    return AccountService(r.portfolios, r.tokens,
                          SignupPolicy(s.signup_enabled, s.signup_max_cash, s.demo_cash),
                          s.signin_failure_rate, s.signin_failure_burst)


def query_service(r: Resources) -> QueryService:
    return QueryService(r.history, r.analytics, r.prices, frozenset(r.settings.symbols))


EXECUTION_LINGER = 0.002  # seconds; see execution_job


def execution_job(r: Resources) -> Callable[[], Awaitable[None]]:
    """The portfolio owner: new orders and the commands about them, both keyed
    by userId, applied by one handler (each step is atomic in the store)."""
    handler = ExecutionHandler(r.portfolios, r.prices, r.event_log)

    async def run() -> None:
        await asyncio.gather(
            # A 2 ms linger gathers what the HTTP side's next group commits
            # add: at 1,000 orders/s the execution process then used 0.44
            # cores instead of 0.58 (persistence 0.22 instead of 0.25), for
            # +1.3 ms on the median accept->executed and no change to its
            # p99 or to the closed loop (docs/benchmarks.md, "Stop 11").
            run_consumer(r.event_log, TOPIC_TRADE_ORDERS, EXECUTION_GROUP, handler.handle,
                         max_records=500, linger=EXECUTION_LINGER),
            run_consumer(r.event_log, TOPIC_ORDER_COMMANDS, EXECUTION_GROUP, handler.handle,
                         max_records=500))
    return run


def triggers_job(r: Resources) -> Callable[[], Awaitable[None]]:
    handler = TriggerHandler(r.portfolios, r.event_log)
    return lambda: run_triggers(handler, r.event_log)


def persistence_job(r: Resources) -> Callable[[], Awaitable[None]]:
    """trade_executed into history and analytics; market_data ticks into
    analytics (price bars), as a second group with its own offsets."""
    from .jobs.tick_persistence import TICK_PERSISTENCE_GROUP, TickPersistenceHandler

    handler = PersistenceHandler(r.history, r.analytics, r.event_log)
    ticks = TickPersistenceHandler(r.analytics)

    async def run() -> None:
        await asyncio.gather(
            # A quarter second of trades per batch: history and analytics
            # writes cost per batch (the hourly volume is recomputed).
            run_consumer(r.event_log, TOPIC_TRADE_EXECUTED, PERSISTENCE_GROUP, handler.handle,
                         max_records=5000, poll_timeout=0.2, linger=0.25),
            # Recording ticks costs per batch (the touched minutes are
            # recomputed), so gather a second of them: bars are per minute, and
            # the console moves the forming bar from the price stream meanwhile.
            run_consumer(r.event_log, TOPIC_MARKET_DATA, TICK_PERSISTENCE_GROUP, ticks.handle,
                         max_records=5000, poll_timeout=0.5, linger=1.0))
    return run


def feed_url(settings: Settings) -> str:
    return settings.feed_url or f"ws://{settings.host}:{settings.port}/feed/v1/ticks"


def open_portfolios(settings: Settings) -> PortfolioStore:
    return Resources(settings).portfolios


def open_history(settings: Settings) -> TradeHistory:
    return Resources(settings).history


def open_event_log(settings: Settings) -> EventLog:
    return Resources(settings).event_log


def token_issuer(settings: Settings) -> TokenIssuer:
    return TokenIssuer(settings.key_ring(), settings.token_ttl_seconds)


async def ensure_demo_accounts(portfolios: PortfolioStore, settings: Settings) -> list[str]:
    """Create the demo users on a first start (no accounts at all yet)."""
    if await portfolios.accounts():
        return []
    from .services.accounts import hash_password

    created = []
    password_hash = await hash_password(settings.demo_password())
    for user in settings.demo_users:
        with contextlib.suppress(AccountExists):
            await portfolios.create_account(user, settings.demo_cash, datetime.now(timezone.utc),
                                            password_hash=password_hash)
            created.append(user)
    return created


class Process:
    """One OS process: some routes, some background tasks, a readiness check."""

    def __init__(self, name: str, resources: Resources, roles: set[str]):
        self.name, self.resources, self.roles = name, resources, roles
        self.supervisor = Supervisor()
        self.routes: list = []
        settings = resources.settings
        self.parts = GatewayParts(tokens=resources.tokens, limiter=resources.limiter(),
                                  client_address=ClientAddress(settings.trusted_proxies),
                                  cors_origins=settings.cors_origins)
        self._starters: list[Callable[[], Awaitable[None]]] = []
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self.started = False
        self.job_processes: list = []  # the embedded platform's supervised job children

    def background(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self._starters.append(lambda: _started(self.supervisor, name, factory))

    def on_start(self, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]] | None = None):
        self._starters.append(start)
        if stop:
            self._stoppers.append(stop)

    async def start(self) -> None:
        from . import readiness

        settings = self.resources.settings
        await readiness.wait_for(readiness.configured_engines(settings, self.roles),
                                 region=settings.dynamodb_region)
        for start in self._starters:
            await start()
        self.started = True
        log.info("started", extra={"service": self.name})

    async def stop(self) -> None:
        await self.supervisor.stop()
        for stop in reversed(self._stoppers):
            with contextlib.suppress(Exception):
                await stop()
        await self.resources.close()

    async def readiness(self) -> dict[str, str]:
        from . import readiness

        checks = {"startup": "ok" if self.started else "starting"}
        checks.update({n: "ok" if alive else "stopped" for n, alive in self.supervisor.running().items()})
        settings = self.resources.settings
        checks.update(await readiness.check(readiness.configured_engines(settings, self.roles),
                                            settings.dynamodb_region))
        if not settings.kafka_bootstrap:  # embedded: the stand-ins live in data_dir
            checks["disk"] = readiness.disk(settings.data_dir)
        return checks

    def app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            # Start in the background so /healthz and /readyz answer (not ready)
            # while an engine is still missing.
            starting = asyncio.create_task(self.start())
            starting.add_done_callback(_report_failed_start)
            try:
                yield
            finally:
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
                await self.stop()

        self.parts.extra_routes = self.routes
        self.parts.readiness = self.readiness
        self.parts.lifespan = lifespan
        return create_app(self.parts)


def _report_failed_start(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("start failed", exc_info=task.exception())


async def _started(supervisor: Supervisor, name: str, factory) -> None:
    supervisor.start(name, factory)


def _add_marketdata(p: Process) -> None:
    from .services.marketdata import MarketDataService

    r = p.resources
    service = MarketDataService(r.event_log, r.prices, r.settings.symbols, r.settings.ws_client_buffer,
                                portfolios=r.portfolios, tokens=r.tokens,
                                client_address=p.parts.client_address)
    p.routes += service.routes()
    p.on_start(service.start, service.stop)


def _add_console(p: Process, marketdata_url: str | None = None) -> None:
    """The trader's console at / (marketdata_url: where its socket is, if not here)."""
    from .console import console_routes

    p.routes += console_routes(marketdata_url)


def _add_feed(p: Process) -> None:
    from .feed.server import feed_routes
    from .feed.simulator import PriceSimulator

    s = p.resources.settings
    simulator = PriceSimulator(list(s.symbols), s.feed_ticks_per_second, s.feed_volatility, seed=s.feed_seed)
    p.routes += feed_routes(simulator)
    p.background("feed-simulator", simulator.run)


def _add_ingestion(p: Process) -> None:
    from .services.ingestion import IngestionService

    p.background("ingestion", IngestionService(feed_url(p.resources.settings), p.resources.event_log,
                                               prices=p.resources.prices).run)


def add_analytics_owner(p: Process) -> None:
    from .adapters.analytics_http import internal_routes

    r = p.resources

    def authorized(request) -> bool:
        try:
            return r.tokens.user_of(request.headers.get("authorization")) == INTERNAL_USER
        except Exception:
            return False
    p.routes += internal_routes(r.analytics, authorized)


def service_process(name: str, settings: Settings) -> Process:
    """One service or job of the reference architecture, as its own process."""
    if name == "all" or name in JOBS:
        return job_process((name,), settings)
    r = Resources(settings, owns_analytics=not settings.analytics_url)
    p = Process(name, r, ROLES[name])
    if name in ("gateway", "order"):
        p.parts.orders = order_service(r)
    if name in ("gateway", "portfolio"):
        p.parts.portfolio = PortfolioService(r.portfolios, r.prices)
    if name == "gateway":
        p.parts.accounts = account_service(r)
        _add_console(p, marketdata_url=f":{settings.port + 1}")
    if name in ("gateway", "query"):
        p.parts.query = query_service(r)
    if name == "marketdata":
        _add_marketdata(p)
    if name == "ingestion":
        _add_ingestion(p)
    if name == "feed":
        _add_feed(p)
    return p


# The runner of each job, by the name `mocktrade job NAME` takes.
JOB_RUNNERS = {"execution": execution_job, "triggers": triggers_job, "persistence": persistence_job}

# The embedded platform's job children (job_process.py), by name: the jobs
# each runs. Persistence apart from execution: its batches (chDB inserts,
# history upserts) and the analytics queries it answers no longer hold the
# execution job up on one event loop and GIL. Its child owns chDB.
EMBEDDED_JOB_PROCESSES = {"execution": ("execution", "triggers"), "persistence": ("persistence",)}


def job_names(names: Sequence[str]) -> tuple[str, ...]:
    """`all` is every job; the rest in the order given, once each."""
    return JOBS if "all" in names else tuple(dict.fromkeys(names))


def job_process(names: Sequence[str], settings: Settings) -> Process:
    """Some jobs in one process: one of the embedded platform's job children,
    a job of distributed mode, or all jobs of a small deployment together.
    The one that runs persistence owns chDB (and serves it to the others)."""
    jobs = job_names(names)
    if not settings.distributed:
        _checkpoints_elsewhere()
    # Embedded, the HTTP process writes the prices; the jobs read them from its file.
    r = Resources(settings, owns_analytics="persistence" in jobs or not settings.analytics_url,
                  sets_prices=settings.distributed)
    # Named after its first job, the one the others run beside (its traces
    # are mocktrade-<name>, as in distributed mode); all of them: "jobs".
    p = Process("jobs" if jobs == JOBS else jobs[0], r, set().union(*(ROLES[job] for job in jobs)))
    _add_jobs(p, jobs)
    if "persistence" in jobs and not settings.clickhouse_url:
        add_analytics_owner(p)
    return p


def _add_jobs(p: Process, jobs: Sequence[str] = JOBS) -> None:
    r = p.resources
    for job in jobs:
        p.background(f"{job}-job", JOB_RUNNERS[job](r))
    if not r.settings.distributed and "persistence" in jobs:
        # Housekeeping of the embedded files goes with persistence, off the
        # execution job's loop: log retention, and the WAL checkpoints of the
        # platform's SQLite files, off the commits of the HTTP process and of
        # the jobs (adapters/embedded/checkpoints.py).
        async def retain() -> None:
            while True:
                await asyncio.sleep(3600)
                await r.event_log.apply_retention()
        p.background("log-retention", retain)
        from .adapters.embedded.checkpoints import WalCheckpointer
        checkpointer = WalCheckpointer(r.settings.data_dir)
        p.on_start(checkpointer.astart, checkpointer.astop)


def _checkpoints_elsewhere() -> None:
    from .adapters.embedded._sqlite import checkpoints_elsewhere
    checkpoints_elsewhere()


def embedded_platform(settings: Settings, jobs_apart: bool = True) -> Process:
    """Every service and job of the reference architecture behind one port:
    HTTP and WebSockets in this process, the jobs in child processes it
    supervises (`jobs_apart`, the default: both cores at work; the layout is
    EMBEDDED_JOB_PROCESSES), or all here."""
    _checkpoints_elsewhere()  # the persistence child (or _add_jobs here) runs the checkpointer
    children = []
    if jobs_apart:
        from .job_process import JobProcess
        from .portcheck import free_port

        ports: list[int] = []
        while len(ports) < len(EMBEDDED_JOB_PROCESSES):  # two asks may get one port: not twice
            if (port := free_port(settings.host)) not in ports:
                ports.append(port)
        children = [JobProcess(name, jobs, settings.data_dir, port, settings.host)
                    for (name, jobs), port in zip(EMBEDDED_JOB_PROCESSES.items(), ports)]
        # Analytics questions go to the child that owns chDB.
        owner = next(child for child in children if "persistence" in child.jobs)
        settings = settings.with_overrides(analytics_url=owner.url)
    r = Resources(settings, owns_analytics=not jobs_apart)
    p = Process("platform", r, set())
    p.job_processes = children
    # This port's /metrics covers the job children too.
    p.parts.metrics_peers = {child.name: f"{child.url}/metrics" for child in children}
    p.parts.orders = order_service(r)
    p.parts.portfolio = PortfolioService(r.portfolios, r.prices)
    p.parts.query = query_service(r)
    p.parts.accounts = account_service(r)
    _add_console(p)

    async def demo_accounts() -> None:
        await ensure_demo_accounts(r.portfolios, settings)
    p.on_start(demo_accounts)
    _add_feed(p)
    _add_marketdata(p)
    _add_ingestion(p)
    if not jobs_apart:
        _add_jobs(p)
    for child in children:
        p.background(f"{child.name}-supervisor", child.supervise)

    async def prices_flowing() -> dict[str, str]:
        checks = await Process.readiness(p)
        checks["prices"] = "ok" if await r.prices.all_prices() else "no prices yet"
        answers = await asyncio.gather(*(child.readiness() for child in children))
        checks.update({f"{child.name}-process": answer for child, answer in zip(children, answers)})
        return checks
    p.readiness = prices_flowing
    return p
