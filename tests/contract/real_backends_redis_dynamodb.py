"""Factories that build the Redis and DynamoDB adapters for the contract suites.

conftest's `_namespace(...)` hands each test "<connection value>|t<unique>":
the unique part becomes the Redis key prefix (keys, symbol set and pub/sub
channel) or the DynamoDB table-name prefix, so tests never see each other's
data. Child processes (the multi-process portfolio test) build the same
adapter from the same string.

The tables a test run created are deleted when the pytest process exits, so
a long-lived development stack does not fill up with them; children never
delete anything.
"""

from __future__ import annotations

import atexit
import sys

from mocktrade.adapters.dynamodb import ALL_TABLES, DynamoDbPortfolioStore
from mocktrade.adapters.redis import RedisIdempotencyStore, RedisPriceCache

_created_tables: dict[str, set[str]] = {}  # endpoint -> table prefixes
_used_key_prefixes: dict[str, set[str]] = {}  # redis url -> key prefixes


def _split(location: str) -> tuple[str, str]:
    connection, separator, namespace = location.rpartition("|")
    if not separator or not namespace:
        raise ValueError(f"expected '<connection>|<namespace>', got {location!r}")
    return connection, namespace


def _remember(registry: dict[str, set[str]], connection: str, prefix: str) -> None:
    if "pytest" not in sys.modules:  # a child the test started: the test cleans up
        return
    if not _created_tables and not _used_key_prefixes:
        atexit.register(_clean_up)
    registry.setdefault(connection, set()).add(prefix)


def redis_price_cache(location: str) -> RedisPriceCache:
    url, namespace = _split(location)
    _remember(_used_key_prefixes, url, f"{namespace}:")
    return RedisPriceCache(url, key_prefix=f"{namespace}:")


def redis_idempotency_store(location: str) -> RedisIdempotencyStore:
    url, namespace = _split(location)
    _remember(_used_key_prefixes, url, f"{namespace}:")
    return RedisIdempotencyStore(url, key_prefix=f"{namespace}:")


def dynamodb_portfolio_store(location: str) -> DynamoDbPortfolioStore:
    endpoint, namespace = _split(location)
    _remember(_created_tables, endpoint, f"{namespace}_")
    return DynamoDbPortfolioStore(endpoint, table_prefix=f"{namespace}_")


def _clean_up() -> None:
    """Best effort: the engines may be gone already."""
    import boto3
    import redis

    for url, prefixes in _used_key_prefixes.items():
        try:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            for prefix in prefixes:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start:start + 500])
            client.close()
        except Exception:  # noqa: BLE001
            pass
    for endpoint, prefixes in _created_tables.items():
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="mocktrade", aws_secret_access_key="mocktrade")
        for prefix in prefixes:
            for table in ALL_TABLES:
                try:
                    client.delete_table(TableName=prefix + table)
                except Exception:  # noqa: BLE001 - best effort: gone already, or the stack stopped
                    pass
