"""Figures for the embedded adapters: publish/consume rates, execution rate,
and history/analytics query latency over a large store.

    .venv/bin/python bench/adapters.py [--rows 1000000] [--only log,portfolio,history,analytics]

Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from mocktrade.adapters.embedded.analytics import ChdbAnalytics, VOLUME_QUERY
from mocktrade.adapters.embedded.eventlog import SqliteEventLog
from mocktrade.adapters.embedded.history import SqliteTradeHistory
from mocktrade.adapters.embedded.portfolios import SqlitePortfolioStore
from mocktrade.config import DEFAULT_SYMBOLS
from mocktrade.domain.events import encode_trade_executed
from mocktrade.domain.model import Execution, ExecutionStatus, Order, Side
from mocktrade.ports import TradeQuery

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
SPAN = timedelta(days=30)


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):7.2f} ms  p99 {pick(0.99):7.2f} ms  max {ordered[-1] * 1000:7.2f} ms"


def sample_execution(rng: random.Random, i: int, user: str) -> Execution:
    status = ExecutionStatus.EXECUTED if rng.random() < 0.9 else rng.choice(list(ExecutionStatus)[1:])
    executed = status is ExecutionStatus.EXECUTED
    at = NOW - SPAN * rng.random()
    return Execution(f"{i:08d}-{rng.getrandbits(32):08x}", user, rng.choice(DEFAULT_SYMBOLS),
                     Decimal(rng.randint(1, 500)), rng.choice(list(Side)), status,
                     Decimal(rng.randint(100_000, 5_000_000)) / 10_000 if executed else None, at,
                     None if executed else "not enough", at - timedelta(milliseconds=5))


def sample_trades(rows: int, users: int, heavy_share: float, seed: int = 42) -> list[Execution]:
    """`rows` trades over `users` users, one of whom ('heavy') has `heavy_share` of them."""
    rng = random.Random(seed)
    heavy = int(rows * heavy_share)
    trades = [sample_execution(rng, i, "heavy" if i < heavy else f"user-{rng.randrange(users)}")
              for i in range(rows)]
    # The persistence job sees trades in roughly the order they happened.
    return sorted(trades, key=lambda t: t.execution_timestamp)


async def bench_event_log(directory: Path) -> None:
    log = SqliteEventLog(directory / "log.db")
    value = encode_trade_executed(sample_execution(random.Random(1), 1, "alice"))
    count = 20_000
    latencies = []
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        t = time.perf_counter()
        await log.publish("trade_executed", f"user-{i % 500}", value, {"traceparent": "00-x-y-01"})
        latencies.append(time.perf_counter() - t)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    # Per CPU-second too: on a shared machine the wall-clock rate mostly
    # measures the neighbours.
    print(f"eventlog   publish (one record, {len(value)} B): {count / elapsed:10,.0f} /s "
          f"({count / cpu:,.0f} per CPU-second)   {quantiles(latencies)}")

    batches = 100
    started = time.perf_counter()
    for _ in range(batches):
        await log.publish_many("trade_executed", [(f"user-{i % 500}", value, None) for i in range(500)])
    elapsed = time.perf_counter() - started
    print(f"eventlog   publish_many (500/batch):        {batches * 500 / elapsed:10,.0f} /s")

    consumer = log.consumer("trade_executed", "bench")
    consumed = 0
    started = time.perf_counter()
    while batch := await consumer.poll(500, 0):
        await consumer.commit(batch)
        consumed += len(batch)
    elapsed = time.perf_counter() - started
    print(f"eventlog   poll+commit (500/poll):          {consumed / elapsed:10,.0f} /s")

    ends = []
    for _ in range(200):
        waiting = asyncio.create_task(consumer.poll(10, 5))
        await asyncio.sleep(0)
        t = time.perf_counter()
        await log.publish("trade_executed", "user-1", value)
        await waiting
        ends.append(time.perf_counter() - t)
    print(f"eventlog   publish -> waiting poll wakes:   {quantiles(ends)}")
    await log.close()


async def bench_portfolio(directory: Path) -> None:
    store = SqlitePortfolioStore(directory / "portfolios.db")
    users = [f"user-{u}" for u in range(1000)]
    for user in users:
        await store.create_account(user, Decimal("1000000.00"), NOW)
    rng = random.Random(7)
    count = 20_000
    started = time.perf_counter()
    for i in range(count):
        order = Order(f"o{i}", rng.choice(users), rng.choice(DEFAULT_SYMBOLS), Decimal(1),
                      Side.BUY, NOW)
        await store.apply_execution(order, Decimal("100.0000"), NOW)
    elapsed = time.perf_counter() - started
    print(f"portfolio  apply_execution:                 {count / elapsed:10,.0f} /s")
    started = time.perf_counter()
    for i in range(count):
        await store.get(users[i % len(users)])
    elapsed = time.perf_counter() - started
    print(f"portfolio  get:                             {count / elapsed:10,.0f} /s")
    await store.close()


async def bench_history(directory: Path, trades: list[Execution]) -> None:
    history = SqliteTradeHistory(directory / "history.db")
    started = time.perf_counter()
    for i in range(0, len(trades), 10_000):
        await history.index(trades[i:i + 10_000])
    elapsed = time.perf_counter() - started
    print(f"history    index {len(trades):,} trades (10k/batch):   {len(trades) / elapsed:10,.0f} /s")
    await history.close()  # refreshes the planner's statistics
    history = SqliteTradeHistory(directory / "history.db")

    rng = random.Random(9)
    users = sorted({t.user_id for t in trades} - {"heavy"})
    filters = [{}, {"symbol": "MOCKAAPL"}, {"status": ExecutionStatus.EXECUTED}, {"side": Side.SELL},
               {"start": NOW - timedelta(days=7)},
               {"symbol": "MOCKKO", "status": ExecutionStatus.EXECUTED, "side": Side.BUY}]
    for label, pick_user in (("a typical user", lambda: rng.choice(users)),
                             ("the heavy user", lambda: "heavy")):
        first, deep = [], []
        for i in range(600):
            query = TradeQuery(pick_user(), limit=50, **filters[i % len(filters)])
            t = time.perf_counter()
            page = await history.search(query)
            first.append(time.perf_counter() - t)
            if page.next_page_token:
                t = time.perf_counter()
                await history.search(TradeQuery(**{**{s: getattr(query, s) for s in TradeQuery.__slots__},
                                                   "page_token": page.next_page_token}))
                deep.append(time.perf_counter() - t)
        total = (await history.search(TradeQuery(pick_user()))).total_count
        print(f"history    search, {label} ({total:,} trades), first page:  {quantiles(first)}")
        if deep:
            print(f"history    search, {label}, next page:                 {quantiles(deep)}")
    await history.close()


DEDUPE_BY_GROUP = """
SELECT symbol, sum(q), count(), sum(n) FROM (
    SELECT symbol, orderId, any(quantity) AS q,
           any(roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)) AS n
    FROM trading_trades
    WHERE status = {executed:String}
      AND executionTimestamp >= {since:DateTime64(6, 'UTC')}
      AND executionTimestamp < {until:DateTime64(6, 'UTC')}
    GROUP BY symbol, orderId)
GROUP BY symbol ORDER BY symbol
"""


async def bench_analytics(directory: Path, trades: list[Execution]) -> None:
    analytics = ChdbAnalytics(directory / "analytics")
    started = time.perf_counter()
    for i in range(0, len(trades), 50_000):
        await analytics.record(trades[i:i + 50_000])
    elapsed = time.perf_counter() - started
    print(f"analytics  record {len(trades):,} trades (50k/batch):  {len(trades) / elapsed:10,.0f} /s")
    await analytics.record(trades[: len(trades) // 100])  # 1% replayed

    async def timed(window: timedelta, symbol: str | None, runs: int = 30) -> list[float]:
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            await analytics.volume(NOW - window, NOW, symbol)
            samples.append(time.perf_counter() - t)
        return samples

    for label in ("as inserted", "after OPTIMIZE FINAL"):
        for name, window in (("1h", timedelta(hours=1)), ("24h", timedelta(days=1)),
                             ("7d", timedelta(days=7))):
            print(f"analytics  volume {name:>3} all symbols, {label}:  {quantiles(await timed(window, None))}")
        print(f"analytics  volume  7d one symbol, {label}:   {quantiles(await timed(timedelta(days=7), 'MOCKAAPL'))}")
        if label == "as inserted":
            await analytics.optimize()

    # FINAL against a GROUP BY orderId dedupe, same data and window.
    client = analytics._client.result()
    parameters = {"executed": "EXECUTED", "since": NOW - timedelta(days=7), "until": NOW}
    for name, sql in (("FINAL", VOLUME_QUERY.replace("SYMBOL_FILTER", "")),
                      ("GROUP BY orderId", DEDUPE_BY_GROUP)):
        samples = []
        for _ in range(20):
            t = time.perf_counter()
            await asyncio.to_thread(client.query, sql, parameters=parameters)
            samples.append(time.perf_counter() - t)
        print(f"analytics  dedupe by {name:<16} (7d):        {quantiles(samples)}")
    await analytics.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", default="log,portfolio,history,analytics")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="mocktrade-bench-") as tmp:
        directory = Path(tmp)
        if "log" in parts:
            await bench_event_log(directory)
        if "portfolio" in parts:
            await bench_portfolio(directory)
        if parts & {"history", "analytics"}:
            trades = sample_trades(args.rows, users=2_000, heavy_share=0.1)
            if "history" in parts:
                await bench_history(directory, trades)
            if "analytics" in parts:
                await bench_analytics(directory, trades)


if __name__ == "__main__":
    asyncio.run(main())
