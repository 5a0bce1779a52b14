"""Resident memory of `mocktrade up`: idle, and under order load plus WebSocket
subscribers.

    .venv/bin/python bench/memory.py                     # about 1.5 minutes
    .venv/bin/python bench/memory.py --duration 60 --subscribers 200

Starts the platform as a subprocess (fresh data dir, free loopback port) and
reads VmRSS (resident now) and VmHWM (peak resident) from /proc/PID/status:

1. right after /readyz answers 200, and idle `--idle` seconds later;
2. with `--subscribers` WebSocket clients (Phoenix v2 protocol, each joined
   to prices:SYMBOL round-robin over the symbols, reading every push);
3. while the load generator (its own process) sends `--rate` orders/s
   (open loop, as bench/orders.py (b)) for `--duration` seconds, sampling
   every 0.5 s; then after the pipeline has drained.

At the end, where the resident memory sits: the largest mappings from
/proc/PID/smaps (shared libraries such as chDB's, the heap, anonymous).

Loopback only; bounded in time; the server is stopped at the end. Prints
figures; it never passes or fails on memory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orders as order_bench  # noqa: E402
from common import (CpuMeter, Platform, all_latencies, completed, machine, proc_status,  # noqa: E402
                    run_loadgen, status_line, summary_ms)


def mb(kb: int) -> str:
    return f"{kb / 1024:7.1f} MB"


def top_mappings(pid: int, count: int = 8) -> list[tuple[str, int]]:
    """Resident kB per mapping name (file path, [heap], [anon], ...), largest first."""
    totals: dict[str, int] = defaultdict(int)
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if len(first) >= 5 and "-" in first[0] and not first[0].endswith(":"):
            name = first[5] if len(first) == 6 else "[anon]"
            if "/" in name:
                name = name.rsplit("/", 1)[1]
        elif line.startswith("Rss:"):
            totals[name] += int(line.split()[1])
    return sorted(totals.items(), key=lambda kv: -kv[1])[:count]


class Subscribers:
    def __init__(self) -> None:
        self.joined = 0
        self.failed = 0
        self.pushes = 0
        self.stop = asyncio.Event()

    async def one(self, url: str, symbol: str) -> None:
        try:
            async with websockets.connect(url + "?vsn=2.0.0", open_timeout=30, ping_interval=None,
                                          max_queue=None) as ws:
                await ws.send(orjson.dumps(["1", "1", f"prices:{symbol}", "phx_join", {}]).decode())
                reader = asyncio.ensure_future(self._read(ws))
                stopper = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (reader, stopper):
                    task.cancel()
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
            self.failed += 1

    async def _read(self, ws) -> None:
        async for raw in ws:
            message = orjson.loads(raw)
            if message[3] == "phx_reply":
                if message[4].get("status") == "ok":
                    self.joined += 1
                else:
                    self.failed += 1
            elif message[3] == "price_update":
                self.pushes += 1


async def run(args) -> None:
    from mocktrade.config import DEFAULT_SYMBOLS

    symbols = list(DEFAULT_SYMBOLS)
    print(f"memory benchmark on {machine()}; load {open('/proc/loadavg').read().split()[:3]}")
    with Platform(keep=args.keep) as platform:
        people = await asyncio.to_thread(order_bench.setup, platform, args.users)
        platform.start()
        pid = platform.pid
        rows = [("ready (readyz 200)", proc_status(pid))]
        platform.wait_for_prices(len(symbols))
        await asyncio.sleep(args.idle)
        rows.append((f"idle {args.idle:.0f} s later", proc_status(pid)))
        print(f"mocktrade up pid {pid}; {len(people)} users", flush=True)

        subs = Subscribers()
        tasks = [asyncio.create_task(subs.one(platform.ws_url, symbols[i % len(symbols)]))
                 for i in range(args.subscribers)]
        deadline = time.monotonic() + 30
        while subs.joined + subs.failed < args.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        rows.append((f"{subs.joined} WebSocket subscribers joined", proc_status(pid)))

        await asyncio.to_thread(order_bench.prime, platform, people, 32)
        rows.append(("after priming orders", proc_status(pid)))
        requests = order_bench.trading_requests(platform, people, "1")
        samples: list[dict[str, int]] = []
        pushes_before = subs.pushes
        meter = CpuMeter(pid)
        load = asyncio.create_task(asyncio.to_thread(run_loadgen, {
            "port": platform.port, "requests": requests, "connections": 64, "mode": "open",
            "rate": args.rate, "warmup": 0.0, "duration": args.duration}))
        while not load.done():
            samples.append(proc_status(pid))
            await asyncio.sleep(0.5)
        result = await load
        cpu = meter.stop(result["client_cpu"])
        pushes = subs.pushes - pushes_before
        rows.append((f"end of {args.duration:.0f} s at {args.rate:,.0f} orders/s", proc_status(pid)))
        await asyncio.to_thread(order_bench.wait_drained, platform)
        await asyncio.sleep(args.idle)
        rows.append((f"drained, idle {args.idle:.0f} s", proc_status(pid)))
        mappings = top_mappings(pid)
        subs.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        peak_sample = max(samples, key=lambda s: s["VmRSS"]) if samples else {"VmRSS": 0}

    print(f"\n{'moment':44s} {'VmRSS':>10s} {'VmHWM':>10s}  threads")
    for label, status in rows:
        print(f"{label:44s} {mb(status['VmRSS'])} {mb(status['VmHWM'])}  {status['Threads']}")
    print(f"{'peak VmRSS sampled during the load':44s} {mb(peak_sample['VmRSS'])}")
    print(f"\norders during the load: {status_line(result)}; latency {summary_ms(all_latencies(result))}")
    print(f"WebSocket: {subs.joined} joined, {subs.failed} failed, {pushes} pushes received during "
          f"the load ({pushes / args.duration:,.0f}/s)")
    print(CpuMeter.line(cpu))
    print("\nresident memory by mapping at the end (largest first):")
    for name, kb in mappings:
        print(f"  {mb(kb)}  {name}")
    accepted = completed(result, "202")
    print(f"\nsummary: idle {rows[1][1]['VmRSS'] / 1024:.0f} MB; under {args.rate:,.0f} orders/s + "
          f"{subs.joined} subscribers: peak {max(peak_sample['VmRSS'], rows[-2][1]['VmRSS']) / 1024:.0f} MB "
          f"resident, VmHWM {rows[-1][1]['VmHWM'] / 1024:.0f} MB; {accepted} orders accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="orders/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of order load")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to wait when idle")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
