"""Price bars in ClickHouse: raw ticks, minute bars computed from them, and
the query that rolls minutes up to any timeframe with the platform's volume.

Used by `ClickHouseAnalytics` (server or chDB, the same SQL).

Tables (names take the adapter's prefix and database):

- `trading_ticks`: every market_data tick, a ReplacingMergeTree keyed by
  (symbol, feedTimestamp): a tick replayed after a restart has the same key
  and is merged away; reads use FINAL, so a copy not merged yet is not seen
  twice either. Partitioned by day. No TTL: a TTL also drops rows *as they
  are inserted* once older than it, so a replay of old ticks would build no
  bars; raw ticks are only needed to recompute minutes a replay touches, so
  a deployment short of disk can add one longer than the log's retention
  (`ALTER TABLE trading_ticks MODIFY TTL toDate(feedTimestamp) + INTERVAL
  30 DAY`).
- `trading_bars_1m`: one row per (symbol, minute) with open, high, low,
  close and the tick count, a ReplacingMergeTree whose version is the tick
  count. It is not a materialized view: a view sees every inserted block, so
  a replayed tick would count twice in `n` (open/high/low/close would be
  fine; count() is not idempotent). Instead, after each batch of ticks the
  adapter *recomputes* the minutes the batch touched from `trading_ticks
  FINAL` (deduplicated) and inserts them again; the newest full recompute of
  a minute has the most ticks, so the version keeps it. Recomputing is exact
  whatever the batching of a replay, and heals a crash between the two
  inserts (the replayed batch recomputes the minute). It costs one
  INSERT ... SELECT per batch reading only the touched minutes' ticks
  (about 1,200 per symbol-minute at 20 ticks/s per symbol).

Coarser timeframes are rolled up from `trading_bars_1m FINAL` at query time
(argMin/argMax by minute for open/close, max/min, sum of counts): a year of
1d bars reads at most 525,600 minute rows of one symbol. The volume `v` is
the executed quantity from `trading_trades FINAL` (the deduplicated trades
table), summed per bucket over the page's span only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Sequence

from clickhouse_connect.driver.client import Client

from ..domain.bars import MINUTE, Bar, from_epoch, minute_span, timeframe_seconds
from ..domain.model import ExecutionStatus, PriceTick
from ..domain.money import PRICE_QUANTUM, QUANTITY_QUANTUM

TICKS_TABLE = "trading_ticks"
BARS_TABLE = "trading_bars_1m"
TICK_COLUMNS = ["symbol", "feedTimestamp", "price"]

CREATE_TICKS_TEMPLATE = """
CREATE TABLE IF NOT EXISTS {ticks} (
    symbol LowCardinality(String),
    feedTimestamp DateTime64(6, 'UTC'),
    price Decimal(18, 4)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(feedTimestamp)
ORDER BY (symbol, feedTimestamp)
"""

CREATE_BARS_TEMPLATE = """
CREATE TABLE IF NOT EXISTS {bars} (
    symbol LowCardinality(String),
    minute DateTime('UTC'),
    open Decimal(18, 4),
    high Decimal(18, 4),
    low Decimal(18, 4),
    close Decimal(18, 4),
    ticks UInt64
)
ENGINE = ReplacingMergeTree(ticks)
PARTITION BY toYYYYMM(minute)
ORDER BY (symbol, minute)
"""

# The minutes of some symbols in [lo, hi), recomputed from the deduplicated ticks.
RECOMPUTE_TEMPLATE = """
INSERT INTO {bars} (symbol, minute, open, high, low, close, ticks)
SELECT symbol, toStartOfMinute(feedTimestamp) AS minute,
       argMin(price, feedTimestamp), max(price), min(price), argMax(price, feedTimestamp),
       count()
FROM {ticks} FINAL
WHERE symbol IN {{symbols:Array(String)}}
  AND feedTimestamp >= {{lo:DateTime64(6, 'UTC')}}
  AND feedTimestamp < {{hi:DateTime64(6, 'UTC')}}
GROUP BY symbol, minute
"""

BARS_QUERY_TEMPLATE = """
SELECT intDiv(toUInt32(minute), {{seconds:UInt32}}) * {{seconds:UInt32}} AS bucket,
       argMin(open, minute), max(high), min(low), argMax(close, minute), sum(ticks)
FROM {bars} FINAL
WHERE symbol = {{symbol:String}}
  LOWER_BOUND
  AND minute < {{hi:DateTime('UTC')}}
GROUP BY bucket
ORDER BY bucket DIRECTION
LIMIT {{limit:UInt32}}
"""

VOLUME_BY_BUCKET_TEMPLATE = """
SELECT intDiv(toUInt32(toStartOfMinute(executionTimestamp)), {{seconds:UInt32}}) * {{seconds:UInt32}}
           AS bucket,
       sum(quantity)
FROM {trades} FINAL
WHERE symbol = {{symbol:String}}
  AND status = {{executed:String}}
  AND executionTimestamp >= {{lo:DateTime64(6, 'UTC')}}
  AND executionTimestamp < {{hi:DateTime64(6, 'UTC')}}
GROUP BY bucket
"""


def create_statements(ticks: str, bars: str) -> list[str]:
    return [CREATE_TICKS_TEMPLATE.format(ticks=ticks),
            CREATE_BARS_TEMPLATE.format(bars=bars)]


def minute_runs(ticks: Sequence[PriceTick]) -> list[tuple[list[str], int, int]]:
    """The batch's touched minutes as runs of consecutive minutes: (symbols, lo, hi).

    A live batch touches one or two minutes; a replay mixing old and new
    ticks touches several runs, each recomputed on its own rather than
    everything between them."""
    touched: dict[int, set[str]] = {}
    for tick in ticks:
        minute = int(tick.timestamp.timestamp() // MINUTE) * MINUTE
        touched.setdefault(minute, set()).add(tick.symbol)
    runs: list[tuple[set[str], int, int]] = []
    for minute in sorted(touched):
        if runs and runs[-1][2] == minute:
            runs[-1][0].update(touched[minute])
            runs[-1] = (runs[-1][0], runs[-1][1], minute + MINUTE)
        else:
            runs.append((set(touched[minute]), minute, minute + MINUTE))
    return [(sorted(symbols), lo, hi) for symbols, lo, hi in runs]


def tick_rows(ticks: Sequence[PriceTick]) -> list[list[Any]]:
    return [[t.symbol, t.timestamp.astimezone(timezone.utc), t.price] for t in ticks]


def recompute_minutes(client: Client, ticks: Sequence[PriceTick], *, ticks_table: str,
                      bars_table: str) -> None:
    sql = RECOMPUTE_TEMPLATE.format(ticks=ticks_table, bars=bars_table)
    for symbols, lo, hi in minute_runs(ticks):
        client.command(sql, parameters={"symbols": symbols, "lo": from_epoch(lo),
                                        "hi": from_epoch(hi)})


def query_bars(client: Client, symbol: str, timeframe: str, since: datetime | None,
               until: datetime, limit: int, *, bars_table: str, trades_table: str) -> list[Bar]:
    seconds = timeframe_seconds(timeframe)
    lo, hi = minute_span(since, until, seconds)
    if limit <= 0 or (lo is not None and lo >= hi):
        return []
    sql = (BARS_QUERY_TEMPLATE.format(bars=bars_table)
           .replace("LOWER_BOUND", "AND minute >= {lo:DateTime('UTC')}" if lo is not None else "")
           .replace("DIRECTION", "" if lo is not None else "DESC"))
    parameters: dict[str, Any] = {"seconds": seconds, "symbol": symbol, "hi": from_epoch(hi),
                                  "limit": limit}
    if lo is not None:
        parameters["lo"] = from_epoch(lo)
    rows = sorted(client.query(sql, parameters=parameters).result_rows)
    if not rows:
        return []
    volume = dict(client.query(VOLUME_BY_BUCKET_TEMPLATE.format(trades=trades_table), parameters={
        "seconds": seconds, "symbol": symbol, "executed": ExecutionStatus.EXECUTED.value,
        "lo": from_epoch(rows[0][0]), "hi": from_epoch(rows[-1][0] + seconds)}).result_rows)
    return [Bar(from_epoch(bucket), _price(o), _price(h), _price(low), _price(c),
                Decimal(volume.get(bucket, 0)).quantize(QUANTITY_QUANTUM), int(n))
            for bucket, o, h, low, c, n in rows]


def _price(value: Any) -> Decimal:
    return Decimal(value).quantize(PRICE_QUANTUM)
