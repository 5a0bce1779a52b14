"""The embedded stand-in for ClickHouse: ClickHouse itself, in-process (chDB).

All the ClickHouse code (table, insert, volume query) is
`mocktrade.adapters.clickhouse.ClickHouseAnalytics`, which the distributed
mode points at a server; this is only its constructor over a chDB data
directory. Its module docstring explains the table and the threading. Only
one process may open a chDB data directory.

chDB lives in the process's memory, so what it holds is the process's
resident memory: about once a minute, after a write, the adapter reads
chDB's own figures (system.metrics, system.parts) into the gauges
mocktrade_chdb_memory_bytes{kind} and mocktrade_chdb_parts{state}, so an
operator watching the process grow can tell chDB from the rest.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from clickhouse_connect.driver.client import Client

from ... import metrics
from ...domain.model import Execution, PriceTick
from ..clickhouse import (COLUMNS, CREATE_TABLE, MAX_DAYS_PER_INSERT, TABLE, VOLUME_QUERY,
                          ClickHouseAnalytics, chdb_openers, split_by_days, volume_sql)

__all__ = ["ChdbAnalytics", "COLUMNS", "CREATE_TABLE", "MAX_DAYS_PER_INSERT", "TABLE",
           "VOLUME_QUERY", "split_by_days", "volume_sql"]


log = logging.getLogger("mocktrade.analytics")

# mocktrade_chdb_memory_bytes{kind}: chDB's system.metrics figure for each kind.
# "tracked" is everything chDB allocated (the caches among it); the caches are
# the ones our queries fill (uncompressed and query caches are off by default).
MEMORY_FIGURES = {"tracked": "MemoryTracking", "mark_cache": "MarkCacheBytes",
                  "primary_index_cache": "PrimaryIndexCacheBytes",
                  "query_condition_cache": "QueryConditionCacheBytes",
                  "compiled_expression_cache": "CompiledExpressionCacheBytes"}
MEMORY_SAMPLE_SECONDS = 60.0


class ChdbAnalytics(ClickHouseAnalytics):
    """ports.Analytics on chDB at `path` (created if missing): a connection for
    the persistence batches, one for queries."""

    def __init__(self, path: str | Path, *, table_prefix: str = ""):
        writes, reads = chdb_openers(path)
        super().__init__(writes, read_client=reads, table_prefix=table_prefix)
        self._next_memory_sample = 0.0

    async def record(self, executions: Sequence[Execution]) -> None:
        await super().record(executions)
        await self._sample_memory()

    async def record_ticks(self, ticks: Sequence[PriceTick]) -> None:
        await super().record_ticks(ticks)
        await self._sample_memory()

    async def _sample_memory(self) -> None:
        """chDB's memory figures into the gauges, at most every MEMORY_SAMPLE_SECONDS,
        on the writes pool after a write (one small query; none when idle)."""
        now = time.monotonic()
        if now < self._next_memory_sample:
            return
        self._next_memory_sample = now + MEMORY_SAMPLE_SECONDS
        try:
            figures, parts = await self._run(memory_figures)
        except Exception as exc:  # noqa: BLE001 - a metric never fails the write it follows
            log.debug("chDB memory not sampled", extra={"reason": repr(exc)})
            return
        for kind, name in MEMORY_FIGURES.items():
            metrics.CHDB_MEMORY.labels(kind).set(figures.get(name, 0))
        for state, count in parts.items():
            metrics.CHDB_PARTS.labels(state).set(count)


def memory_figures(client: Client) -> tuple[dict[str, int], dict[str, int]]:
    """chDB's memory figures by system.metrics name, and its parts by state."""
    figures = dict(client.query("SELECT metric, value FROM system.metrics WHERE metric IN "
                                "{names:Array(String)}",
                                parameters={"names": list(MEMORY_FIGURES.values())}).result_rows)
    active, outdated = client.query(
        "SELECT countIf(active), countIf(NOT active) FROM system.parts").result_rows[0]
    return figures, {"active": int(active), "outdated": int(outdated)}
