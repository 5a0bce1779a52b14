"""Trade history on the Elasticsearch-API engine: bulk index rate and search latency.

    .venv/bin/python bench/search.py                      # 200,000 trades, about a minute
    .venv/bin/python bench/search.py --docs 50000 --samples 100
    MOCKTRADE_ELASTICSEARCH_URL=http://host:9200 .venv/bin/python bench/search.py

Through ElasticsearchTradeHistory itself (the adapter the persistence job and
the query service use), in an index prefix of its own, deleted at the end
(--keep keeps it):

1. load `--docs` trades of `--users` users over `--months` months (so several
   monthly indices), one extra user ("heavy") holding `--heavy` of them, in
   `_bulk` batches of `--batch` with refresh=false, then one refresh; the rate
   is documents per second of wall time, HTTP and JSON included;
2. small batches (`--small` trades, as the persistence job sends under light
   load) with each refresh mode: how long one index() call takes;
3. sequential searches for the heavy user, `--samples` each: first page
   (limit 50) without a filter, by symbol, by side+status, by a date range,
   all filters at once, and the following page (pageToken) of the unfiltered
   and of the filtered search; plus a random ordinary user's first page.

Prints figures; never passes or fails on time. The engine is shared (the dev
stack), so other work on the machine shows in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, machine, summary_ms  # noqa: E402

from mocktrade.adapters.elasticsearch import ElasticsearchTradeHistory  # noqa: E402
from mocktrade.config import DEFAULT_SYMBOLS  # noqa: E402
from mocktrade.domain.model import Execution, ExecutionStatus, Side  # noqa: E402
from mocktrade.ports import TradeQuery  # noqa: E402

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
FAILED = list(ExecutionStatus)[1:]


class EngineCpu:
    """CPU seconds of the engine's process, when it runs here (a `mocktrade.stack`
    dir names its pid): on a shared machine, work per engine CPU-second is the
    steadier figure."""

    def __init__(self, stack_dir: str | None):
        self.pid = None
        if stack_dir:
            import json
            pid_file = Path(stack_dir) / "elasticsearch" / "elasticsearch.pid"
            if pid_file.exists():
                self.pid = json.loads(pid_file.read_text())["pid"]

    def now(self) -> float:
        try:
            return cpu_seconds(self.pid) if self.pid else float("nan")
        except OSError:
            return float("nan")


ENGINE = EngineCpu(None)


def trade(rng: random.Random, i: int, user: str, span: timedelta) -> Execution:
    status = ExecutionStatus.EXECUTED if rng.random() < 0.9 else rng.choice(FAILED)
    executed = status is ExecutionStatus.EXECUTED
    at = NOW - span * rng.random()
    at = at.replace(microsecond=rng.randrange(1_000_000))
    return Execution(f"{i:08d}-{rng.getrandbits(32):08x}", user, rng.choice(DEFAULT_SYMBOLS),
                     Decimal(rng.randint(1, 50_000)) / 100, rng.choice(list(Side)), status,
                     Decimal(rng.randint(100_000, 5_000_000)) / 10_000 if executed else None, at,
                     None if executed else "not enough", at - timedelta(milliseconds=5))


def batches(args: argparse.Namespace, rng: random.Random):
    """`args.docs` trades in time order-ish batches; every (docs/heavy)-th is the heavy user's."""
    span = timedelta(days=30 * args.months)
    heavy_every = max(1, args.docs // args.heavy)
    i = 0
    while i < args.docs:
        batch = []
        for j in range(i, min(args.docs, i + args.batch)):
            user = "heavy" if j % heavy_every == 0 else f"user-{rng.randrange(args.users):05d}"
            batch.append(trade(rng, j, user, span))
        i += len(batch)
        yield batch


LAST_ENGINE_MS = [float("nan")]


async def timed(samples: int, call) -> list[float]:
    times = []
    engine0 = ENGINE.now()
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    LAST_ENGINE_MS[0] = (ENGINE.now() - engine0) * 1000 / samples
    return times


def engine_note() -> str:
    return f"  engine cpu {LAST_ENGINE_MS[0]:.1f} ms/call" if ENGINE.pid else ""


async def load(history: ElasticsearchTradeHistory, args: argparse.Namespace,
               url: str) -> None:
    rng = random.Random(7)
    generate = index = 0.0
    engine0, client0 = ENGINE.now(), time.process_time()
    started = time.perf_counter()
    loaded = 0
    source = batches(args, rng)
    while True:
        t = time.perf_counter()
        batch = next(source, None)
        generate += time.perf_counter() - t
        if batch is None:
            break
        t = time.perf_counter()
        await history.index(batch)
        index += time.perf_counter() - t
        loaded += len(batch)
        if time.perf_counter() - started > args.max_load_seconds:
            print(f"  load stopped at {loaded:,} documents (--max-load-seconds)")
            break
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        t = time.perf_counter()
        await http.post(f"/{history.alias}/_refresh")
        refresh = time.perf_counter() - t
        stats = (await http.get(f"/_cat/indices/{history.index_pattern}",
                                params={"format": "json", "bytes": "b"})).json()
    size = sum(int(row["store.size"]) for row in stats)
    engine, client = ENGINE.now() - engine0, time.process_time() - client0
    print(f"bulk load: {loaded:,} docs in {len(stats)} monthly indices, batches of {args.batch:,}, "
          f"refresh=false: {loaded / index:,.0f} docs/s "
          f"({index:.1f} s in index(), {generate:.1f} s generating; final refresh {refresh:.2f} s); "
          f"store {size / 1e6:.0f} MB ({size / max(loaded, 1):.0f} B/doc)")
    print(f"  cpu: engine {engine:.1f} s ({loaded / engine:,.0f} docs per engine CPU-second), "
          f"this process {client:.1f} s (generating, JSON, HTTP)")
    args.loaded = loaded


async def small_batches(url: str, prefix: str, args: argparse.Namespace) -> None:
    rng = random.Random(11)
    span = timedelta(days=1)
    for refresh in (False, "wait_for", True):
        adapter = ElasticsearchTradeHistory(url, index_prefix=prefix, refresh=refresh,
                                              index_sort=not args.no_index_sort)
        await adapter.index([trade(rng, 10_000_000, "warm", span)])  # template, index creation
        counter = iter(range(10_000_001, 20_000_000))

        async def one_call() -> None:
            await adapter.index([trade(rng, next(counter), f"small-{rng.randrange(100)}", span)
                                 for _ in range(args.small)])

        times = await timed(args.small_calls, one_call)
        await adapter.close()
        print(f"index() of {args.small} trades, refresh={refresh!s:8}: {summary_ms(times)}"
              f"  -> {args.small * len(times) / (sum(times) / 1000):,.0f} docs/s one caller"
              f"{engine_note()}")


async def searches(history: ElasticsearchTradeHistory, args: argparse.Namespace) -> None:
    rng = random.Random(5)
    since = NOW - timedelta(days=20)
    kinds = {
        "no filter": {},
        "symbol": {"symbol": "MOCKAAPL"},
        "side+status": {"side": Side.SELL, "status": ExecutionStatus.EXECUTED},
        "date range (20 days)": {"start": since, "end": NOW},
        "all filters": {"symbol": "MOCKKO", "side": Side.BUY, "status": ExecutionStatus.EXECUTED,
                        "start": NOW - timedelta(days=30 * args.months), "end": NOW},
    }
    first = await history.search(TradeQuery("heavy", limit=50))
    print(f"search, user 'heavy' ({first.total_count:,} trades of {args.loaded:,}), limit 50, "
          f"{args.samples} sequential each:")
    for name, criteria in kinds.items():
        query = TradeQuery("heavy", limit=50, **criteria)
        page = await history.search(query)
        times = await timed(args.samples, lambda q=query: history.search(q))
        print(f"  {name:24} {summary_ms(times)}  total {page.total_count}{engine_note()}")
        if name in ("no filter", "all filters") and page.next_page_token:
            nxt = TradeQuery("heavy", limit=50, page_token=page.next_page_token, **criteria)
            times = await timed(args.samples, lambda q=nxt: history.search(q))
            print(f"  {name + ', next page':24} {summary_ms(times)}{engine_note()}")
    deep = TradeQuery("heavy", limit=50)
    for _ in range(10):
        deep_page = await history.search(deep)
        if not deep_page.next_page_token:
            break
        deep = TradeQuery("heavy", limit=50, page_token=deep_page.next_page_token)
    times = await timed(args.samples, lambda: history.search(deep))
    print(f"  {'11th page':24} {summary_ms(times)}{engine_note()}")

    async def ordinary() -> None:
        await history.search(TradeQuery(f"user-{rng.randrange(args.users):05d}", limit=50))

    times = await timed(args.samples, ordinary)
    print(f"  {'ordinary user, 1st page':24} {summary_ms(times)}  "
          f"(~{args.loaded // args.users} trades each){engine_note()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MOCKTRADE_ELASTICSEARCH_URL",
                                                        "http://127.0.0.1:9200"))
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--heavy", type=int, default=1_000, help="trades of the user searched")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--small-calls", type=int, default=15)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--max-load-seconds", type=float, default=240)
    parser.add_argument("--stack-dir", default=os.environ.get("MOCKTRADE_STACK_DIR", "/tmp/devstack"),
                        help="a mocktrade.stack dir, to read the engine's pid for CPU figures")
    parser.add_argument("--no-index-sort", action="store_true",
                        help="indices without index sorting (to compare)")
    parser.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    args = parser.parse_args()
    ENGINE.__init__(args.stack_dir)

    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    async with httpx.AsyncClient(base_url=args.url, timeout=10) as http:
        info = (await http.get("/")).json()["version"]
    print(f"engine: {info.get('distribution', 'elasticsearch')} {info['number']} at {args.url}; "
          f"{machine()}; load average {os.getloadavg()[0]:.1f}; index prefix {prefix}")
    history = ElasticsearchTradeHistory(args.url, index_prefix=prefix, refresh=False, timeout=120,
                                        index_sort=not args.no_index_sort)
    print(f"index sorting (userId, executionTimestamp, orderId): {not args.no_index_sort}")
    small_prefix = prefix.replace("_", "s_")
    try:
        await load(history, args, args.url)
        await searches(history, args)
        await small_batches(args.url, small_prefix, args)
    finally:
        await history.close()
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        if not args.keep:
            await drop(args.url, [prefix, small_prefix])


async def drop(url: str, prefixes: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for prefix in prefixes:
            listed = await http.get(f"/_cat/indices/{prefix}trading_trades-*",
                                    params={"h": "index", "format": "json"})
            names = [row["index"] for row in listed.json()] if listed.is_success else []
            if names:
                await http.delete(f"/{','.join(names)}")
            await http.delete(f"/_index_template/{prefix}trading_trades")


if __name__ == "__main__":
    asyncio.run(main())
