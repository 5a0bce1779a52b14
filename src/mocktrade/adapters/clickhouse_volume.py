"""Executed volume per (symbol, hour), kept beside the trades so a 7-day
volume query reads at most 168 small rows per symbol instead of every trade
of the week through FINAL.

- `trading_volume_1h`: ReplacingMergeTree(trades) keyed by (symbol, hour):
  volume, trade count and notional of the EXECUTED trades of that hour. It is
  not a materialized view (a view sees every inserted block, so a replayed
  trade would count twice): after each batch of trades, the hours the batch
  touches are recomputed from `trading_trades FINAL` (deduplicated) and
  inserted again; the trade count is the version, so the most complete
  recompute wins, whatever way a replay was batched. Exact at any moment, not
  only after merges.
- A volume query over [since, until) sums the whole hours inside the window
  from this table and the two partial edge hours from the trades themselves.

Same SQL on chDB and a ClickHouse server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from clickhouse_connect.driver.client import Client

from ..domain.model import Execution, ExecutionStatus

VOLUME_TABLE = "trading_volume_1h"
HOUR = timedelta(hours=1)

CREATE_TEMPLATE = """
CREATE TABLE IF NOT EXISTS {volume} (
    symbol LowCardinality(String),
    hour DateTime('UTC'),
    volume Decimal(38, 6),
    trades UInt64,
    notional Decimal(38, 2)
)
ENGINE = ReplacingMergeTree(trades)
PARTITION BY toYYYYMM(hour)
ORDER BY (symbol, hour)
"""

_NOTIONAL = "roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)"

RECOMPUTE_TEMPLATE = f"""
INSERT INTO {{volume}} (symbol, hour, volume, trades, notional)
SELECT symbol, toStartOfHour(executionTimestamp) AS h, sum(quantity), count(), sum({_NOTIONAL})
FROM {{trades}} FINAL
WHERE status = {{{{executed:String}}}}
  AND executionTimestamp >= {{{{since:DateTime64(6, 'UTC')}}}}
  AND executionTimestamp < {{{{until:DateTime64(6, 'UTC')}}}}
  AND symbol IN {{{{symbols:Array(String)}}}}
GROUP BY symbol, h
"""

# Whole hours from the hourly table, the edges from the trades; summed per symbol.
QUERY_TEMPLATE = f"""
SELECT symbol, sum(v) AS volume, sum(n) AS trade_count, sum(x) AS notional FROM (
    SELECT symbol, volume AS v, trades AS n, notional AS x
    FROM {{volume}} FINAL
    WHERE hour >= {{{{whole_since:DateTime('UTC')}}}} AND hour < {{{{whole_until:DateTime('UTC')}}}}
      SYMBOL_FILTER
    UNION ALL
    SELECT symbol, quantity AS v, toUInt64(1) AS n, {_NOTIONAL} AS x
    FROM {{trades}} FINAL
    WHERE status = {{{{executed:String}}}}
      AND ((executionTimestamp >= {{{{since:DateTime64(6, 'UTC')}}}}
            AND executionTimestamp < {{{{whole_since:DateTime64(6, 'UTC')}}}})
        OR (executionTimestamp >= {{{{whole_until:DateTime64(6, 'UTC')}}}}
            AND executionTimestamp < {{{{until:DateTime64(6, 'UTC')}}}}))
      SYMBOL_FILTER
)
GROUP BY symbol
ORDER BY symbol
"""


def create_statement(volume: str) -> str:
    return CREATE_TEMPLATE.format(volume=volume)


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def recompute(client: Client, executions: Sequence[Execution], *, trades_table: str,
              volume_table: str, database: str | None) -> None:
    """Recompute the hours the batch's executed trades fall in, per symbol."""
    executed = [e for e in executions if e.status is ExecutionStatus.EXECUTED]
    if not executed:
        return
    sql = RECOMPUTE_TEMPLATE.format(volume=volume_table, trades=trades_table)
    hours = sorted({_hour_floor(e.execution_timestamp) for e in executed})
    symbols = sorted({e.symbol for e in executed})
    # Contiguous runs of hours, one statement each (a batch usually spans one or two).
    start = previous = hours[0]
    for hour in hours[1:] + [None]:
        if hour is not None and hour == previous + HOUR:
            previous = hour
            continue
        client.command(sql, parameters={"executed": ExecutionStatus.EXECUTED.value,
                                        "since": start, "until": previous + HOUR,
                                        "symbols": symbols})
        if hour is not None:
            start = previous = hour


def query(client: Client, since: datetime, until: datetime, symbol: str | None, *,
          trades_table: str, volume_table: str) -> list[tuple[Any, ...]]:
    """(symbol, volume, trade count, notional) rows over [since, until)."""
    since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    whole_since, whole_until = _hour_ceil(since), _hour_floor(until)
    if whole_since >= whole_until:  # no whole hour inside: all from the trades
        whole_since = whole_until = until
    sql = QUERY_TEMPLATE.format(volume=volume_table, trades=trades_table).replace(
        "SYMBOL_FILTER", "AND symbol = {symbol:String}" if symbol is not None else "")
    parameters: dict[str, Any] = {"executed": ExecutionStatus.EXECUTED.value, "since": since,
                                  "until": until, "whole_since": whole_since,
                                  "whole_until": whole_until}
    if symbol is not None:
        parameters["symbol"] = symbol
    return client.query(sql, parameters=parameters).result_rows


def backfill(client: Client, *, trades_table: str, volume_table: str) -> None:
    """Fill the hourly table from trades recorded before it existed."""
    rows = client.query(f"SELECT count() FROM {volume_table}").result_rows
    if rows and rows[0][0]:
        return
    client.command(
        f"INSERT INTO {volume_table} (symbol, hour, volume, trades, notional) "
        f"SELECT symbol, toStartOfHour(executionTimestamp) AS h, sum(quantity), count(), "
        f"sum({_NOTIONAL}) FROM {trades_table} FINAL WHERE status = {{executed:String}} "
        f"GROUP BY symbol, h", parameters={"executed": ExecutionStatus.EXECUTED.value})
