"""Price fan-out subscribers against a running server, driven over stdin: the
load that bench/orders.py --with-fanout runs beside its orders.

    python bench/fanout_clients.py ws://127.0.0.1:PORT/v1/marketdata --subscribers 1000

Connects the subscribers (bench/fanout.py's Phoenix clients, each joined to
one symbol round-robin), prints "joined N", then measures feed->client
latency of every update whose feed timestamp falls between a "start" and a
"stop" line read from stdin, and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile  # noqa: E402
from fanout import Results, Window, connect_all, parse_args as fanout_args  # noqa: E402


async def line() -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


async def run(url: str, subscribers: int, symbols: int, grace: float) -> dict:
    from mocktrade.config import DEFAULT_SYMBOLS

    names = list(DEFAULT_SYMBOLS[:symbols])
    args = fanout_args(["--subscribers", str(subscribers), "--symbols", str(symbols)])
    results, window, stop_at = Results(), Window(), [float("inf")]
    tasks = await connect_all(args, url, names, window, stop_at, results)
    gc.freeze()  # long-lived connections: keep the collector's pauses out of the figures
    print(f"joined {results.joined}", flush=True)
    if await line() != "start":
        raise SystemExit("expected 'start'")
    window.start = time.time()
    if await line() != "stop":
        raise SystemExit("expected 'stop'")
    window.end = time.time()
    stop_at[0] = window.end + grace
    await asyncio.sleep(grace)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = results.latencies_ms
    return {"subscribers": subscribers, "joined": results.joined,
            "join_failures": results.join_failures, "dropped": results.dropped,
            "closed": results.closed_otherwise, "messages": len(lat),
            "seconds": window.end - window.start, "p50": percentile(lat, 0.5),
            "p99": percentile(lat, 0.99), "p999": percentile(lat, 0.999),
            "max": max(lat, default=float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--grace", type=float, default=3.0,
                        help="seconds to wait for ticks of the window still in flight")
    args = parser.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    figures = asyncio.run(run(args.url, args.subscribers, args.symbols, args.grace))
    print(json.dumps(figures), flush=True)  # NaN (no message in the window) stays NaN


if __name__ == "__main__":
    main()
