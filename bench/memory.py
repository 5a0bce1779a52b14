"""Resident memory of `mocktrade up`: idle, and under order load plus WebSocket
subscribers; or (--distributed) of each process of the distributed deployment, idle.

    .venv/bin/python bench/memory.py                     # about 1.5 minutes
    .venv/bin/python bench/memory.py --duration 60 --subscribers 200
    .venv/bin/python bench/memory.py --distributed       # about 1.5 minutes
    MOCKTRADE_JOB_ENGINE=flink .venv/bin/python bench/memory.py --distributed   # jobs on Flink

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

--distributed: `mocktrade stack up` on free ports (its own stack dir), then
`mocktrade up --distributed --stack-dir DIR` on a free block of ports; once
every process is ready and the feed has priced every symbol, `--idle`
seconds later, per process (each mocktrade process from DATA_DIR/logs/*.pid,
the launcher itself, each engine from its stack pid file, and any child
process of those, such as a Flink job's JVM): RSS, PSS and USS from
/proc/PID/smaps_rollup. PSS charges each shared page to its sharers in
proportion, so the PSS column adds up to what the deployment costs; USS is
what stopping that one process would free. Engines and platform are stopped
at the end.

Loopback only; bounded in time; the server is stopped at the end. Prints
figures; it never passes or fails on memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orders as order_bench  # noqa: E402
from common import (HOST, CpuMeter, Platform, all_latencies, completed, free_port,  # noqa: E402
                    machine, mocktrade_command, proc_status, run_loadgen, status_line, summary_ms)


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


# -- --distributed: each process of `up --distributed`, idle -----------------------

STACK_PORT_KEYS = ("kafka", "kafka.controller", "redis", "dynamodb", "elasticsearch",
                   "elasticsearch.transport")
ENGINES = ("kafka", "redis", "dynamodb", "elasticsearch")


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB: Rss, Pss and Uss (private clean + private dirty) of one process."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name] = int(parts[0])
    return {"Rss": fields.get("Rss", 0), "Pss": fields.get("Pss", 0),
            "Uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def children_of(pid: int) -> list[int]:
    """Every descendant (a Flink job's JVM and Python workers, a launcher's children)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            queue += kids
    return found


def command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    if "java" in argv[0].decode(errors="replace"):
        main = next((a.decode() for a in argv[1:] if a and not a.startswith(b"-") and b"." in a
                     and b"/" not in a), "java")
        return "java " + main.rsplit(".", 1)[-1]
    return text[:60]


def pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(orjson.loads(text)["pid"]) if text.startswith("{") else int(text.split()[0])
    except (OSError, ValueError, KeyError):
        return None


def free_block(size: int) -> int:
    """A base port P with P .. P+size-1 free on the loopback."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 40000)
        try:
            for offset in range(size):
                with socket.socket() as s:
                    s.bind((HOST, base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no free block of {size} ports")


def wait_ready(port: int, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def distributed_rows(launcher: int, data_dir: Path, stack_dir: Path) -> list[tuple[str, int, dict]]:
    """(name, pid, smaps figures) of every process of the deployment."""
    named: dict[int, str] = {launcher: "launcher (up --distributed)"}
    for path in sorted((data_dir / "logs").glob("*.pid")):
        pid = pid_file(path)
        if pid is not None:
            named.setdefault(pid, path.stem)
    for engine in ENGINES:
        pid = pid_file(stack_dir / engine / f"{engine}.pid")
        if pid is not None:
            named.setdefault(pid, f"engine: {engine}")
    for pid, name in list(named.items()):
        for child in children_of(pid):
            named.setdefault(child, f"{name} > {command_name(child)}")
    rows = []
    for pid, name in named.items():
        try:
            rows.append((name, pid, smaps_rollup(pid)))
        except OSError:
            pass  # ended meanwhile
    return rows


def run_distributed(args) -> None:
    from mocktrade.config import DEFAULT_SYMBOLS

    root = Path(tempfile.mkdtemp(prefix="mocktrade-memory-"))
    stack_dir, data_dir = root / "stack", root / "data"
    base = free_block(11)  # the layout uses P+0..5 and P+10
    ports = [f"{key}={free_port()}" for key in STACK_PORT_KEYS]
    env = {**os.environ, "MOCKTRADE_DATA_DIR": str(data_dir), "MOCKTRADE_HOST": HOST,
           "MOCKTRADE_LOG_LEVEL": "WARNING"}
    engine = env.get("MOCKTRADE_JOB_ENGINE", "consumer groups")
    print(f"memory, distributed, idle on {machine()}; load {open('/proc/loadavg').read().split()[:3]}; "
          f"jobs: {engine}", flush=True)
    stack = [*mocktrade_command(), "stack"]
    launcher = None
    try:
        subprocess.run([*stack, "up", "--dir", str(stack_dir), *(a for p in ports for a in ("--port", p))],
                       env=env, check=True, capture_output=True, timeout=600)
        command = [*mocktrade_command(), "up", "--distributed", "--stack-dir", str(stack_dir),
                   "--keep-stack", "--port", str(base)]
        log = open(root / "up.log", "ab")
        launcher = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        log.close()
        started = time.monotonic()
        for offset in (0, 1, 2, 3, 4, 5, 10):  # gateway, marketdata, feed, ingestion, jobs
            if not wait_ready(base + offset, 400):
                raise RuntimeError(f"port {base + offset} not ready; see {root / 'up.log'}")
        platform = Platform(data_dir=data_dir, env=env)
        platform.port, platform.base = base, f"http://{HOST}:{base}"
        platform.wait_for_prices(len(DEFAULT_SYMBOLS), timeout=120)
        print(f"ready after {time.monotonic() - started:.0f} s; idle {args.idle:.0f} s", flush=True)
        time.sleep(args.idle)
        rows = distributed_rows(launcher.pid, data_dir, stack_dir)
    finally:
        if launcher is not None and launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
        subprocess.run([*stack, "down", "--dir", str(stack_dir)], env=env, capture_output=True, timeout=120)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'process':52s} {'pid':>7s} {'RSS':>10s} {'PSS':>10s} {'USS':>10s}")
    total = {"Rss": 0, "Pss": 0, "Uss": 0}
    for name, pid, figures in rows:
        print(f"{name:52s} {pid:7d} {mb(figures['Rss'])} {mb(figures['Pss'])} {mb(figures['Uss'])}")
        for key in total:
            total[key] += figures[key]
    print(f"{'total (RSS double-counts shared pages; PSS does not)':52s} {'':7s} {mb(total['Rss'])} "
          f"{mb(total['Pss'])} {mb(total['Uss'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="orders/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of order load")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to wait when idle")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    parser.add_argument("--distributed", action="store_true",
                        help="each process of `up --distributed` (and its engines), idle")
    args = parser.parse_args()
    if args.distributed:
        run_distributed(args)
        return
    try:
        import uvloop
        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
