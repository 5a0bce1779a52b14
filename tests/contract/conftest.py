"""Contract fixtures: every suite runs against every adapter of its port.

An adapter joins its port's suite by one `Backend` line in the lists below. A
backend is named by "module:callable" (so a child process, as in the kill -9
test, can build the same adapter) and is called with one location string:
for an embedded adapter a path under the test's tmp_path, for a server-backed
one it would be a namespace unique to the test (a topic or table prefix).

Suites get an `Opener` rather than a bare adapter when they need to reopen:
every adapter it opens points at the same data, so reopening shows what
survives a restart. Whatever it opened is closed after the test.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import pytest

T = TypeVar("T")


@dataclass(frozen=True)
class Backend:
    name: str
    target: str  # "module:callable", called with the location string
    # (tmp_path, engine settings) -> location; the settings are the MOCKTRADE_*
    # connection values of the real engines, empty for embedded backends.
    location: Callable[[Path, dict[str, str]], str]
    needs_engines: bool = False

    def build(self, location: str) -> Any:
        return resolve(self.target)(location)


def resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _file(name: str) -> Callable[[Path, dict[str, str]], str]:
    return lambda tmp_path, _engines: str(tmp_path / name)


def _namespace(setting: str) -> Callable[[Path, dict[str, str]], str]:
    """`<connection value>|<a name unique to this test>` for a server-backed adapter."""
    return lambda tmp_path, engines: f"{engines[setting]}|t{uuid.uuid4().hex[:12]}"


EVENT_LOGS = [
    Backend("sqlite", "mocktrade.adapters.embedded.eventlog:SqliteEventLog", _file("log.db")),
    Backend("kafka", "tests.contract.real_backends_kafka:kafka_event_log",
            _namespace("MOCKTRADE_KAFKA_BOOTSTRAP"), needs_engines=True),
]
PRICE_CACHES = [
    Backend("embedded", "mocktrade.adapters.embedded.prices:EmbeddedPriceCache", _file("prices.db")),
    Backend("redis", "tests.contract.real_backends_redis_dynamodb:redis_price_cache",
            _namespace("MOCKTRADE_REDIS_URL"), needs_engines=True),
]
PORTFOLIO_STORES = [
    Backend("sqlite", "mocktrade.adapters.embedded.portfolios:SqlitePortfolioStore",
            _file("portfolios.db")),
    Backend("dynamodb", "tests.contract.real_backends_redis_dynamodb:dynamodb_portfolio_store",
            _namespace("MOCKTRADE_DYNAMODB_ENDPOINT"), needs_engines=True),
]
IDEMPOTENCY_STORES = [
    Backend("sqlite", "mocktrade.adapters.embedded.idempotency:SqliteIdempotencyStore",
            _file("portfolios.db")),
    Backend("redis", "tests.contract.real_backends_redis_dynamodb:redis_idempotency_store",
            _namespace("MOCKTRADE_REDIS_URL"), needs_engines=True),
]
TRADE_HISTORIES = [
    Backend("sqlite", "mocktrade.adapters.embedded.history:SqliteTradeHistory", _file("history.db")),
    Backend("elasticsearch", "tests.contract.real_backends_search:elasticsearch_trade_history",
            _namespace("MOCKTRADE_ELASTICSEARCH_URL"), needs_engines=True),
]
ANALYTICS = [
    Backend("chdb", "mocktrade.adapters.embedded.analytics:ChdbAnalytics", _file("analytics")),
    # ClickHouseAnalytics.from_url: a server if MOCKTRADE_CLICKHOUSE_URL is set, else chdb:///tmp-dir.
    Backend("clickhouse-url", "tests.contract.real_backends_search:clickhouse_analytics",
            lambda tmp_path, engines: resolve(
                "tests.contract.real_backends_search:clickhouse_location")(tmp_path, engines)),
]


class Opener(Generic[T]):
    """Opens adapters on one test's data and closes them all afterwards."""

    def __init__(self, backend: Backend, location: str):
        self.backend, self.location = backend, location
        self._opened: list[Any] = []

    async def __call__(self) -> T:
        adapter = self.backend.build(self.location)
        self._opened.append(adapter)
        return adapter

    async def close_all(self) -> None:
        for adapter in reversed(self._opened):
            await adapter.close()


def _opener_fixture(backends: list[Backend]):
    @pytest.fixture(params=backends, ids=lambda backend: backend.name)
    async def opener(request: pytest.FixtureRequest, tmp_path: Path):
        backend: Backend = request.param
        engines = request.getfixturevalue("real_engines") if backend.needs_engines else {}
        opened: Opener[Any] = Opener(backend, backend.location(tmp_path, engines))
        yield opened
        await opened.close_all()

    return opener


open_event_log = _opener_fixture(EVENT_LOGS)
open_price_cache = _opener_fixture(PRICE_CACHES)
open_portfolio_store = _opener_fixture(PORTFOLIO_STORES)
open_idempotency_store = _opener_fixture(IDEMPOTENCY_STORES)
open_trade_history = _opener_fixture(TRADE_HISTORIES)
open_analytics = _opener_fixture(ANALYTICS)


@pytest.fixture
async def event_log(open_event_log):
    return await open_event_log()


@pytest.fixture
async def price_cache(open_price_cache):
    return await open_price_cache()


@pytest.fixture
async def portfolio_store(open_portfolio_store):
    return await open_portfolio_store()


@pytest.fixture
async def idempotency_store(open_idempotency_store):
    return await open_idempotency_store()


@pytest.fixture
async def trade_history(open_trade_history):
    return await open_trade_history()


@pytest.fixture
async def analytics(open_analytics):
    return await open_analytics()
