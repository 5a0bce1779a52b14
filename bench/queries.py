"""Query latency over a big store, against a real `mocktrade up` subprocess.

    .venv/bin/python bench/queries.py                    # 1,000,000 trades, about 3 minutes
    .venv/bin/python bench/queries.py --optimize         # analytics parts merged after loading
    .venv/bin/python bench/queries.py --explain-analytics # + where the 7d volume query's time goes
    .venv/bin/python bench/queries.py --trades 200000 --seconds 1
    .venv/bin/python bench/queries.py --insert-rate 500  # as inserted: trades stream in, about 3.5 minutes

Before the server starts, the data dir is filled directly through the
embedded adapters the persistence job uses (SqliteTradeHistory.index and
ChdbAnalytics.record, in big batches): `--trades` trades of `--users` users
over `--symbols` symbols, spread over the last 7 days, 90% executed; one
extra user ("heavy") holds `--heavy-share` of them. Every user has an account
(SqlitePortfolioStore.create_account) with five positions written into its
portfolio row directly, so that the portfolio view values several holdings
(these fixture portfolios do not reconcile with the trades; `mocktrade
verify` is not the point here).

Then, per query kind, for random users: sequential requests over one
keep-alive connection for `--seconds` (`--analytics-seconds` for the slower
analytics kinds): the latency of a query alone. And a mixed run: open loop at
`--mixed-rate` requests/s for `--mixed-seconds`, 40% portfolio, 50% history,
10% analytics (kinds and users at random), latency from the scheduled send:
latency under concurrent load, queueing included. Kinds:

    GET /v1/trades/search     first page: no filter; symbol; side+status;
                              last 24h (startDate/endDate); a following page
                              (pageToken) without and with a filter; the heavy
                              user's first and following page
    GET /v1/analytics/volume  timeWindow 1h, 24h, 7d, each for all symbols
                              and for one symbol
    GET /v1/portfolio/{user}

With --insert-rate N, N trades/s stream in for as long as queries run
(sequential and mixed): trade_executed events of the loaded users, executed
now, published to the platform's log from a thread of this process, so the
persistence job records them into history and analytics as it would real
ones. The analytics figures are then those of a table being inserted into
(new parts every batch, the open hour read raw at query time), not only of
merged parts.

Loopback only; bounded in time; the server is stopped at the end. Prints
figures; it never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CpuMeter, Platform, machine, percentile, raw_request, run_loadgen,  # noqa: E402
                    status_line, summary_ms)

GOALS_MS = {"history": 50.0, "analytics": 100.0, "portfolio": 10.0}
STATUSES = ("EXECUTED", "FAILED_INSUFFICIENT_FUNDS", "FAILED_INSUFFICIENT_SHARES", "FAILED_OTHER")


def user_name(i: int) -> str:
    return f"user-{i:05d}"


def generate(rng: random.Random, start: int, count: int, users: int, symbols: list[str],
             heavy_every: int, now: datetime):
    from mocktrade.domain.model import Execution, ExecutionStatus, Side

    span = timedelta(days=7).total_seconds()
    batch = []
    for i in range(start, start + count):
        user = "heavy" if heavy_every and i % heavy_every == 0 else user_name(rng.randrange(users))
        executed = rng.random() < 0.9
        status = ExecutionStatus.EXECUTED if executed else ExecutionStatus(rng.choice(STATUSES[1:]))
        at = now - timedelta(seconds=span * rng.random())
        batch.append(Execution(
            f"{i:09d}-{rng.getrandbits(48):012x}", user, rng.choice(symbols),
            Decimal(rng.randint(1, 500)), rng.choice((Side.BUY, Side.SELL)), status,
            Decimal(rng.randint(100_000, 5_000_000)) / 10_000 if executed else None, at,
            None if executed else "not enough", at - timedelta(milliseconds=5)))
    return batch


async def load(data_dir: Path, args, symbols: list[str]) -> dict[str, float]:
    from mocktrade.adapters.embedded._sqlite import write_transaction
    from mocktrade.adapters.embedded.analytics import ChdbAnalytics
    from mocktrade.adapters.embedded.history import SqliteTradeHistory
    from mocktrade.adapters.embedded.portfolios import SqlitePortfolioStore
    from mocktrade.domain.events import format_time

    rng = random.Random(args.seed)
    now = datetime.now(timezone.utc)
    heavy_every = round(1 / args.heavy_share) if args.heavy_share > 0 else 0
    times = {"generate": 0.0, "history": 0.0, "analytics": 0.0}
    history = SqliteTradeHistory(data_dir / "history.sqlite3")
    analytics = ChdbAnalytics(data_dir / "analytics")
    started = time.perf_counter()
    for start in range(0, args.trades, args.batch):
        t = time.perf_counter()
        batch = generate(rng, start, min(args.batch, args.trades - start), args.users, symbols,
                         heavy_every, now)
        times["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        await history.index(batch)
        times["history"] += time.perf_counter() - t
        t = time.perf_counter()
        await analytics.record(batch)
        times["analytics"] += time.perf_counter() - t
        print(f"  loaded {start + len(batch):,} trades in {time.perf_counter() - started:.0f} s",
              end="\r", flush=True)
    print()
    t = time.perf_counter()
    await history.close()  # refreshes SQLite's planner statistics, as a restart would
    times["history"] += time.perf_counter() - t
    if args.optimize:
        t = time.perf_counter()
        await analytics.optimize()
        times["optimize"] = time.perf_counter() - t
    times["parts"] = await analytics._run(lambda client: client.query(
        "SELECT count(), uniqExact(partition) FROM system.parts "
        "WHERE table = 'trading_trades' AND active").result_rows[0])
    await analytics.close()

    t = time.perf_counter()
    store = SqlitePortfolioStore(data_dir / "portfolios.sqlite3")
    names = [user_name(i) for i in range(args.users)] + ["heavy"]
    for name in names:
        await store.create_account(name, Decimal("1000000.00"), now)
    await store.close()
    # Fixture positions, written straight into the portfolio rows.
    conn = SqlitePortfolioStore(data_dir / "portfolios.sqlite3")._conn
    rows = []
    for name in names:
        held = rng.sample(symbols, 5)
        quantities = {s: str(rng.randint(1, 1000)) for s in held}
        basis = {s: f"{int(q) * rng.randint(50, 500)}.00" for s, q in quantities.items()}
        rows.append((json.dumps(quantities), json.dumps(basis), format_time(now), name))
    with write_transaction(conn):
        conn.executemany("UPDATE portfolios SET holdings = ?, costBasis = ?, "
                         "lastUpdatedTimestamp = ?, version = 1 WHERE userId = ?", rows)
    conn.close()
    times["accounts"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - started
    return times


NOTIONAL = ("sum(roundBankers(toDecimal128(quantity, 6) * toDecimal128(executionPrice, 4), 2)) "
            "AS notional")


async def explain_analytics(data_dir: Path, rounds: int = 7) -> None:
    """The 7d volume query and variants of it, in-process on the loaded data:
    where its time goes (FINAL, the per-row notional, threads)."""
    import statistics

    from mocktrade.adapters.embedded.analytics import ChdbAnalytics, volume_sql

    analytics = ChdbAnalytics(data_dir / "analytics")
    now = datetime.now(timezone.utc)
    base = volume_sql(None)
    variants = {"as is": base,
                "without the notional sum": base.replace(NOTIONAL, "0 AS notional"),
                "without FINAL": base.replace(" FINAL", ""),
                "max_threads = 1": base + " SETTINGS max_threads = 1"}
    parameters = {"executed": "EXECUTED", "since": now - timedelta(days=7), "until": now}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, sql in variants.items():
            started = time.perf_counter()
            await analytics._run(lambda client, sql=sql: client.query(sql, parameters=parameters))
            times[name].append((time.perf_counter() - started) * 1000)
    await analytics.close()
    print(f"  7d volume query in-process (median of {rounds}, interleaved):")
    for name, sql in variants.items():
        same = sql == base and name != "as is"
        print(f"    {statistics.median(times[name]):7.1f} ms  {name}"
              + ("  (variant not applicable to the current query text)" if same else ""))


def search_path(**params: str) -> str:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return "/v1/trades/search" + (f"?{query}" if query else "")


def next_page_requests(platform: Platform, users: list[str], params: dict[str, str],
                       tokens: dict[str, str], want: int) -> list[list[str]]:
    """Requests for the page after the first, for users that have one."""
    requests = []
    for user in users:
        status, body = platform.get_json(search_path(**params), tokens[user])
        if status != 200:
            raise RuntimeError(f"search failed: {status} {body}")
        token = body.get("nextPageToken")
        if token:
            requests.append(raw_request("GET", platform.port,
                                        search_path(**params, pageToken=token), tokens[user]))
        if len(requests) >= want:
            break
    return requests


def build_requests(platform: Platform, args, symbols: list[str]) -> dict[str, list[str]]:
    rng = random.Random(args.seed + 1)
    sample = [user_name(i) for i in rng.sample(range(args.users), min(args.users, args.sample))]
    tokens = {user: platform.token(user) for user in sample + ["heavy"]}
    port = platform.port
    now = datetime.now(timezone.utc)
    day_ago = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def per_user(make) -> list[str]:
        return [raw_request("GET", port, make(user), tokens[user]) for user in sample]

    kinds: dict[str, list[str]] = {
        "search first page": per_user(lambda u: search_path()),
        "search symbol": per_user(lambda u: search_path(symbol=rng.choice(symbols))),
        "search side+status": per_user(lambda u: search_path(side="SELL", status="EXECUTED")),
        "search last 24h": per_user(lambda u: search_path(startDate=day_ago, endDate=until)),
    }
    few = sample[:200]
    kinds["search next page"] = next_page_requests(platform, few, {"limit": "20"}, tokens, 200)
    kinds["search next page, symbol"] = next_page_requests(
        platform, few, {"symbol": symbols[0], "limit": "2"}, tokens, 200)
    kinds["heavy first page"] = [raw_request("GET", port, search_path(), tokens["heavy"])]
    kinds["heavy next page"] = next_page_requests(platform, ["heavy"], {}, tokens, 1)
    kinds["heavy symbol+side"] = [raw_request("GET", port, search_path(symbol=symbols[1], side="BUY"),
                                              tokens["heavy"])]
    for window in ("1h", "24h", "7d"):
        kinds[f"volume {window}"] = per_user(lambda u: f"/v1/analytics/volume?timeWindow={window}")
        kinds[f"volume {window} symbol"] = per_user(
            lambda u: f"/v1/analytics/volume?timeWindow={window}&symbol={rng.choice(symbols)}")
    kinds["portfolio"] = per_user(lambda u: f"/v1/portfolio/{u}")
    return {kind: reqs for kind, reqs in kinds.items() if reqs}


# The mixed run's shares of requests: most reads are a user's own portfolio and
# trades; market volume is a dashboard figure, asked for less often.
MIX = {"portfolio": 0.4, "history": 0.5, "analytics": 0.1}
MIX_TEXT = ", ".join(f"{share:.0%} {name}" for name, share in MIX.items())


def mixed_requests(kinds: dict[str, list[str]], seed: int, count: int = 5000) -> list[list[str]]:
    """`count` requests: a group by MIX, then a kind of it and a request of it at random."""
    rng = random.Random(seed + 2)
    groups = {name: [k for k in kinds if group(k) == name] for name in MIX}
    names, weights = list(MIX), list(MIX.values())
    out = []
    for _ in range(count):
        kind = rng.choice(groups[rng.choices(names, weights)[0]])
        out.append([kind, rng.choice(kinds[kind])])
    return out


def group(kind: str) -> str:
    if kind.startswith("volume"):
        return "analytics"
    return "portfolio" if kind == "portfolio" else "history"


class TradeStream:
    """--insert-rate: executed trades of the loaded users published to the
    platform's log at a steady rate, from a thread with its own event loop."""

    def __init__(self, data_dir: Path, rate: float, users: int, symbols: list[str], seed: int):
        import threading

        self.data_dir, self.rate, self.users, self.symbols = data_dir, rate, users, symbols
        self.rng = random.Random(seed + 1)
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "TradeStream":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        from mocktrade.adapters.embedded.eventlog import SqliteEventLog
        from mocktrade.domain.events import TOPIC_TRADE_EXECUTED, encode_trade_executed
        from mocktrade.domain.model import Execution, ExecutionStatus, Side

        log = SqliteEventLog(self.data_dir / "eventlog.sqlite3")
        tick, started, n = 0.1, time.monotonic(), 0
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate) - self.published
                now = datetime.now(timezone.utc)
                batch = []
                for _ in range(max(due, 0)):
                    n += 1
                    user = user_name(self.rng.randrange(self.users))
                    execution = Execution(
                        f"live-{n:09d}-{self.rng.getrandbits(32):08x}", user,
                        self.rng.choice(self.symbols), Decimal(self.rng.randint(1, 500)),
                        self.rng.choice((Side.BUY, Side.SELL)), ExecutionStatus.EXECUTED,
                        Decimal(self.rng.randint(100_000, 5_000_000)) / 10_000, now, None,
                        now - timedelta(milliseconds=5))
                    batch.append((user, encode_trade_executed(execution), None))
                if batch:
                    await log.publish_many(TOPIC_TRADE_EXECUTED, batch)
                    self.published += len(batch)
                await asyncio.sleep(tick)
        finally:
            await log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--heavy-share", type=float, default=0.01,
                        help="share of trades of the one 'heavy' user")
    parser.add_argument("--batch", type=int, default=100_000, help="trades per load batch")
    parser.add_argument("--optimize", action="store_true",
                        help="OPTIMIZE the analytics table after loading (merge its parts)")
    parser.add_argument("--explain-analytics", action="store_true",
                        help="before serving, time the 7d volume query and variants in-process")
    parser.add_argument("--seconds", type=float, default=2.0, help="sequential seconds per kind")
    parser.add_argument("--analytics-seconds", type=float, default=6.0,
                        help="sequential seconds per analytics kind (they are slower)")
    parser.add_argument("--mixed-rate", type=float, default=50.0, help="mixed-run requests/s")
    parser.add_argument("--mixed-seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16, help="mixed-run connections")
    parser.add_argument("--sample", type=int, default=500, help="random users queried")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    parser.add_argument("--insert-rate", type=float, default=0.0,
                        help="trades/s streamed in through the log while querying (0: none)")
    args = parser.parse_args()

    from mocktrade.config import DEFAULT_SYMBOLS

    symbols = list(DEFAULT_SYMBOLS[:args.symbols])
    print(f"queries benchmark on {machine()}; load {open('/proc/loadavg').read().split()[:3]}")
    with Platform(keep=args.keep, env={"MOCKTRADE_SYMBOLS": ",".join(symbols)}) as platform:
        print(f"loading {args.trades:,} trades of {args.users:,} users (+ heavy, "
              f"{args.heavy_share:.0%}) over {len(symbols)} symbols and 7 days into "
              f"{platform.data_dir}", flush=True)
        times = asyncio.run(load(platform.data_dir, args, symbols))
        print(f"  load: {times['total']:.1f} s total = generating {times['generate']:.1f} s, "
              f"history index {times['history']:.1f} s "
              f"({args.trades / times['history']:,.0f}/s), analytics record "
              f"{times['analytics']:.1f} s ({args.trades / times['analytics']:,.0f}/s), "
              + (f"optimize {times['optimize']:.1f} s, " if "optimize" in times else "")
              + f"{args.users + 1:,} accounts {times['accounts']:.1f} s")
        parts, partitions = times["parts"]
        print(f"  analytics table: {parts} active parts in {partitions} partitions "
              + ("(merged by OPTIMIZE)" if args.optimize else "(as inserted; --optimize merges them)"))
        if args.explain_analytics:
            asyncio.run(explain_analytics(platform.data_dir))
        sizes = {p.name: p.stat().st_size for p in platform.data_dir.glob("*.sqlite3*")}
        analytics_bytes = sum(p.stat().st_size for p in (platform.data_dir / "analytics").rglob("*")
                              if p.is_file())
        print(f"  on disk: history {sum(v for k, v in sizes.items() if k.startswith('history')) / 1e6:.0f} MB, "
              f"analytics {analytics_bytes / 1e6:.0f} MB")
        started = time.perf_counter()
        platform.start()
        print(f"mocktrade up ready in {time.perf_counter() - started:.1f} s (pid {platform.pid})",
              flush=True)
        platform.wait_for_prices(len(symbols))
        kinds = build_requests(platform, args, symbols)
        stream = TradeStream(platform.data_dir, args.insert_rate, args.users, symbols, args.seed)
        if args.insert_rate > 0:
            stream.__enter__()
            print(f"\ninserting {args.insert_rate:,.0f} executed trades/s through the log while "
                  "querying (persistence job -> history and analytics)", flush=True)

        print(f"\nsequential, one connection, {args.seconds:.0f} s per kind, "
              f"{args.analytics_seconds:.0f} s per analytics kind (latency alone):")
        sequential: dict[str, list[float]] = {}
        for kind, reqs in kinds.items():
            seconds = args.analytics_seconds if group(kind) == "analytics" else args.seconds
            result = run_loadgen({"port": platform.port, "requests": [[kind, r] for r in reqs],
                                  "connections": 1, "mode": "closed", "warmup": 0.3,
                                  "duration": seconds})
            lat = result["tags"].get(kind, {}).get("latency_ms", [])
            sequential[kind] = lat
            print(f"  {kind:26s} {summary_ms(lat)}  [{status_line(result)}]", flush=True)

        print(f"\nmixed, open loop at {args.mixed_rate:.0f} requests/s for {args.mixed_seconds:.0f} s "
              f"over {args.connections} connections ({MIX_TEXT}; latency from the scheduled "
              f"send, so queueing counts):")
        meter = CpuMeter(platform.pid)
        result = run_loadgen({"port": platform.port, "requests": mixed_requests(kinds, args.seed),
                              "connections": args.connections, "mode": "open",
                              "rate": args.mixed_rate, "warmup": 1.0,
                              "duration": args.mixed_seconds})
        cpu = meter.stop(result["client_cpu"])
        print(f"  [{status_line(result)}]; {CpuMeter.line(cpu)}")
        mixed: dict[str, list[float]] = {}
        for kind in kinds:
            lat = result["tags"].get(kind, {}).get("latency_ms", [])
            mixed[kind] = lat
            print(f"  {kind:26s} {summary_ms(lat)}")
        for name in GOALS_MS:
            lat = [v for k in kinds if group(k) == name for v in mixed[k]]
            mixed[name] = lat
            print(f"  all {name + ' kinds':22s} {summary_ms(lat)}")
        if args.insert_rate > 0:
            stream.__exit__()
            print(f"  {stream.published:,} trades inserted while querying", flush=True)

    inserting = f", {args.insert_rate:,.0f} trades/s inserted throughout" if args.insert_rate else ""
    print("\nsummary against the goals (p99, ms): worst kind alone; all kinds of the group in the "
          f"mixed run{inserting}")
    for name, goal in GOALS_MS.items():
        members = [k for k in kinds if group(k) == name]
        worst_seq = max(percentile(sequential[k], 0.99) for k in members)
        worst_kind = max(members, key=lambda k: percentile(sequential[k], 0.99))
        mix = percentile(mixed[name], 0.99)
        print(f"  {name}: alone worst p99 {worst_seq:.1f} ({worst_kind}); mixed p99 {mix:.1f}; goal "
              f"< {goal:.0f} ms: alone {'met' if worst_seq < goal else 'MISSED'}, mixed "
              f"{'met' if mix < goal else 'MISSED'}")


if __name__ == "__main__":
    main()
