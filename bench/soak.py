"""Soak: the embedded platform under steady load for a long time, sampled every
minute, to show that memory, open files and latencies stay flat.

    .venv/bin/python bench/soak.py                    # 30 minutes (plus ~1 min setup)
    .venv/bin/python bench/soak.py --minutes 2        # a smoke run
    .venv/bin/python bench/soak.py --rate 300 --subscribers 1000 --users 50

`mocktrade up` (embedded, fresh data dir, free loopback port) takes an
open-loop order load (bench/loadgen.py in a process of its own, `--rate`
orders/s, buys and sells of `--users` users, each request with its own
X-Idempotency-Key) while `--subscribers` WebSocket clients (Phoenix v2, each
joined to prices:SYMBOL round-robin, in this process) read every price push.
The load runs one minute at a time (a fresh loadgen per minute with that
minute's unique keys, so a minute boundary has a gap of about a second), and
after each minute it samples:

- resident memory (VmRSS) of `up` (HTTP, WebSocket, feed, ingestion), of
  each of its job processes (DATA_DIR/logs/<name>.pid: `execution` runs the
  execution and trigger jobs, `persistence` the persistence job and chDB),
  the jobs' total and the sum of all;
- chDB's own tracked memory in the job process (mocktrade_chdb_memory_bytes
  {kind="tracked"} from `up`'s /metrics, sampled there once a minute), so a
  growing job process tells chDB's share from the rest (Python, allocator);
- open file descriptors of each (/proc/PID/fd);
- order latency p50/p99 from the *scheduled* send (no coordinated omission);
- accept->executed p99 (ledger orderTimestamp -> executionTimestamp) of the
  minute's orders executed by the time of the sample;
- subscriber push p99 (feed timestamp -> received by the client).

At the end: the pipeline drained, every 202's orderId looked up in the
execution ledger (accepted vs final outcomes: nothing lost), `mocktrade
verify`, and the least-squares slope of each metric per hour over the
samples (the first minute left out of the fit: caches and pools fill then).
The table is markdown, to paste into docs/benchmarks.md.

Loopback only; bounded in time; the server is stopped at the end. Prints
figures; it never passes or fails on them (it exits 1 only if verify fails
or an accepted order has no outcome).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orders as order_bench  # noqa: E402
from common import (Platform, all_latencies, completed, machine, mocktrade_command,  # noqa: E402
                    percentile, proc_status, raw_request, run_loadgen, status_line)


# -- price subscribers ----------------------------------------------------------

@dataclass
class Subscribers:
    """Phoenix v2 clients reading every push; push latency per sampling period."""

    joined: int = 0
    failed: int = 0
    disconnected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> list[float]:
        taken, self.latencies_ms = self.latencies_ms, []
        return taken

    async def one(self, url: str, symbol: str) -> None:
        try:
            async with websockets.connect(url + "?vsn=2.0.0", open_timeout=60, ping_interval=None,
                                          max_queue=None) as ws:
                await ws.send(orjson.dumps(["1", "1", f"prices:{symbol}", "phx_join", {}]).decode())
                reader = asyncio.ensure_future(self._read(ws))
                stopper = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and not self.stop.is_set():
                    self.disconnected += 1
                for task in (reader, stopper):
                    task.cancel()
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
            self.failed += 1

    async def _read(self, ws) -> None:
        stamps: dict[str, float] = {}
        async for raw in ws:
            message = orjson.loads(raw)
            if message[3] == "price_update":
                stamp = message[4]["timestamp"]
                moment = stamps.get(stamp)
                if moment is None:
                    if len(stamps) > 10_000:
                        stamps.clear()
                    moment = stamps[stamp] = datetime.fromisoformat(stamp).timestamp()
                self.latencies_ms.append((time.time() - moment) * 1000)
            elif message[3] == "phx_reply" and message[4].get("status") == "ok":
                self.joined += 1


# -- the load, one minute at a time ---------------------------------------------

def minute_requests(platform: Platform, people, minute: int, count: int) -> list[list[str]]:
    """`count` orders of one minute: users in turn, each alternating buy and
    sell of one share, every request with a key of its own."""
    requests = []
    for k in range(count):
        _, token, symbol = people[k % len(people)]
        side = "BUY" if (k // len(people)) % 2 == 0 else "SELL"
        body = orjson.dumps({"symbol": symbol, "quantity": "1", "side": side})
        requests.append([side, raw_request("POST", platform.port, "/v1/orders", token, body,
                                           {"X-Idempotency-Key": f"soak-{minute}-{k}"})])
    return requests


def ledger_rows(platform: Platform, order_ids: list[str]) -> list[tuple[str, str, str, str]]:
    rows = []
    with closing(platform.portfolio_db()) as conn:
        for i in range(0, len(order_ids), 500):
            chunk = order_ids[i:i + 500]
            rows += conn.execute(
                "SELECT orderId, status, orderTimestamp, executionTimestamp FROM execution_ledger "
                f"WHERE orderId IN ({','.join('?' * len(chunk))})", chunk).fetchall()
    return rows


def accept_to_executed_ms(rows) -> list[float]:
    iso = order_bench.iso_seconds
    return [(iso(executed) - iso(ordered)) * 1000 for _, _, ordered, executed in rows]


# -- sampling ---------------------------------------------------------------------

def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_mb(pid: int) -> float:
    try:
        return proc_status(pid)["VmRSS"] / 1024
    except (OSError, KeyError):
        return float("nan")


def chdb_tracked_mb(platform: Platform) -> float:
    """chDB's tracked memory (every process that owns one), from `up`'s /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{platform.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("mocktrade_chdb_memory_bytes{") and 'kind="tracked"' in line]
    return sum(values) / 2**20 if values else float("nan")


NAN = float("nan")


def job_pids(platform: Platform) -> dict[str, int]:
    """`up`'s job processes by name, from their pid files (read again every
    minute: a job process that died is restarted under a new pid)."""
    return {path.stem: int(path.read_text())
            for path in sorted((platform.data_dir / "logs").glob("*.pid"))}


def columns(jobs: list[str]) -> list[tuple[str, str, str]]:
    """key, header, format of each figure; a memory and an fds column per job process."""
    return [
        ("minute", "min", "{:.0f}"),
        ("rate", "orders/s", "{:.0f}"),
        ("non202", "non-202", "{:.0f}"),
        ("rss_up", "RSS up MB", "{:.1f}"),
        *[(f"rss_{name}", f"RSS {name} MB", "{:.1f}") for name in jobs],
        ("rss_jobs", "RSS jobs MB", "{:.1f}"),
        ("rss_sum", "RSS sum MB", "{:.1f}"),
        ("chdb", "chDB tracked MB", "{:.1f}"),
        ("fds_up", "fds up", "{:.0f}"),
        *[(f"fds_{name}", f"fds {name}", "{:.0f}") for name in jobs],
    ] + COLUMNS_LATENCY


COLUMNS_LATENCY = [
    ("p50", "order p50 ms", "{:.2f}"),
    ("p99", "order p99 ms", "{:.2f}"),
    ("exec_p99", "accept->executed p99 ms", "{:.2f}"),
    ("push_p99", "push p99 ms", "{:.2f}"),
]


def slope_per_hour(samples: list[dict], key: str) -> float:
    """Least-squares slope of `key` against time, in units per hour."""
    points = [(s["t"] / 3600, s.get(key, NAN)) for s in samples
              if s.get(key, NAN) == s.get(key, NAN)]  # drop NaN
    if len(points) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var if var else float("nan")


def table(samples: list[dict], cols: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    for s in samples:
        lines.append("| " + " | ".join(f.format(s.get(k, NAN)) for k, _, f in cols) + " |")
    return "\n".join(lines)


def slopes(samples: list[dict], cols: list[tuple[str, str, str]]) -> str:
    fitted = samples[1:] if len(samples) > 2 else samples
    lines = ["| metric | slope per hour | first | last |", "|---|---|---|---|"]
    for key, header, fmt in cols[1:]:
        lines.append(f"| {header} | {slope_per_hour(fitted, key):+.3f} | "
                     f"{fmt.format(samples[0].get(key, NAN))} | "
                     f"{fmt.format(samples[-1].get(key, NAN))} |")
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------

async def run(args) -> int:
    from mocktrade.config import DEFAULT_SYMBOLS

    symbols = list(DEFAULT_SYMBOLS)
    print(f"soak on {machine()}; load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    print(f"{args.minutes} min at {args.rate:g} orders/s, {args.users} users, "
          f"{args.subscribers} subscribers", flush=True)
    with Platform(keep=args.keep) as platform:
        people = await asyncio.to_thread(order_bench.setup, platform, args.users)
        platform.start()
        platform.wait_for_prices(len(symbols))
        await asyncio.to_thread(order_bench.prime, platform, people, min(args.connections, 32))
        jobs = job_pids(platform)
        cols = columns(list(jobs))
        print(f"up pid {platform.pid}, job processes {jobs}; data dir {platform.data_dir}",
              flush=True)

        subs = Subscribers()
        tasks = [asyncio.create_task(subs.one(platform.ws_url, symbols[i % len(symbols)]))
                 for i in range(args.subscribers)]
        deadline = time.monotonic() + 60
        while subs.joined + subs.failed < args.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        print(f"{subs.joined} subscribers joined, {subs.failed} failed", flush=True)

        per_minute = int(args.rate * 60)
        accepted: list[str] = []
        samples: list[dict] = []
        started = time.monotonic()
        upcoming = asyncio.create_task(asyncio.to_thread(minute_requests, platform, people, 0,
                                                         per_minute))
        for minute in range(args.minutes):
            requests = await upcoming
            if minute + 1 < args.minutes:  # build the next minute's while this one runs
                upcoming = asyncio.create_task(asyncio.to_thread(
                    minute_requests, platform, people, minute + 1, per_minute))
            subs.take()
            result = await asyncio.to_thread(run_loadgen, {
                "port": platform.port, "requests": requests, "connections": args.connections,
                "mode": "open", "rate": args.rate, "duration": 60, "once": True,
                "capture": True})
            ids = [order_id for order_id, _, _ in result["captured"]]
            accepted += ids
            latencies = all_latencies(result)
            executed = await asyncio.to_thread(ledger_rows, platform, ids)
            jobs = job_pids(platform)
            sample = {
                "minute": minute + 1, "t": time.monotonic() - started,
                "rate": completed(result) / max(result["elapsed"], 1e-9),
                "non202": completed(result) - completed(result, "202") + result["errors"],
                "rss_up": rss_mb(platform.pid), "fds_up": open_files(platform.pid),
                "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                "exec_p99": percentile(accept_to_executed_ms(executed), 0.99),
                "push_p99": percentile(subs.take(), 0.99),
            }
            for name, pid in jobs.items():
                sample[f"rss_{name}"], sample[f"fds_{name}"] = rss_mb(pid), open_files(pid)
            sample["rss_jobs"] = sum(sample[f"rss_{name}"] for name in jobs)
            sample["rss_sum"] = sample["rss_up"] + sample["rss_jobs"]
            sample["chdb"] = await asyncio.to_thread(chdb_tracked_mb, platform)
            samples.append(sample)
            print(f"minute {minute + 1}: " + ", ".join(
                f"{h} {f.format(sample.get(k, NAN))}" for k, h, f in cols[1:])
                + f" [{status_line(result)}]", flush=True)

        subs.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        drained_orders, drain = await asyncio.to_thread(order_bench.wait_drained, platform, 300.0)
        rows = await asyncio.to_thread(ledger_rows, platform, accepted)
        outcomes: dict[str, int] = {}
        for _, status, _, _ in rows:
            outcomes[status] = outcomes.get(status, 0) + 1
        lost = len(set(accepted)) - len(rows)
        verify = await asyncio.to_thread(
            subprocess.run, [*mocktrade_command(), "verify", "--wait", "120"], env=platform.env,
            capture_output=True, text=True, timeout=600)

        print("\n## Soak samples (one row per minute)\n")
        print(table(samples, cols))
        print("\n## Slopes (least squares over minutes 2..N, per hour)\n")
        print(slopes(samples, cols))
        print(f"\naccepted (202): {len(accepted)}; final outcomes in the ledger: {len(rows)} "
              f"{outcomes}; accepted without an outcome: {lost}; drained {drain:.1f} s after "
              f"the load ({drained_orders} orders in the log)")
        print(f"subscribers: {subs.joined} joined, {subs.failed} failed to join, "
              f"{subs.disconnected} disconnected during the run")
        print(f"mocktrade verify: {'clean' if verify.returncode == 0 else 'FAILED'}")
        if verify.returncode != 0:
            print(verify.stdout[-3000:] + verify.stderr[-2000:])
        print(f"load at the end {open('/proc/loadavg').read().split()[:3]}")
        return 0 if verify.returncode == 0 and lost == 0 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30, help="length of the run (default 30)")
    parser.add_argument("--rate", type=float, default=300.0, help="orders/s (default 300)")
    parser.add_argument("--subscribers", type=int, default=1000,
                        help="WebSocket price subscribers (default 1,000)")
    parser.add_argument("--users", type=int, default=50, help="users sending orders (default 50)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections of the load generator (default 64)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.rate <= 0 or args.users < 1 or args.subscribers < 0:
        parser.error("--minutes, --rate and --users must be positive, --subscribers not negative")
    return args


def main() -> None:
    args = parse_args()
    try:
        import uvloop
        sys.exit(uvloop.run(run(args)))
    except ImportError:
        sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
