"""Contract-suite factories for the search and analytics engines.

Each is named by a `Backend` line in conftest.py and called with the location
string of one test: "<connection>|t<unique>". The unique part becomes a name
prefix ("t<unique>_"), so tests never see each other's data on a shared
engine. What a test created on a shared server (indices, templates, tables)
is deleted when the test process exits; data must outlive the adapter itself,
since the suites reopen it to test what survives a restart.
"""

from __future__ import annotations

import atexit
import os
import uuid
from pathlib import Path

import httpx

from mocktrade.adapters.clickhouse import ClickHouseAnalytics
from mocktrade.adapters.elasticsearch import ElasticsearchTradeHistory

_es_namespaces: set[tuple[str, str]] = set()
_clickhouse_tables: set[tuple[str, str]] = set()


def _split(location: str) -> tuple[str, str]:
    connection, sep, unique = location.rpartition("|")
    if not sep or not unique:
        raise ValueError(f"expected '<connection>|<unique>', got {location!r}")
    return connection, f"{unique.lower()}_"


# -- Elasticsearch / OpenSearch ------------------------------------------------

def elasticsearch_trade_history(location: str) -> ElasticsearchTradeHistory:
    """ElasticsearchTradeHistory on MOCKTRADE_ELASTICSEARCH_URL, in this test's prefix.

    refresh=True (a forced refresh per index() call) keeps the suite at ~0.1 s
    per call; the adapter's default, "wait_for", gives the same read-your-writes
    but waits for the next scheduled refresh (~1 s a call, the suite ~2x
    slower). MOCKTRADE_TEST_ES_REFRESH=wait_for runs the suite that way.
    """
    url, prefix = _split(location)
    _es_namespaces.add((url, prefix))
    refresh = os.environ.get("MOCKTRADE_TEST_ES_REFRESH", "true")
    return ElasticsearchTradeHistory(url, index_prefix=prefix,
                                     refresh={"true": True, "false": False}.get(refresh, refresh))


def _drop_es_namespaces() -> None:
    with httpx.Client(timeout=30) as http:
        for url, prefix in sorted(_es_namespaces):
            try:
                # By name: Elasticsearch 8 refuses wildcard deletes by default.
                listed = http.get(f"{url}/_cat/indices/{prefix}trading_trades-*",
                                  params={"h": "index", "format": "json"})
                names = [row["index"] for row in listed.json()] if listed.is_success else []
                if names:
                    http.delete(f"{url}/{','.join(names)}")
                http.delete(f"{url}/_index_template/{prefix}trading_trades")
            except httpx.HTTPError:
                pass


atexit.register(_drop_es_namespaces)


# -- ClickHouse ----------------------------------------------------------------

def clickhouse_location(tmp_path: Path, engines: dict[str, str]) -> str:
    """A ClickHouse server when MOCKTRADE_CLICKHOUSE_URL names one, else chDB
    in the test's tmp dir, both through ClickHouseAnalytics.from_url."""
    url = engines.get("MOCKTRADE_CLICKHOUSE_URL") or os.environ.get("MOCKTRADE_CLICKHOUSE_URL")
    if not url:
        url = f"chdb://{tmp_path / 'clickhouse'}"
    return f"{url}|t{uuid.uuid4().hex[:12]}"


def clickhouse_analytics(location: str) -> ClickHouseAnalytics:
    url, prefix = _split(location)
    if not url.startswith("chdb:"):
        _clickhouse_tables.add((url, prefix))
    return ClickHouseAnalytics.from_url(url, table_prefix=prefix)


def _drop_clickhouse_tables() -> None:
    if not _clickhouse_tables:
        return
    from clickhouse_connect.driver.binding import quote_identifier

    from mocktrade.adapters import clickhouse_bars, clickhouse_volume
    from mocktrade.adapters.clickhouse import TABLE, database_of, open_server_client

    names = (TABLE, clickhouse_volume.VOLUME_TABLE, clickhouse_volume.SEALED_TABLE,
             clickhouse_bars.TICKS_TABLE, clickhouse_bars.BARS_TABLE)
    for url, prefix in sorted(_clickhouse_tables):
        try:
            client = open_server_client(url)
            database = database_of(url)
            for name in names:
                table = quote_identifier(f"{prefix}{name}")
                client.command(f"DROP TABLE IF EXISTS "
                               f"{quote_identifier(database) + '.' if database else ''}{table}")
            client.close()
        except Exception:
            pass


atexit.register(_drop_clickhouse_tables)
