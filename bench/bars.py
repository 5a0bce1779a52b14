"""Price bars from the analytics engine (chDB): query latency over a week of
ticks, and the cost of recording a live batch.

    .venv/bin/python bench/bars.py                       # a week at 200 ticks/s (~10 min to build)
    .venv/bin/python bench/bars.py --days 1 --queries 100
    .venv/bin/python bench/bars.py --data-dir /tmp/bars-week --keep   # build once ...
    .venv/bin/python bench/bars.py --data-dir /tmp/bars-week --reuse  # ... then only measure

What it stores, all through the adapter's own tables (ClickHouseAnalytics on
chDB, the embedded default): `--days` of ticks at `--rate` ticks/s spread
round-robin over `--symbols` symbols (20 = the platform's default), generated
server-side with numbers() in one INSERT ... SELECT per day; the minute bars
built from them the way the adapter builds them (argMin/argMax/max/min/count
over `trading_ticks FINAL`, one INSERT ... SELECT per day); and `--trades-per-
second` trades (90% EXECUTED) in `trading_trades`. Then `--live-batches`
batches of live ticks go through `record_ticks` at the end of the week (the
persistence job's path: insert + recompute of the touched minutes), leaving
small unmerged parts behind as a running platform would.

Measured, per query, with a random symbol and a random end inside the stored
week (aligned to the minute, so every window is full):
- 1-day window of 1m bars: bars(symbol, "1m", end - 1 day, end, 1440);
- 1-year window of 1d bars: bars(symbol, "1d", end - 365 days, end, 366)
  (only the stored week has data: 8 daily bars);
each through the adapter (`Analytics.bars`) and through the query service
(`QueryService.bars`, which builds the JSON-ready page). Prints figures;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, summary_ms  # noqa: E402

from mocktrade.adapters.clickhouse import ClickHouseAnalytics  # noqa: E402
from mocktrade.adapters.embedded.analytics import ChdbAnalytics  # noqa: E402
from mocktrade.config import DEFAULT_SYMBOLS  # noqa: E402
from mocktrade.domain.model import PriceTick  # noqa: E402
from mocktrade.services.query import QueryService  # noqa: E402

START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday, 00:00 UTC
DAY = timedelta(days=1)


def symbols(count: int) -> list[str]:
    names = list(DEFAULT_SYMBOLS)
    return (names + [f"MOCKX{i}" for i in range(count)])[:count]


def generate(analytics: ClickHouseAnalytics, days: int, rate: int, names: list[str],
             trades_per_second: float) -> None:
    client = analytics._get_client()
    step_us = 1_000_000 // rate
    per_day = 86_400 * rate
    symbol_array = "[" + ",".join(f"'{s}'" for s in names) + "]"
    for day in range(days):
        first = day * per_day
        begun = time.perf_counter()
        # Tick k: at START + k * step, symbol k mod n, price a slow wave per symbol plus noise.
        client.command(f"""
            INSERT INTO {analytics.ticks_table} (symbol, feedTimestamp, price)
            SELECT {symbol_array}[(number % {len(names)}) + 1],
                   toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
                       + toIntervalMicrosecond(number * {step_us}),
                   toDecimal64(50 + (number % {len(names)}) * 20 + 5 * sin(number / 300000.0)
                               + (cityHash64(number) % 1000) / 1000.0, 4)
            FROM numbers({first}, {per_day})""")
        inserted = time.perf_counter()
        client.command(f"""
            INSERT INTO {analytics.bars_table} (symbol, minute, open, high, low, close, ticks)
            SELECT symbol, toStartOfMinute(feedTimestamp) AS minute,
                   argMin(price, feedTimestamp), max(price), min(price),
                   argMax(price, feedTimestamp), count()
            FROM {analytics.ticks_table} FINAL
            WHERE feedTimestamp >= toDateTime64('{START + day * DAY:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
              AND feedTimestamp < toDateTime64('{START + (day + 1) * DAY:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
            GROUP BY symbol, minute""")
        print(f"  day {day + 1}/{days}: {per_day:,} ticks in {inserted - begun:.1f} s, "
              f"minute bars in {time.perf_counter() - inserted:.1f} s", flush=True)
    trades = int(days * 86_400 * trades_per_second)
    if trades:
        begun = time.perf_counter()
        step = int(1_000_000 / trades_per_second)
        client.command(f"""
            INSERT INTO {analytics.table}
                (orderId, userId, symbol, side, status, quantity, executionPrice,
                 executionTimestamp, failureReason, orderTimestamp)
            SELECT concat('bench-', toString(number)), concat('user', toString(number % 1000)),
                   {symbol_array}[(cityHash64(number, 1) % {len(names)}) + 1],
                   if(number % 2 = 0, 'BUY', 'SELL'),
                   if(number % 10 = 9, 'FAILED_INSUFFICIENT_FUNDS', 'EXECUTED'),
                   toDecimal64(1 + cityHash64(number, 2) % 500, 6),
                   if(number % 10 = 9, NULL, toDecimal64(100, 4)),
                   toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
                       + toIntervalMicrosecond(number * {step}),
                   if(number % 10 = 9, 'not enough', NULL), NULL
            FROM numbers({trades})""")
        print(f"  {trades:,} trades in {time.perf_counter() - begun:.1f} s", flush=True)


async def live_batches(analytics: ClickHouseAnalytics, names: list[str], end: datetime,
                       batches: int, rate: int) -> list[float]:
    """Half a second of ticks per batch, continuing after the generated week."""
    per_batch, step = rate // 2, timedelta(microseconds=1_000_000 // rate)
    samples, k = [], 0
    for _ in range(batches):
        ticks = []
        for _ in range(per_batch):
            ticks.append(PriceTick(names[k % len(names)], Decimal("100.0000") + k % 7, end + k * step))
            k += 1
        begun = time.perf_counter()
        await analytics.record_ticks(ticks)
        samples.append((time.perf_counter() - begun) * 1000)
    return samples


async def measure(label: str, call, ends: list[datetime], names: list[str],
                  rng: random.Random) -> list[float]:
    samples = []
    for end in ends:
        symbol = rng.choice(names)
        begun = time.perf_counter()
        await call(symbol, end)
        samples.append((time.perf_counter() - begun) * 1000)
    print(f"  {label:<44} {summary_ms(samples)}", flush=True)
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rate", type=int, default=200, help="ticks per second, all symbols")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--trades-per-second", type=float, default=2.0)
    parser.add_argument("--live-batches", type=int, default=120)
    parser.add_argument("--queries", type=int, default=300, help="per kind of query")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the data dir behind")
    parser.add_argument("--reuse", action="store_true", help="the data dir is already built")
    args = parser.parse_args()

    names = symbols(args.symbols)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-bars-"))
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f}")
    print(f"data: {data_dir} ({'reused' if args.reuse else 'built now'})")
    analytics = ChdbAnalytics(data_dir)
    week_end = START + args.days * DAY
    try:
        if not args.reuse:
            print(f"generating {args.days} day(s) x {args.rate} ticks/s over {len(names)} symbols "
                  f"= {args.days * 86_400 * args.rate:,} ticks")
            generate(analytics, args.days, args.rate, names, args.trades_per_second)
            live = await live_batches(analytics, names, week_end, args.live_batches, args.rate)
            print(f"  record_ticks, {args.rate // 2} ticks per batch (insert + recompute):\n"
                  f"  {'':<44} {summary_ms(live)}")
        stored = analytics._get_client().query(
            f"SELECT (SELECT count() FROM {analytics.ticks_table}),"
            f" (SELECT count() FROM {analytics.bars_table} FINAL),"
            f" (SELECT count() FROM {analytics.table}),"
            f" (SELECT count() FROM system.parts WHERE active AND table LIKE 'trading_%'),"
            f" (SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table LIKE 'trading_%')"
        ).result_rows[0]
        print(f"stored: {stored[0]:,} ticks, {stored[1]:,} minute bars, {stored[2]:,} trades, "
              f"{stored[3]} active parts, {stored[4] / 1e9:.2f} GB")

        rng = random.Random(7)
        span_minutes = int((week_end - START - DAY).total_seconds() // 60)
        ends = [START + DAY + timedelta(minutes=rng.randrange(span_minutes + 1))
                for _ in range(args.queries)]
        query = QueryService(None, analytics, None, frozenset(names),  # type: ignore[arg-type]
                             clock=lambda: week_end)
        await analytics.bars(names[0], "1m", None, week_end, 10)  # warm up
        print("latency (random symbol, random end in the stored week):")
        day_bars = await analytics.bars(names[0], "1m", ends[0] - DAY, ends[0], 1440)
        year_bars = await analytics.bars(names[0], "1d", ends[0] - 365 * DAY, ends[0], 366)
        print(f"  (a 1-day 1m page holds {len(day_bars)} bars; a 1-year 1d page {len(year_bars)})")
        await measure("adapter  1m bars, 1-day window", lambda s, e: analytics.bars(
            s, "1m", e - DAY, e, 1440), ends, names, rng)
        await measure("adapter  1d bars, 1-year window", lambda s, e: analytics.bars(
            s, "1d", e - 365 * DAY, e, 366), ends, names, rng)
        await measure("service  1m bars, 1-day window (JSON-ready)", lambda s, e: query.bars(
            s, timeframe="1m", start=(e - DAY).isoformat(), end=e.isoformat(), limit="1440",
            page_token=None), ends, names, rng)
        await measure("service  1d bars, 1-year window (JSON-ready)", lambda s, e: query.bars(
            s, timeframe="1d", start=(e - 365 * DAY).isoformat(), end=e.isoformat(), limit="366",
            page_token=None), ends, names, rng)
        await measure("service  newest 500 1m bars (chart's first paint)", lambda s, e: query.bars(
            s, timeframe="1m", start=None, end=None, limit="500", page_token=None),
            ends, names, rng)
    finally:
        await analytics.close()
        if not (args.keep or args.reuse or args.data_dir):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
