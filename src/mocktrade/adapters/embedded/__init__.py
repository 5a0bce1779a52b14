"""One-process stand-ins for Kafka, Redis, DynamoDB, Elasticsearch and ClickHouse.

Each adapter lives in its own module so that importing one (say, the portfolio
store for the `accounts` CLI) does not load the others' dependencies; the
names below are resolved on first access for the same reason.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SqliteEventLog": "eventlog",
    "EmbeddedPriceCache": "prices",
    "SqlitePortfolioStore": "portfolios",
    "SqliteIdempotencyStore": "idempotency",
    "SqliteTradeHistory": "history",
    "ChdbAnalytics": "analytics",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
