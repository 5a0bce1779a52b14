"""Resting orders meet ticks: tick -> fill latency, trigger-job CPU per tick,
memory per resting order, and order-update push latency, embedded mode.

A real `mocktrade up` subprocess on a data dir prepared here, its feed from a
controlled WebSocket feed of our own (MOCKTRADE_FEED_URL, the exchange feed's
wire format, in a process of its own) so that we choose every price and know
when each tick left; 20 symbols (MOCKTRADE_SYMBOLS).

Setup (before the server starts):
  * users (default 2,000, each trading one of the 20 symbols) are created the
    way `mocktrade accounts create` does, and each buys 1,000 shares through
    the portfolio store's apply() (a MARKET PlaceOrder at 100.0000);
  * the resting orders (default 100,000, 5,000 per symbol, GTC, quantity 1)
    are written by a separate process through the same SqlitePortfolioStore.apply()
    the execution job uses (a PlaceOrder each, one transaction each), timed.
    No order_updates are published for them: the trigger job builds its book
    from the store's OPEN orders at start, which is its documented restart path.
  Per symbol, most orders sit far from the market (buy limits and sell stops
  at 60-95, sell limits and buy stops at 105-140, stop-limits likewise) and
  never cross; a "ladder" of levels 99.00, 98.99, ... (buy LIMIT, sell STOP,
  sell STOP_LIMIT) and 101.00, 101.01, ... (sell LIMIT, buy STOP, buy
  STOP_LIMIT) holds `--cross` orders per level, so each crossing tick (down to
  the next level, then up to the next level, alternately) crosses exactly
  `--cross` orders (the earlier levels are filled already).

Measured phases, on one schedule the feed and this process share (ticks go
round-robin over the symbols, one tick per frame, at `--rate`/s):
  idle     no ticks at all (server CPU baseline);
  quiet    ticks at --rate/s between 99.90 and 100.10: they cross nothing;
  crossing ticks at --rate/s, each crossing `--cross` orders;
  then a drain until every crossed order is final (bounded).

Figures:
  (a) tick -> fill: the feed's send time of the crossing tick (its `t`, taken
      just before the send) -> the order's EXECUTED transition time in the
      portfolio store; and -> the order_update in a Phoenix client's hand.
  (b) trigger job CPU per tick: (1) in-process, before the server starts: a
      TriggerHandler loaded from the same store (the job's own load()), fed
      the same ticks as encoded market_data records, publishing its commands
      to a real SqliteEventLog in a temp dir; thread CPU of handle_ticks per
      tick, non-crossing and crossing. (2) the CPU of `up` (and its event-loop
      thread) and of the job process it starts, per tick in the quiet and
      crossing phases minus the idle phase: the whole tick path (ingestion,
      log, market-data service, price cache, trigger job), an upper bound.
  (c) memory per resting order: tracemalloc of what the handler's book keeps
      after load() (100k orders), and the VmRSS of `up` + its job process with
      the 100k orders minus a baseline server on the same data dir before they
      were written.
  (d) push latency: EXECUTED transition time -> the order_update received by
      a Phoenix client joined to orders:{userId} (every user is watched by
      default, spread over --sockets connections).

Loopback only, bounded in time, stops by itself (the server and the feed are
stopped at the end). Prints figures; it never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from contextlib import closing
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Platform, cpu_seconds, machine, percentile, proc_status, summary_ms  # noqa: E402

GOAL_FILL_P99_MS = 50.0
GOAL_PUSH_P99_MS = 20.0

SYMBOLS = ("MOCKAAPL", "MOCKMSFT", "MOCKGOOG", "MOCKAMZN", "MOCKNVDA", "MOCKMETA", "MOCKTSLA",
           "MOCKBRK", "MOCKJPM", "MOCKV", "MOCKJNJ", "MOCKWMT", "MOCKPG", "MOCKMA", "MOCKUNH",
           "MOCKHD", "MOCKDIS", "MOCKBAC", "MOCKXOM", "MOCKKO")
START_PRICE = Decimal("100.0000")
CENT = Decimal("0.01")
DOWN_TOP, UP_BOTTOM = Decimal("99.00"), Decimal("101.00")


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def p4(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.0001")))


# -- the plan: users, orders, ticks ---------------------------------------------

def level_price(direction: str, level: int) -> Decimal:
    return DOWN_TOP - CENT * level if direction == "down" else UP_BOTTOM + CENT * level


def quiet_price(j: int) -> Decimal:
    return START_PRICE + CENT * ((j * 7) % 21 - 10)  # 99.90 .. 100.10


def crossing_price(j: int) -> Decimal:
    """The j-th crossing tick of a symbol: down to level j//2, then up to it."""
    return level_price("down" if j % 2 == 0 else "up", j // 2)


def ticks_per_symbol(rate: float, seconds: float) -> int:
    return math.ceil(rate * seconds / len(SYMBOLS))


def make_plan(args) -> dict:
    """Users and resting orders, deterministic for a seed."""
    rng = random.Random(args.seed)
    users = [f"trig-{i:05d}" for i in range(args.users)]
    by_symbol = {s: [u for i, u in enumerate(users) if i % len(SYMBOLS) == k]
                 for k, s in enumerate(SYMBOLS)}
    per_symbol = args.orders // len(SYMBOLS)
    levels = math.ceil(ticks_per_symbol(args.rate, args.cross_seconds) / 2) + 2  # a spare level or two
    if levels > 390:
        raise SystemExit("crossing phase too long for the ladder (at most ~780 ticks per symbol)")
    ladder = 2 * levels * args.cross
    if ladder > per_symbol:
        raise SystemExit(f"{ladder} ladder orders per symbol exceed {per_symbol} orders per symbol")
    orders = []
    for symbol in SYMBOLS:
        specs = []
        for level in range(levels):
            for direction, kinds in (("down", (("BUY", "LIMIT"), ("SELL", "STOP"), ("SELL", "STOP_LIMIT"))),
                                     ("up", (("SELL", "LIMIT"), ("BUY", "STOP"), ("BUY", "STOP_LIMIT")))):
                price = level_price(direction, level)
                for n in range(args.cross):
                    side, kind = kinds[(level * args.cross + n) % 3]
                    specs.append(_order_spec(side, kind, price, direction == "down", p4(price)))
        for _ in range(per_symbol - ladder):
            side, kind = rng.choice((("BUY", "LIMIT"), ("SELL", "LIMIT"), ("BUY", "STOP"),
                                     ("SELL", "STOP"), ("BUY", "STOP_LIMIT"), ("SELL", "STOP_LIMIT")))
            below = (side == "BUY") == (kind == "LIMIT")  # buy limits, sell stops rest below
            cents = rng.randrange(0, 3501)
            price = Decimal("60.00") + CENT * cents if below else Decimal("105.00") + CENT * cents
            specs.append(_order_spec(side, kind, price, below, None))
        rng.shuffle(specs)
        owners = by_symbol[symbol]
        for i, spec in enumerate(specs):
            spec.update(orderId=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        userId=owners[i % len(owners)], symbol=symbol)
            orders.append(spec)
    return {"users": users, "symbolOf": {u: s for s, us in by_symbol.items() for u in us},
            "orders": orders, "levels": levels}


def _order_spec(side: str, kind: str, price: Decimal, below: bool, crossed_at: str | None) -> dict:
    """A resting order at `price`; a stop-limit's limit is 1.00 past its stop,
    so that it fills on the tick that triggers it."""
    spec = {"side": side, "type": kind, "limitPrice": None, "stopPrice": None, "crossedAt": crossed_at}
    if kind == "LIMIT":
        spec["limitPrice"] = p4(price)
    else:
        spec["stopPrice"] = p4(price)
        if kind == "STOP_LIMIT":
            spec["limitPrice"] = p4(price - 1 if below else price + 1)
    return spec


# -- seeding, in a process of its own --------------------------------------------

async def _seed(data_dir: Path, plan_path: Path, part: str) -> dict:
    from mocktrade.adapters.embedded.portfolios import SqlitePortfolioStore
    from mocktrade.domain.lifecycle import PlaceOrder
    from mocktrade.domain.model import Order, OrderType, Side, TimeInForce

    plan = json.loads(plan_path.read_text())
    store = SqlitePortfolioStore(data_dir / "portfolios.sqlite3")
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    cpu0 = time.process_time()
    statuses: dict[str, int] = {}
    try:
        if part == "users":
            for user in plan["users"]:
                await store.create_account(user, Decimal("1000000.00"), now)
                order = Order(str(uuid.uuid4()), user, plan["symbolOf"][user], Decimal("1000.000000"),
                              Side.BUY, datetime.now(timezone.utc))
                step = await store.apply(PlaceOrder(order), START_PRICE, datetime.now(timezone.utc))
                status = step.outcomes[-1].status.value
                statuses[status] = statuses.get(status, 0) + 1
        else:
            for spec in plan["orders"]:
                at = datetime.now(timezone.utc)
                order = Order(spec["orderId"], spec["userId"], spec["symbol"], Decimal("1.000000"),
                              Side(spec["side"]), at, OrderType(spec["type"]), TimeInForce.GTC,
                              Decimal(spec["limitPrice"]) if spec["limitPrice"] else None,
                              Decimal(spec["stopPrice"]) if spec["stopPrice"] else None)
                step = await store.apply(PlaceOrder(order), START_PRICE, at)
                status = step.orders[-1].status.value if step.orders else "NONE"
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        await store.close()
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu0,
            "statuses": statuses}


def seed(data_dir: Path, plan_path: Path, part: str) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        subprocess.run([sys.executable, __file__, "--seed-worker", str(data_dir), str(plan_path),
                        part, str(out)], check=True, timeout=1800)
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# -- the feed, in a process of its own ---------------------------------------------

def feed_process(port: int, control: mp.Queue, results: mp.Queue, rate: float,
                 phases: list[tuple[str, float]]) -> None:
    """A WebSocket feed on `port`: each symbol's price every 0.5 s until a start
    time arrives on `control`, then the phases' ticks on schedule, then silence.
    Puts its send log on `results`."""
    import orjson
    from websockets.asyncio.server import serve

    clients: set = set()
    prices = {s: START_PRICE for s in SYMBOLS}

    def micros() -> int:
        return time.time_ns() // 1000

    async def broadcast(ticks: list[tuple[str, Decimal]]) -> int:
        t = micros()
        frame = orjson.dumps([{"type": "tick", "s": s, "p": p4(p), "t": t} for s, p in ticks]).decode()
        for ws in list(clients):
            try:
                await ws.send(frame)
            except Exception:
                clients.discard(ws)
        return t

    async def client(ws) -> None:
        await ws.send(orjson.dumps({"type": "welcome", "feed": "bench", "version": 1,
                                    "symbols": list(SYMBOLS), "t": micros()}).decode())
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def main() -> None:
        async with serve(client, "127.0.0.1", port, compression=None):
            start_at = None
            while start_at is None:
                await broadcast(list(prices.items()))
                for _ in range(5):
                    await asyncio.sleep(0.1)
                    if not control.empty():
                        start_at = control.get()
                        if start_at == "stop":
                            return
                        break
            log = []  # (phase, symbol, price, t_us, clients)
            counters = {s: 0 for s in SYMBOLS}
            offset = start_at
            n_total = 0
            for phase, seconds in phases:
                end = offset + seconds
                if phase == "idle":
                    await asyncio.sleep(max(0.0, end - time.time()))
                else:
                    counters = {s: 0 for s in SYMBOLS}
                    n = 0
                    while True:
                        due = offset + n / rate
                        if due >= end:
                            break
                        delay = due - time.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        symbol = SYMBOLS[n_total % len(SYMBOLS)]
                        j = counters[symbol]
                        counters[symbol] += 1
                        price = quiet_price(j) if phase == "quiet" else crossing_price(j)
                        prices[symbol] = price
                        t = await broadcast([(symbol, price)])
                        log.append((phase, symbol, p4(price), t, len(clients), (t / 1e6) - due))
                        n += 1
                        n_total += 1
                offset = end
            results.put(log)
            while control.empty():  # stay up (silent) until told to stop
                await asyncio.sleep(0.2)

    asyncio.run(main())


# -- Phoenix clients ----------------------------------------------------------------

class Watchers:
    """`sockets` Phoenix connections to /v1/marketdata, joined between them to
    orders:{user} of every watched user; records each EXECUTED order_update."""

    def __init__(self, url: str, tokens: dict[str, str], sockets: int):
        self.url, self.tokens, self.sockets = url, tokens, sockets
        self.executed: list[tuple[float, dict]] = []  # (received at, payload)
        self.other_updates = 0
        self.joined = 0
        self.refused = 0
        self.closed: list[str] = []
        self._tasks: list[asyncio.Task] = []
        self._ready = asyncio.Event()
        self._pending = 0

    async def start(self, timeout: float = 120.0) -> None:
        users = list(self.tokens)
        groups = [users[i::self.sockets] for i in range(self.sockets)]
        groups = [g for g in groups if g]
        self._pending = len(groups)
        self._tasks = [asyncio.create_task(self._run(g)) for g in groups]
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _run(self, users: list[str]) -> None:
        import orjson
        import websockets

        try:
            async with websockets.connect(self.url + "?vsn=2.0.0", compression=None,
                                          close_timeout=1, max_queue=None) as ws:
                refs = {}
                for i, user in enumerate(users):
                    ref = str(i + 1)
                    refs[ref] = user
                    await ws.send(orjson.dumps([ref, ref, f"orders:{user}", "phx_join",
                                                {"token": self.tokens[user]}]).decode())
                waiting = set(refs)
                while waiting:
                    msg = orjson.loads(await ws.recv())
                    if msg[3] == "phx_reply" and msg[1] in waiting:
                        waiting.discard(msg[1])
                        if msg[4].get("status") == "ok":
                            self.joined += 1
                        else:
                            self.refused += 1
                self._pending -= 1
                if self._pending == 0:
                    self._ready.set()
                while True:
                    frame = await ws.recv()
                    received = time.time()
                    msg = orjson.loads(frame)
                    if msg[3] == "order_update":
                        if msg[4].get("status") == "EXECUTED":
                            self.executed.append((received, msg[4]))
                        else:
                            self.other_updates += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dropped socket is reported, not fatal
            self.closed.append(repr(exc))
            self._pending -= 1
            if self._pending <= 0:
                self._ready.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- CPU of the server and of its event-loop thread -------------------------------------

def thread_cpu(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of `pid` (the embedded `up` runs its jobs in two)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def cpu_sample(pid: int, jobs: list[int]) -> dict[str, float]:
    """CPU seconds: `server` the HTTP/WebSocket process (`loop`: its event-loop
    thread), `jobs` its child processes (`jobs_loop`: their main threads)."""
    return {"t": time.monotonic(), "server": cpu_seconds(pid), "loop": thread_cpu(pid, pid),
            "jobs": sum(cpu_seconds(j) for j in jobs),
            "jobs_loop": sum(thread_cpu(j, j) for j in jobs),
            "machine": machine_busy(), "self": time.process_time()}


def cpu_between(a: dict, b: dict) -> dict[str, float]:
    wall = b["t"] - a["t"]
    d = {k: b[k] - a[k] for k in ("server", "loop", "jobs", "jobs_loop", "machine", "self")}
    d["wall"] = wall
    d["other_cores"] = max(0.0, d["machine"] - d["server"] - d["jobs"] - d["self"]) / wall
    return d


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS of `up` and its children, VmRSS of the children alone), kB."""
    jobs = sum(proc_status(j)["VmRSS"] for j in children(pid))
    return proc_status(pid)["VmRSS"] + jobs, jobs


# -- (b) and (c) in-process: the trigger handler over the seeded store --------------------

async def in_process_handler(data_dir: Path, args) -> dict:
    """Load a TriggerHandler from the seeded store exactly as the job does, with
    tracemalloc on; then time handle_ticks per tick on the benchmark's prices."""
    from mocktrade.adapters.embedded.eventlog import SqliteEventLog
    from mocktrade.adapters.embedded.portfolios import SqlitePortfolioStore
    from mocktrade.domain.events import TOPIC_MARKET_DATA, encode, market_data_payload
    from mocktrade.domain.model import PriceTick
    from mocktrade.jobs.triggers import TriggerHandler
    from mocktrade.ports import LogRecord

    scratch = Path(tempfile.mkdtemp(prefix="mocktrade-bench-triggers-"))
    store = SqlitePortfolioStore(data_dir / "portfolios.sqlite3")
    event_log = SqliteEventLog(scratch / "eventlog.sqlite3")
    try:
        gc.collect()
        rss0 = proc_status(os.getpid())["VmRSS"]
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        handler = TriggerHandler(store, event_log)
        await handler.load()
        load_s = time.perf_counter() - t0
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        rss1 = proc_status(os.getpid())["VmRSS"]
        resting = len(handler.book)
        t0, c0 = time.perf_counter(), time.process_time()
        await TriggerHandler(store, event_log).load()  # untraced, for its time
        load_untraced = time.perf_counter() - t0, time.process_time() - c0
        out = {"resting": resting, "bytes_per_order": (current - base) / max(1, resting),
               "peak_mb": (peak - base) / 2**20, "book_mb": (current - base) / 2**20,
               "rss_delta_kb": rss1 - rss0, "load_traced_s": load_s,
               "load_s": load_untraced[0], "load_cpu_s": load_untraced[1]}

        def record(symbol: str, price: Decimal, offset: int) -> LogRecord:
            tick = PriceTick(symbol, price, datetime.now(timezone.utc))
            return LogRecord(TOPIC_MARKET_DATA, 0, offset, symbol,
                             encode("ingestion", market_data_payload(tick)))

        per_tick: dict[str, list[float]] = {"quiet": [], "crossing": []}
        proposals: dict[str, int] = {"quiet": 0, "crossing": 0}
        offset = 0
        for phase, count in (("quiet", args.inproc_ticks), ("crossing", args.inproc_ticks)):
            counters = {s: 0 for s in SYMBOLS}
            records = []
            for n in range(count):
                symbol = SYMBOLS[n % len(SYMBOLS)]
                j = counters[symbol]
                counters[symbol] += 1
                price = quiet_price(j) if phase == "quiet" else crossing_price(j)
                records.append(record(symbol, price, offset))
                offset += 1
            before = handler.stats.triggers
            for rec in records:
                c0 = time.thread_time()
                await handler.handle_ticks([rec])
                per_tick[phase].append((time.thread_time() - c0) * 1000)
            proposals[phase] = handler.stats.triggers - before
        out["per_tick"], out["proposals"] = per_tick, proposals
        # The same, without the publish: TriggerBook.on_tick alone (crossing).
        book = handler.book
        on_tick = []
        counters = {s: 0 for s in SYMBOLS}
        for n in range(args.inproc_ticks):
            symbol = SYMBOLS[n % len(SYMBOLS)]
            j = counters[symbol] + 10_000  # quiet prices: nothing left to cross at them
            counters[symbol] += 1
            c0 = time.perf_counter()
            book.on_tick(symbol, quiet_price(j), datetime.now(timezone.utc))
            on_tick.append((time.perf_counter() - c0) * 1000)
        out["on_tick_quiet"] = on_tick
        return out
    finally:
        await store.close()
        await event_log.close()
        import shutil
        shutil.rmtree(scratch, ignore_errors=True)


# -- the run ----------------------------------------------------------------------------

def log_count(platform: Platform, text: str) -> int:
    """How often `text` is in the server's log and in the embedded job
    processes' logs (data_dir/logs/<name>.log, where `up` runs the jobs apart)."""
    count = 0
    for path in (platform.log_path, *sorted((platform.data_dir / "logs").glob("*.log"))):
        if path.exists():
            count += path.read_bytes().decode(errors="replace").count(text)
    return count


def wait_for_log(platform: Platform, text: str, timeout: float, after: int = 0) -> float:
    """Wait until `text` has been logged more than `after` times; seconds waited."""
    started = time.monotonic()
    while log_count(platform, text) <= after:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no {text!r} in the server log after {timeout}s:\n{platform.log()}")
        if platform.process is not None and platform.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{platform.log()}")
        time.sleep(0.05)
    return time.monotonic() - started


def ladder_outcomes(platform: Platform, ids: list[str]) -> dict[str, tuple[str, float | None, str | None]]:
    """orderId -> (status, EXECUTED transition time, execution price) from the store."""
    import orjson

    out = {}
    with closing(platform.portfolio_db()) as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for order_id, record in conn.execute(
                    f"SELECT orderId, record FROM orders WHERE orderId IN ({','.join('?' * len(chunk))})",
                    chunk):
                r = orjson.loads(record)
                executed = next((iso_seconds(at) for s, at, _ in r["transitions"] if s == "EXECUTED"), None)
                price = (r.get("outcome") or {}).get("executionPrice")
                out[order_id] = (r["status"], executed, price)
    return out


async def measure(platform: Platform, plan: dict, args, feed_q: mp.Queue, results_q: mp.Queue,
                  phases: list[tuple[str, float]]) -> dict:
    tokens = {u: platform.token(u) for u in plan["users"][:args.watch]}
    watchers = Watchers(platform.ws_url, tokens, args.sockets)
    await watchers.start()
    print(f"  Phoenix clients: {watchers.joined} orders:{{user}} topics joined over {args.sockets} "
          f"sockets ({watchers.refused} refused)", flush=True)
    jobs = children(platform.pid)
    print(f"  job processes under `up`: {jobs}", flush=True)
    start_at = time.time() + 1.0
    feed_q.put(start_at)
    samples = []
    offset = start_at
    await asyncio.sleep(max(0.0, start_at - time.time()))
    samples.append(cpu_sample(platform.pid, jobs))
    for _, seconds in phases:
        offset += seconds
        await asyncio.sleep(max(0.0, offset - time.time()))
        samples.append(cpu_sample(platform.pid, jobs))
    cpu = {phase: cpu_between(samples[i], samples[i + 1]) for i, (phase, _) in enumerate(phases)}
    log = await asyncio.get_running_loop().run_in_executor(None, results_q.get)

    sent = {(s, p): t / 1e6 for phase, s, p, t, _, _ in log if phase == "crossing"}
    crossed_prices = set(sent)
    ladder = [o for o in plan["orders"] if o["crossedAt"] and (o["symbol"], o["crossedAt"]) in crossed_prices]
    ids = [o["orderId"] for o in ladder]
    drain_started = time.monotonic()
    while True:
        outcomes = ladder_outcomes(platform, ids)
        done = sum(1 for st, _, _ in outcomes.values() if st in ("EXECUTED", "FAILED", "CANCELED", "EXPIRED"))
        if done >= len(ids) or time.monotonic() - drain_started > args.drain_timeout:
            break
        await asyncio.sleep(0.25)
    drain = time.monotonic() - drain_started
    await asyncio.sleep(0.5)  # the last pushes
    outcomes = ladder_outcomes(platform, ids)
    rss_after = tree_rss_kb(platform.pid)
    await watchers.stop()
    return {"log": log, "cpu": cpu, "ladder": ladder, "outcomes": outcomes, "drain": drain,
            "watchers": watchers, "rss_after": rss_after, "sent": sent}


def report(run: dict, plan: dict, args, phases) -> dict:
    log, cpu, outcomes, sent = run["log"], run["cpu"], run["outcomes"], run["sent"]
    figures: dict = {}
    ticks = {p: sum(1 for row in log if row[0] == p) for p, _ in phases}
    lateness = [row[5] * 1000 for row in log]
    no_client = sum(1 for row in log if row[4] == 0)
    print(f"  feed: {ticks} ticks sent; send lateness vs schedule {summary_ms(lateness)}; "
          f"{no_client} sent with no client connected")
    print("  CPU by phase, in cores (CPU-s / wall-s): `up` (HTTP, WebSockets, ingestion, market "
          "data; loop = its event-loop thread) and its job process (execution, triggers, persistence):")
    for phase, seconds in phases:
        c = cpu[phase]
        print(f"    {phase:8s} {c['wall']:5.1f} s: up {c['server'] / c['wall']:.2f} (loop "
              f"{c['loop'] / c['wall']:.2f}), jobs {c['jobs'] / c['wall']:.2f} (main thread "
              f"{c['jobs_loop'] / c['wall']:.2f}), this bench {c['self'] / c['wall']:.2f}, "
              f"other processes {c['other_cores']:.2f}")
    idle = cpu["idle"]
    for phase in ("quiet", "crossing"):
        c = cpu[phase]
        for key in ("server", "loop", "jobs", "jobs_loop"):
            extra = (c[key] / c["wall"] - idle[key] / idle["wall"]) * c["wall"]
            figures[f"{phase}_{key}_ms_per_tick"] = 1000 * extra / max(1, ticks[phase])
        print(f"    {phase}: CPU above idle per tick: up {figures[f'{phase}_server_ms_per_tick']:.3f} ms "
              f"(loop {figures[f'{phase}_loop_ms_per_tick']:.3f}), jobs "
              f"{figures[f'{phase}_jobs_ms_per_tick']:.3f} ms (main thread "
              f"{figures[f'{phase}_jobs_loop_ms_per_tick']:.3f})")
    figures["quiet_ms_per_tick"] = figures["quiet_server_ms_per_tick"] + figures["quiet_jobs_ms_per_tick"]
    figures["crossing_ms_per_tick"] = (figures["crossing_server_ms_per_tick"]
                                       + figures["crossing_jobs_ms_per_tick"])
    fills = len([1 for st, _, _ in outcomes.values() if st == "EXECUTED"])
    if ticks.get("crossing"):
        q, x = cpu["quiet"], cpu["crossing"]
        per_fill = {k: (x[k] - q[k] / q["wall"] * x["wall"]) / max(1, fills) for k in ("server", "jobs")}
        print(f"    crossing minus quiet, per fill ({fills} fills): up {1000 * per_fill['server']:.3f} ms, "
              f"jobs {1000 * per_fill['jobs']:.3f} ms")

    # (a) tick -> fill
    statuses: dict[str, int] = {}
    tick_to_fill = []
    wrong_price = 0
    for order in run["ladder"]:
        status, executed, price = outcomes.get(order["orderId"], ("MISSING", None, None))
        statuses[status] = statuses.get(status, 0) + 1
        if status == "EXECUTED" and executed is not None:
            if price is not None and p4(Decimal(price)) != order["crossedAt"]:
                wrong_price += 1
            tick_to_fill.append((executed - sent[(order["symbol"], order["crossedAt"])]) * 1000)
    print(f"  (a) crossed orders: {len(run['ladder'])}; outcomes {statuses}; {wrong_price} filled at "
          f"another price than their tick's; drained {run['drain']:.1f} s after the last tick")
    print(f"      tick sent -> EXECUTED in the store: {summary_ms(tick_to_fill)}")
    figures["fill_p50"], figures["fill_p99"] = percentile(tick_to_fill, 0.5), percentile(tick_to_fill, 0.99)

    # (a') and (d) at the client
    watchers: Watchers = run["watchers"]
    to_client, push = [], []
    for received, payload in watchers.executed:
        key = (payload["symbol"], p4(Decimal(payload["executionPrice"])))
        if key in sent:
            to_client.append((received - sent[key]) * 1000)
        push.append((received - iso_seconds(payload["time"])) * 1000)
    watched = set(list(plan["users"])[:args.watch])
    expected = sum(1 for o in run["ladder"] if o["userId"] in watched
                   and outcomes.get(o["orderId"], ("",))[0] == "EXECUTED")
    print(f"      tick sent -> order_update in the client's hand: {summary_ms(to_client)}")
    print(f"  (d) EXECUTED transition -> order_update in the client's hand: {summary_ms(push)}")
    print(f"      {len(watchers.executed)} EXECUTED updates received of {expected} expected "
          f"({watchers.other_updates} other updates); sockets closed: {watchers.closed or 'none'}")
    figures["client_p50"], figures["client_p99"] = percentile(to_client, 0.5), percentile(to_client, 0.99)
    figures["push_p50"], figures["push_p99"] = percentile(push, 0.5), percentile(push, 0.99)
    figures["other_cores"] = {p: cpu[p]["other_cores"] for p, _ in phases}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=100_000, help="resting orders")
    parser.add_argument("--rate", type=float, default=200.0, help="ticks/s over all symbols")
    parser.add_argument("--cross", type=int, default=1, help="orders each crossing tick crosses")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--quiet-seconds", type=float, default=10.0)
    parser.add_argument("--cross-seconds", type=float, default=20.0)
    parser.add_argument("--watch", type=int, default=None, help="users watched by Phoenix clients (default all)")
    parser.add_argument("--sockets", type=int, default=8)
    parser.add_argument("--inproc-ticks", type=int, default=4000, help="ticks per in-process phase")
    parser.add_argument("--no-baseline", action="store_true", help="skip the RSS baseline server")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    parser.add_argument("--seed-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server and feed are stopped
    if args.seed_worker:
        data_dir, plan_path, part, out = args.seed_worker
        Path(out).write_text(json.dumps(asyncio.run(_seed(Path(data_dir), Path(plan_path), part))))
        return
    args.watch = args.users if args.watch is None else min(args.watch, args.users)
    phases = [("idle", args.idle_seconds), ("quiet", args.quiet_seconds),
              ("crossing", args.cross_seconds)]
    print(f"triggers benchmark on {machine()}; load {open('/proc/loadavg').read().split()[:3]}")
    print(f"  {args.orders:,} resting orders, {args.users:,} users, {len(SYMBOLS)} symbols; "
          f"{args.rate:.0f} ticks/s; crossing ticks cross {args.cross} order(s) each", flush=True)

    plan = make_plan(args)
    plan_path = Path(tempfile.mkstemp(suffix=".json")[1])
    plan_path.write_text(json.dumps(plan))
    ctx = mp.get_context("spawn")
    feed_q, results_q = ctx.Queue(), ctx.Queue()
    sock_port = __import__("common").free_port()
    feed = ctx.Process(target=feed_process, args=(sock_port, feed_q, results_q, args.rate, phases),
                       daemon=True)
    feed.start()
    env = {"MOCKTRADE_FEED_URL": f"ws://127.0.0.1:{sock_port}/feed",
           "MOCKTRADE_SYMBOLS": ",".join(SYMBOLS), "MOCKTRADE_LOG_LEVEL": "INFO",
           "MOCKTRADE_WS_CLIENT_BUFFER": "4096"}
    try:
        with Platform(env=env, keep=args.keep) as platform:
            seeded = seed(platform.data_dir, plan_path, "users")
            print(f"  seeded {len(plan['users'])} users (account + a MARKET buy of 1,000 shares each "
                  f"through apply()) in {seeded['seconds']:.1f} s: {seeded['statuses']}", flush=True)
            baseline = None
            if not args.no_baseline:
                mark = log_count(platform, "trigger book loaded")
                platform.start()
                wait_for_log(platform, "trigger book loaded", 120, mark)
                time.sleep(3.0)
                baseline = tree_rss_kb(platform.pid)
                print(f"  baseline server (no resting orders): VmRSS up + jobs {baseline[0] / 1024:.1f} MB, "
                      f"jobs process {baseline[1] / 1024:.1f} MB", flush=True)
                platform.stop()
                platform.process = None
            seeded = seed(platform.data_dir, plan_path, "orders")
            print(f"  seeded {len(plan['orders']):,} resting orders through SqlitePortfolioStore.apply() "
                  f"in a separate process: {seeded['seconds']:.1f} s ({len(plan['orders']) / seeded['seconds']:,.0f} "
                  f"orders/s, {seeded['cpu']:.1f} s CPU): {seeded['statuses']}", flush=True)

            print("(b)+(c) in-process: TriggerHandler over the seeded store", flush=True)
            inproc = asyncio.run(in_process_handler(platform.data_dir, args))
            print(f"  load() of {inproc['resting']:,} OPEN orders: {inproc['load_s']:.2f} s "
                  f"({inproc['load_cpu_s']:.2f} s CPU; {inproc['load_traced_s']:.2f} s under tracemalloc)")
            print(f"  memory (tracemalloc) kept by the book: {inproc['book_mb']:.1f} MB = "
                  f"{inproc['bytes_per_order']:.0f} bytes per resting order; peak during load "
                  f"{inproc['peak_mb']:.1f} MB; this process's VmRSS grew {inproc['rss_delta_kb'] / 1024:.1f} MB")
            for phase in ("quiet", "crossing"):
                print(f"  handle_ticks, one tick per call, {phase} ({inproc['proposals'][phase]} proposals "
                      f"published): thread CPU {summary_ms(inproc['per_tick'][phase])}; mean "
                      f"{sum(inproc['per_tick'][phase]) / len(inproc['per_tick'][phase]):.3f} ms")
            print(f"  TriggerBook.on_tick alone, non-crossing: {summary_ms(inproc['on_tick_quiet'])}")

            print("(a)+(b)+(c)+(d) the server", flush=True)
            mark = log_count(platform, "trigger book loaded")
            started = time.monotonic()
            platform.start()
            ready = time.monotonic() - started
            loaded = wait_for_log(platform, "trigger book loaded", 300, mark)
            print(f"  mocktrade up pid {platform.pid}: /readyz 200 after {ready:.1f} s, trigger book "
                  f"loaded {loaded:.1f} s later", flush=True)
            time.sleep(3.0)
            with_orders = tree_rss_kb(platform.pid)
            print(f"  server with {len(plan['orders']):,} resting orders: VmRSS up + jobs "
                  f"{with_orders[0] / 1024:.1f} MB, jobs process {with_orders[1] / 1024:.1f} MB", end="")
            rss_per_order = None
            if baseline:
                rss_per_order = (with_orders[0] - baseline[0]) * 1024 / len(plan["orders"])
                jobs_per_order = (with_orders[1] - baseline[1]) * 1024 / len(plan["orders"])
                print(f"; minus the baseline: {(with_orders[0] - baseline[0]) / 1024:.1f} MB = "
                      f"{rss_per_order:.0f} bytes per resting order (jobs process alone "
                      f"{jobs_per_order:.0f})", end="")
            print(flush=True)
            run = asyncio.run(measure(platform, plan, args, feed_q, results_q, phases))
            figures = report(run, plan, args, phases)
            print(f"  VmRSS after the run: up + jobs {run['rss_after'][0] / 1024:.1f} MB, jobs "
                  f"{run['rss_after'][1] / 1024:.1f} MB")
    finally:
        feed_q.put("stop")
        feed.join(5)
        if feed.is_alive():
            feed.terminate()
        plan_path.unlink(missing_ok=True)

    quiet = inproc["per_tick"]["quiet"]
    crossing = inproc["per_tick"]["crossing"]
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print("\nsummary:")
    print(f"  tick -> fill (store) p50 {figures['fill_p50']:.2f} ms, p99 {figures['fill_p99']:.2f} ms; "
          f"-> client p50 {figures['client_p50']:.2f} ms, p99 {figures['client_p99']:.2f} ms; "
          f"goal p99 < {GOAL_FILL_P99_MS:.0f} ms: {verdict(figures['fill_p99'] < GOAL_FILL_P99_MS)} "
          f"(store), {verdict(figures['client_p99'] < GOAL_FILL_P99_MS)} (client)")
    print(f"  trigger job CPU per tick (in-process handle_ticks, {inproc['resting']:,} orders in the book): non-crossing median "
          f"{percentile(quiet, 0.5):.3f} ms, crossing ({args.cross}/tick) median {percentile(crossing, 0.5):.3f} ms; "
          f"whole server above idle: {figures['quiet_ms_per_tick']:.3f} ms per non-crossing tick, "
          f"{figures['crossing_ms_per_tick']:.3f} ms per crossing tick")
    print(f"  memory per resting order: book {inproc['bytes_per_order']:.0f} B (tracemalloc)"
          + (f", server RSS {rss_per_order:.0f} B" if rss_per_order is not None else ""))
    print(f"  push EXECUTED -> client p50 {figures['push_p50']:.2f} ms, p99 {figures['push_p99']:.2f} ms; "
          f"goal p99 < {GOAL_PUSH_P99_MS:.0f} ms: {verdict(figures['push_p99'] < GOAL_PUSH_P99_MS)}")
    print(f"  other processes (cores) by phase: "
          + ", ".join(f"{p} {v:.2f}" for p, v in figures["other_cores"].items()))


if __name__ == "__main__":
    main()
