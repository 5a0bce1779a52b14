"""Price fan-out benchmark: feed -> ingestion -> log -> market data -> WebSocket clients.

Starts the price path in a subprocess (by default a minimal app of the feed,
ingestion and market-data service on the embedded adapters; or any command
given with --server-cmd, such as `mocktrade up`), connects N Phoenix
subscribers from this process, each joined to one symbol round-robin, runs
the feed at a fixed rate for a bounded time and prints feed-to-client
latency (tick feed timestamp vs. receive time) and delivery figures.

    python bench/fanout.py                                  # 1000 subs, 200 ticks/s, 20 s
    python bench/fanout.py --subscribers 200 --duration 5
    python bench/fanout.py --platform                       # the whole platform (mocktrade up)
    python bench/fanout.py --server-cmd "mocktrade up"      # any command

The server command gets its settings from MOCKTRADE_* variables (host, port,
data dir, symbols, feed rate, client buffer). Loopback only; it always stops
by itself. A benchmark prints figures; it never passes or fails on time.

On a machine other work keeps busy, the printed CPU-pressure share says so;
`nice` does not help there (the kernel groups tasks per session), but
`chrt -f 5 python bench/fanout.py` runs server and clients ahead of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import websockets

from common import HOST, cpu_seconds, free_port, machine, mocktrade_command, percentile

STATS_PATH = "/bench/stats"


# -- the server side (runs in the subprocess) ----------------------------------

def serve(ws_impl: str, deflate: bool) -> None:
    """The price path alone, on the embedded adapters, configured from MOCKTRADE_*."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from mocktrade import logs
    from mocktrade.adapters.embedded.eventlog import SqliteEventLog
    from mocktrade.adapters.embedded.prices import EmbeddedPriceCache
    from mocktrade.config import Settings
    from mocktrade.feed.server import FEED_PATH, feed_routes
    from mocktrade.feed.simulator import PriceSimulator
    from mocktrade.services.ingestion import IngestionService
    from mocktrade.services.marketdata import MarketDataService

    settings = Settings.from_env()
    logs.configure("WARNING")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    event_log = SqliteEventLog(settings.data_dir / "eventlog.sqlite3", settings.log_partitions)
    prices = EmbeddedPriceCache(settings.data_dir / "prices.sqlite3")
    simulator = PriceSimulator(settings.symbols, settings.feed_ticks_per_second,
                               settings.feed_volatility, settings.feed_seed)
    marketdata = MarketDataService(event_log, prices, settings.symbols, settings.ws_client_buffer)
    ingestion = IngestionService(f"ws://{settings.host}:{settings.port}{FEED_PATH}", event_log)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        tasks = [asyncio.create_task(simulator.run())]
        await marketdata.start()
        tasks.append(asyncio.create_task(ingestion.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await marketdata.stop()
            await prices.close()
            await event_log.close()

    async def stats(_request):
        return JSONResponse({"marketdata": marketdata.stats(), "ingestion": ingestion.stats()})

    app = Starlette(routes=[Route(STATS_PATH, stats), *feed_routes(simulator), *marketdata.routes()],
                    lifespan=lifespan)
    uvicorn.run(app, host=settings.host, port=settings.port, ws=ws_impl, loop="uvloop",
                http="httptools", log_level="warning", access_log=False,
                ws_per_message_deflate=deflate, timeout_graceful_shutdown=2)


# -- the client side -----------------------------------------------------------

@dataclass
class Window:
    start: float = float("inf")
    end: float = float("inf")

    def holds(self, moment: float) -> bool:
        return self.start <= moment < self.end


@dataclass
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)  # per subscriber, in the window
    seen: dict[str, set[str]] = field(default_factory=dict)  # symbol -> tick timestamps
    joined: int = 0
    join_failures: int = 0
    dropped: int = 0  # closed by the server with 1013
    closed_otherwise: int = 0


_feed_times: dict[str, float] = {}


def feed_time(stamp: str) -> float:
    # Fifty subscribers see each tick; parse its timestamp once.
    moment = _feed_times.get(stamp)
    if moment is None:
        if len(_feed_times) > 100_000:
            _feed_times.clear()
        moment = _feed_times[stamp] = datetime.fromisoformat(stamp).timestamp()
    return moment


def join_frame(symbol: str, v2: bool) -> str:
    topic = f"prices:{symbol}"
    if v2:
        return orjson.dumps(["1", "1", topic, "phx_join", {}]).decode()
    return orjson.dumps({"topic": topic, "event": "phx_join", "payload": {}, "ref": "1",
                         "join_ref": "1"}).decode()


def join_status(message: object) -> str | None:
    if isinstance(message, list) and message[3] == "phx_reply":
        return message[4]["status"]
    if isinstance(message, dict) and message.get("event") == "phx_reply":
        return message["payload"]["status"]
    return None


def update_payload(message: object) -> dict | None:
    if isinstance(message, list):
        return message[4] if message[3] == "price_update" else None
    if isinstance(message, dict) and message.get("event") == "price_update":
        return message["payload"]
    return None


async def subscriber(url: str, symbol: str, v2: bool, compression: str | None,
                     window: Window, stop_at: list[float], results: Results) -> None:
    received = 0
    seen = results.seen.setdefault(symbol, set())
    try:
        async with websockets.connect(url + ("?vsn=2.0.0" if v2 else "?vsn=1.0.0"),
                                      compression=compression, open_timeout=60,
                                      ping_interval=None, max_queue=None) as ws:
            await ws.send(join_frame(symbol, v2))
            async for raw in ws:
                message = orjson.loads(raw)
                payload = update_payload(message)
                if payload is None:
                    if join_status(message) == "ok":
                        results.joined += 1
                    elif join_status(message) is not None:
                        results.join_failures += 1
                    continue
                now = time.time()
                stamp = payload["timestamp"]
                moment = feed_time(stamp)
                if window.holds(moment):
                    received += 1
                    seen.add(stamp)
                    results.latencies_ms.append((now - moment) * 1000)
                if now >= stop_at[0]:
                    break
    except websockets.ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == 1013:
            results.dropped += 1
        else:
            results.closed_otherwise += 1
    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
        results.join_failures += 1
    finally:
        results.received.append(received)


def cpu_pressure() -> float | None:
    """Microseconds some runnable task waited for a CPU (Linux PSI); None where absent."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(line.rsplit("total=", 1)[1])


def server_stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{STATS_PATH}", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


async def wait_until_serving(url: str, symbol: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError, asyncio.TimeoutError, websockets.WebSocketException):
            async with websockets.connect(url, open_timeout=2) as ws:
                await ws.send(join_frame(symbol, False))
                while True:
                    payload = update_payload(orjson.loads(await asyncio.wait_for(ws.recv(), 2)))
                    if payload is not None:
                        return  # prices are flowing end to end
        await asyncio.sleep(0.2)
    raise SystemExit(f"server not serving prices after {timeout}s")


def start_server(args: argparse.Namespace, port: int, data_dir: str) -> subprocess.Popen:
    from mocktrade.config import DEFAULT_SYMBOLS

    env = {**os.environ, "MOCKTRADE_HOST": HOST, "MOCKTRADE_PORT": str(port),
           "MOCKTRADE_DATA_DIR": data_dir, "MOCKTRADE_FEED_TICKS_PER_SECOND": str(args.rate),
           "MOCKTRADE_SYMBOLS": ",".join(DEFAULT_SYMBOLS[:args.symbols]),
           "MOCKTRADE_WS_CLIENT_BUFFER": str(args.client_buffer), "MOCKTRADE_FEED_SEED": "1",
           "MOCKTRADE_LOG_LEVEL": "WARNING"}
    if args.platform:
        command = [*mocktrade_command(), "up"]
    elif args.server_cmd:
        command = shlex.split(args.server_cmd)
    else:
        command = [sys.executable, __file__, "--serve", "--ws", args.ws,
                   *(["--server-deflate"] if args.server_deflate else [])]
    quiet = None if args.verbose else subprocess.DEVNULL
    return subprocess.Popen(command, env=env, stdout=quiet, stderr=quiet, start_new_session=True)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def connect_all(args: argparse.Namespace, url: str, symbols: list[str], window: Window,
                      stop_at: list[float], results: Results) -> list[asyncio.Task]:
    tasks = []
    compression = None if args.compression == "none" else "deflate"
    v2_every = round(1 / args.v2_fraction) if args.v2_fraction > 0 else 0
    for i in range(args.subscribers):
        v2 = bool(v2_every) and i % v2_every == 0
        tasks.append(asyncio.create_task(subscriber(
            url, symbols[i % len(symbols)], v2, compression, window, stop_at, results)))
        if i % 50 == 49:  # pace connects so the listen backlog never overflows
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 60
    while results.joined + results.join_failures < args.subscribers and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return tasks


async def run(args: argparse.Namespace) -> None:
    from mocktrade.config import DEFAULT_SYMBOLS

    symbols = list(DEFAULT_SYMBOLS[:args.symbols])
    port = args.port or free_port()
    url = f"ws://{HOST}:{port}/v1/marketdata"
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as data_dir:
        process = start_server(args, port, data_dir)
        try:
            await wait_until_serving(url, symbols[0], process, 60)
            results, window, stop_at = Results(), Window(), [float("inf")]
            tasks = await connect_all(args, url, symbols, window, stop_at, results)
            print(f"joined {results.joined}/{args.subscribers} subscribers "
                  f"({results.join_failures} failed); warming up {args.warmup}s", flush=True)
            # The connections are long-lived: keep the collector from walking
            # them, so this process's pauses do not show up as server latency.
            gc.freeze()
            await asyncio.sleep(args.warmup)
            before = server_stats(port)
            cpu_server, cpu_client = cpu_seconds(process.pid), time.process_time()
            stalled = cpu_pressure()
            window.start = time.time()
            window.end = window.start + args.duration
            await asyncio.sleep(args.duration)
            cpu_server = cpu_seconds(process.pid) - cpu_server
            cpu_client = time.process_time() - cpu_client
            if stalled is not None:
                stalled = (cpu_pressure() - stalled) / 1e6
            stop_at[0] = window.end + args.grace
            await asyncio.sleep(args.grace)
            after = server_stats(port)
            await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop_server(process)
    report(args, symbols, results, cpu_server, cpu_client, stalled, before, after)


def report(args, symbols, results: Results, cpu_server: float, cpu_client: float,
           stalled: float | None, before: dict | None, after: dict | None) -> None:
    expected = sum(len(results.seen.get(symbols[i % len(symbols)], ())) for i in range(args.subscribers))
    received = sum(results.received)
    nominal = args.rate * args.duration * args.subscribers / len(symbols)
    lat = results.latencies_ms
    if args.platform or args.server_cmd:
        server = "mocktrade up" if args.platform else args.server_cmd
    else:
        server = f"price path, uvicorn ws={args.ws}, server deflate={'on' if args.server_deflate else 'off'}"
    print(f"\nfan-out: {args.subscribers} subscribers, {len(symbols)} symbols, {args.rate} ticks/s, "
          f"{args.duration}s window; client compression={args.compression}; {server}\n"
          f"machine: {machine()}")
    print(f"latency feed->client ms: p50 {percentile(lat, 0.50):.2f}  p90 {percentile(lat, 0.90):.2f}  "
          f"p99 {percentile(lat, 0.99):.2f}  p99.9 {percentile(lat, 0.999):.2f}  max {max(lat, default=float('nan')):.2f}"
          + (f"  mean {statistics.fmean(lat):.2f}" if lat else ""))
    # Expected: every update that some subscriber of the same symbol received,
    # so a loss at one client shows; nominal is what the feed rate promises.
    print(f"messages received {received} / expected {expected} "
          f"({100 * received / expected if expected else 0:.2f}%); nominal {nominal:.0f}")
    print(f"slow clients dropped (1013): {results.dropped}; other closes: {results.closed_otherwise}; "
          f"join failures: {results.join_failures}")
    print(f"cpu over the window: server {100 * cpu_server / args.duration:.0f}% "
          f"client {100 * cpu_client / args.duration:.0f}% (of one core)"
          + ("" if stalled is None else
             f"; some task waited for a CPU {100 * stalled / args.duration:.0f}% of the time "
             "(high means a busy machine: latency figures are then not the code's)"))
    if before and after:
        md0, md1 = before["marketdata"], after["marketdata"]
        print(f"server: pushes {md1['pushes'] - md0['pushes']}, slow clients dropped "
              f"{md1['slowClientsDropped']}, ticks consumed {md1['ticksConsumed'] - md0['ticksConsumed']} "
              f"(conflated {md1['ticksConflated'] - md0['ticksConflated']}), "
              f"ingestion {after['ingestion']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20, help="first N of the default symbols")
    parser.add_argument("--rate", type=float, default=200.0, help="feed ticks per second, all symbols")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=1.0, help="seconds to wait for in-flight ticks")
    parser.add_argument("--client-buffer", type=int, default=256, help="server's per-client queue")
    parser.add_argument("--v2-fraction", type=float, default=0.5, help="share of v2 (array) clients")
    parser.add_argument("--compression", choices=("none", "deflate"), default="none",
                        help="what clients ask for (browsers ask for deflate)")
    parser.add_argument("--ws", default="websockets-sansio",
                        help="uvicorn WebSocket implementation of the built-in server")
    parser.add_argument("--server-deflate", action="store_true",
                        help="let the built-in server accept permessage-deflate")
    parser.add_argument("--server-cmd", help="start this instead, e.g. 'mocktrade up'")
    parser.add_argument("--platform", action="store_true",
                        help="start the whole platform (`mocktrade up`) instead")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show the server's output")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribers < 1 or args.symbols < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("subscribers, symbols, rate and duration must be positive")
    return args


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args.ws, args.server_deflate)
        return
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
