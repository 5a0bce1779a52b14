"""The embedded stand-in for ClickHouse: ClickHouse itself, in-process (chDB).

All the ClickHouse code (table, insert, volume query) is
`mocktrade.adapters.clickhouse.ClickHouseAnalytics`, which the distributed
mode points at a server; this is only its constructor over a chDB data
directory. Its module docstring explains the table and the threading. Only
one process may open a chDB data directory.
"""

from __future__ import annotations

from pathlib import Path

from ..clickhouse import (COLUMNS, CREATE_TABLE, MAX_DAYS_PER_INSERT, TABLE, VOLUME_QUERY,
                          ClickHouseAnalytics, chdb_openers, split_by_days, volume_sql)

__all__ = ["ChdbAnalytics", "COLUMNS", "CREATE_TABLE", "MAX_DAYS_PER_INSERT", "TABLE",
           "VOLUME_QUERY", "split_by_days", "volume_sql"]


class ChdbAnalytics(ClickHouseAnalytics):
    """ports.Analytics on chDB at `path` (created if missing): a connection for
    the persistence batches, one for queries."""

    def __init__(self, path: str | Path, *, table_prefix: str = ""):
        writes, reads = chdb_openers(path)
        super().__init__(writes, read_client=reads, table_prefix=table_prefix)
