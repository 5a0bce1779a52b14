"""Executed volume per (symbol, hour), kept beside the trades so a 7-day
volume query reads at most 168 small rows per symbol instead of every trade
of the week through FINAL.

- `trading_volume_1h`: ReplacingMergeTree(trades) keyed by (symbol, hour):
  volume, trade count and notional of the EXECUTED trades of that hour,
  computed from `trading_trades FINAL` (deduplicated). It is not a
  materialized view (a view sees every inserted block, so a replayed trade
  would count twice); the trade count is the version, so the most complete
  computation of an hour wins, whatever way a replay was batched.
- `trading_volume_sealed`: one number, the *watermark*: every hour before it
  is in `trading_volume_1h`, exactly. Only closed hours are sealed: when a
  batch is recorded and an hour ended more than SEAL_GRACE ago, the hours
  from the watermark up to it are computed once and the watermark moves
  past them. The open hour is never pre-aggregated: a persistence batch
  every quarter second used to recompute the whole current hour through
  FINAL (measured: the job process's core went to that, and queries waited
  behind it), now a batch of live trades costs its insert only.
- A trade landing in an hour that is already sealed (a replay, a late
  batch) recomputes that hour after its insert, as every batch once did.
- A volume query over [since, until) sums the sealed whole hours inside the
  window from `trading_volume_1h` and everything else (the partial edge hour
  at `since`, the hours from the watermark on: the open hour and at most one
  closed one awaiting its seal) from the trades themselves, through FINAL.
  The watermark is read first; it only moves after its hours were written,
  so an older reading only means more rows read raw, never a trade missed or
  counted twice. Exact at any moment, not only after merges.

Sealing with several writers (a ClickHouse server fed by more than one
persistence worker): a trade inserted while another writer seals its hour
could be missed by the seal's read, and its own writer, reading the
watermark before it moved, would not recompute the hour. So the sealing
writer computes the hours again after moving the watermark: a trade
inserted before that move is in the second read; one inserted after it
finds the hour sealed and recomputes it itself.

Same SQL on chDB and a ClickHouse server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from clickhouse_connect.driver.client import Client

from ..domain.model import Execution, ExecutionStatus

VOLUME_TABLE = "trading_volume_1h"
SEALED_TABLE = "trading_volume_sealed"
HOUR = timedelta(hours=1)
# How long after an hour ends it is sealed: trades reach the persistence job
# within a second or two of executing, so a sealed hour rarely gets a late
# trade (one that does is recomputed, so the grace is about cost, not exactness).
SEAL_GRACE = timedelta(minutes=2)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

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

# The watermark only grows, so max() over every row is its value, merged or not.
CREATE_SEALED_TEMPLATE = """
CREATE TABLE IF NOT EXISTS {sealed} (
    id UInt8,
    until DateTime('UTC')
)
ENGINE = ReplacingMergeTree(until)
ORDER BY id
"""

_NOTIONAL = "roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)"

RECOMPUTE_TEMPLATE = f"""
INSERT INTO {{volume}} (symbol, hour, volume, trades, notional)
SELECT symbol, toStartOfHour(executionTimestamp) AS h, sum(quantity), count(), sum({_NOTIONAL})
FROM {{trades}} FINAL
WHERE status = {{{{executed:String}}}}
  AND executionTimestamp >= {{{{since:DateTime64(6, 'UTC')}}}}
  AND executionTimestamp < {{{{until:DateTime64(6, 'UTC')}}}}
  SYMBOLS_FILTER
GROUP BY symbol, h
"""

# Sealed whole hours from the hourly table, the rest from the trades; summed per symbol.
QUERY_TEMPLATE = f"""
SELECT symbol, sum(v) AS volume, sum(n) AS trade_count, sum(x) AS notional FROM (
    SELECT symbol, volume AS v, trades AS n, notional AS x
    FROM {{volume}} FINAL
    WHERE hour >= {{{{whole_since:DateTime('UTC')}}}} AND hour < {{{{cut:DateTime('UTC')}}}}
      SYMBOL_FILTER
    UNION ALL
    SELECT symbol, quantity AS v, toUInt64(1) AS n, {_NOTIONAL} AS x
    FROM {{trades}} FINAL
    WHERE status = {{{{executed:String}}}}
      AND ((executionTimestamp >= {{{{since:DateTime64(6, 'UTC')}}}}
            AND executionTimestamp < {{{{whole_since:DateTime64(6, 'UTC')}}}})
        OR (executionTimestamp >= {{{{cut:DateTime64(6, 'UTC')}}}}
            AND executionTimestamp < {{{{until:DateTime64(6, 'UTC')}}}}))
      SYMBOL_FILTER
)
GROUP BY symbol
ORDER BY symbol
"""


def create_statements(volume: str, sealed: str) -> list[str]:
    return [CREATE_TEMPLATE.format(volume=volume), CREATE_SEALED_TEMPLATE.format(sealed=sealed)]


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def sealable_until(now: datetime) -> datetime:
    """The end of the last hour that closed at least SEAL_GRACE before `now`."""
    return _hour_floor(now - SEAL_GRACE)


def watermark(client: Client, sealed_table: str) -> datetime:
    """Every hour before this one is in the hourly table (EPOCH: none yet)."""
    rows = client.query(f"SELECT max(until), count() FROM {sealed_table}").result_rows
    if not rows or not rows[0][1]:
        return EPOCH
    value = rows[0][0]
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _recompute(client: Client, since: datetime, until: datetime, symbols: list[str] | None, *,
               trades_table: str, volume_table: str) -> None:
    sql = RECOMPUTE_TEMPLATE.format(volume=volume_table, trades=trades_table).replace(
        "SYMBOLS_FILTER", "AND symbol IN {symbols:Array(String)}" if symbols is not None else "")
    parameters: dict[str, Any] = {"executed": ExecutionStatus.EXECUTED.value,
                                  "since": since, "until": until}
    if symbols is not None:
        parameters["symbols"] = symbols
    client.command(sql, parameters=parameters)


def seal(client: Client, now: datetime, *, trades_table: str, volume_table: str,
         sealed_table: str) -> tuple[datetime, datetime]:
    """Pre-aggregate the hours closed since the watermark, then move it.

    Returns (the watermark before, the watermark after). On a new table the
    first seal is the backfill of every trade recorded so far."""
    before = watermark(client, sealed_table)
    after = sealable_until(now)
    if after <= before:
        return before, before
    _recompute(client, before, after, None, trades_table=trades_table, volume_table=volume_table)
    client.command(f"INSERT INTO {sealed_table} (id, until) VALUES (0, {{until:DateTime('UTC')}})",
                   parameters={"until": after})
    # Again, for a trade another writer inserted during the first pass (module docstring).
    _recompute(client, before, after, None, trades_table=trades_table, volume_table=volume_table)
    return before, after


def record(client: Client, executions: Sequence[Execution], now: datetime, *, trades_table: str,
           volume_table: str, sealed_table: str) -> None:
    """After a batch of trades is inserted: seal the hours that closed, and
    recompute the sealed hours the batch's executed trades fall in (a replay
    or a late trade). Trades of unsealed hours cost nothing more here."""
    before, _ = seal(client, now, trades_table=trades_table, volume_table=volume_table,
                     sealed_table=sealed_table)
    # Hours in [before, after) were just computed from a read that followed the insert.
    executed = [e for e in executions if e.status is ExecutionStatus.EXECUTED
                and _hour_floor(e.execution_timestamp) < before]
    if not executed:
        return
    hours = sorted({_hour_floor(e.execution_timestamp) for e in executed})
    symbols = sorted({e.symbol for e in executed})
    # Contiguous runs of hours, one statement each (a replay usually spans a few).
    start = previous = hours[0]
    for hour in hours[1:] + [None]:
        if hour is not None and hour == previous + HOUR:
            previous = hour
            continue
        _recompute(client, start, previous + HOUR, symbols, trades_table=trades_table,
                   volume_table=volume_table)
        if hour is not None:
            start = previous = hour


def query(client: Client, since: datetime, until: datetime, symbol: str | None, *,
          trades_table: str, volume_table: str, sealed_table: str) -> list[tuple[Any, ...]]:
    """(symbol, volume, trade count, notional) rows over [since, until)."""
    since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    whole_since, whole_until = _hour_ceil(since), _hour_floor(until)
    if whole_since >= whole_until:  # no whole hour inside: all from the trades
        whole_since = whole_until = until
    # Whole hours from the hourly table only up to the watermark; raw from there on.
    cut = max(whole_since, min(whole_until, watermark(client, sealed_table)))
    sql = QUERY_TEMPLATE.format(volume=volume_table, trades=trades_table).replace(
        "SYMBOL_FILTER", "AND symbol = {symbol:String}" if symbol is not None else "")
    parameters: dict[str, Any] = {"executed": ExecutionStatus.EXECUTED.value, "since": since,
                                  "until": until, "whole_since": whole_since, "cut": cut}
    if symbol is not None:
        parameters["symbol"] = symbol
    return client.query(sql, parameters=parameters).result_rows
