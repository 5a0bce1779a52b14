"""Price ingestion: a simulated exchange feed at a fixed rate -> the ingestion
service -> the log (embedded SQLite or Kafka), with per-symbol order checked.

    .venv/bin/python bench/ingestion.py                      # embedded, 5,000 ticks/s, 20 s: about 35 s
    .venv/bin/python bench/ingestion.py --backend kafka      # starts a Kafka broker and stops it: about 1.5 minutes
    .venv/bin/python bench/ingestion.py --backend kafka --bootstrap 127.0.0.1:9092   # a running broker
    .venv/bin/python bench/ingestion.py --rate 10000 --duration 10

Three processes, as in a deployment: the feed (the platform's simulator and
WebSocket feed server under uvicorn, at --rate ticks/s over --symbols
symbols), the ingestion service (services/ingestion.py over the chosen log,
one publish_many per batch of the ticks that waited) and this one, which
reads market_data as a consumer group from the start and reports, over the
measured window:

- ticks/s written to the log (ticks whose feed time falls in the window,
  divided by the window) against the feed's rate;
- lag feed -> readable: the time this reader has a tick minus its
  feedTimestamp (the whole path: feed frame, parse, publish, log, poll);
- order per symbol: in log order, every symbol's feed timestamps never go
  back (the key is the symbol, so a symbol lives in one partition);
- the ingestion service's own counts (published, malformed, reconnects: a
  reconnect means the feed dropped it for falling behind; dropped: ticks it
  let go because the log stayed behind longer than its buffer holds).

With Kafka the window opens only once a warm-up record is acknowledged (see
wait_for_kafka_producer).

--backend kafka without --bootstrap starts a broker with `mocktrade stack up
--engines kafka` in a temp dir on free ports, and stops it at the end.
Loopback only; bounded in time. Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HOST, cpu_seconds, free_port, machine, mocktrade_command, percentile, summary_ms  # noqa: E402

GOAL_RATE = 5000.0  # ticks/s, on Kafka and embedded


def open_log(args):
    if args.backend == "kafka":
        from mocktrade.adapters.kafka import KafkaEventLog
        return KafkaEventLog(args.bootstrap, topic_prefix=args.prefix, partitions=args.partitions)
    from mocktrade.adapters.embedded.eventlog import SqliteEventLog
    return SqliteEventLog(Path(args.data_dir) / "eventlog.sqlite3", partitions=args.partitions)


# -- the feed and the ingestion service (each in a subprocess) -----------------

def serve_feed(args) -> None:
    import contextlib

    import uvicorn
    from starlette.applications import Starlette

    from mocktrade.config import DEFAULT_SYMBOLS
    from mocktrade.feed.server import feed_routes
    from mocktrade.feed.simulator import PriceSimulator

    simulator = PriceSimulator(list(DEFAULT_SYMBOLS[:args.symbols]), args.rate, 0.2, seed=1)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(simulator.run())
        yield
        task.cancel()

    app = Starlette(routes=feed_routes(simulator), lifespan=lifespan)
    uvicorn.run(app, host=HOST, port=args.feed_port, loop="uvloop", http="httptools",
                ws="websockets-sansio", log_level="warning", ws_per_message_deflate=False)


async def ingest(args) -> None:
    """Ingest until SIGTERM, then print the service's counts. The counts are
    printed from the signal handler: a service with a backlog never yields
    its loop (every recv() is ready), so a timer would not fire."""
    import signal

    from mocktrade.services.ingestion import IngestionService

    log = open_log(args)
    service = IngestionService(f"ws://{HOST}:{args.feed_port}/feed/v1/ticks", log)
    started = time.process_time()

    def report(*_) -> None:
        print(json.dumps({**service.stats(), "cpu": time.process_time() - started}), flush=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, report)
    await service.run()


# -- the reader (this process) -------------------------------------------------

async def read(args) -> dict:
    """The window opens --warmup seconds after the first tick is readable (a
    fresh Kafka broker takes a while to give the producer its id)."""
    from mocktrade.domain.events import TOPIC_MARKET_DATA

    log = open_log(args)
    consumer = log.consumer(TOPIC_MARKET_DATA, f"bench-{uuid.uuid4().hex[:8]}", reset="earliest")
    last: dict[str, float] = {}
    lag_ms: list[float] = []
    in_window = backwards = total = 0
    window, until = (float("inf"), float("inf")), time.time() + 120
    try:
        while time.time() < until:
            records = await consumer.poll(5000, 0.2)
            now = time.time()
            if records and window[0] == float("inf"):
                window = (now + args.warmup, now + args.warmup + args.duration)
                until = window[1] + args.grace
            for record in records:
                payload = orjson.loads(record.value)["payload"]
                fed = datetime.fromisoformat(payload["feedTimestamp"]).timestamp()
                symbol = payload["symbol"]
                if fed < last.get(symbol, 0.0):
                    backwards += 1
                last[symbol] = fed
                total += 1
                if window[0] <= fed < window[1]:
                    in_window += 1
                    lag_ms.append((now - fed) * 1000)
    finally:
        await consumer.close()
        await log.close()
    if window[0] == float("inf"):
        raise SystemExit("no tick reached the log in 120 s")
    return {"in_window": in_window, "backwards": backwards, "total": total, "lag_ms": lag_ms,
            "symbols": len(last)}


async def wait_for_kafka_producer(args, timeout: float = 120.0) -> float:
    """Publish a warm-up record (to a topic of its own) until one is
    acknowledged; returns the seconds it took. Every producer here is
    idempotent and a fresh broker hands out producer ids only a while after
    it serves metadata; a window opened before that measures the broker's
    start, not ingestion. (`mocktrade stack up` waits for this too; this
    covers a --bootstrap broker that has just started.)"""
    from mocktrade.ports import DependencyUnavailable

    log = open_log(args)
    started = time.monotonic()
    try:
        while True:
            try:
                await log.publish("bench-warmup", "warmup", b"")
                return time.monotonic() - started
            except DependencyUnavailable as exc:
                if time.monotonic() - started > timeout:
                    raise SystemExit(f"Kafka took no record in {timeout:.0f} s: {exc}") from exc
                await asyncio.sleep(0.5)
    finally:
        await log.close()


def start_kafka(args) -> str:
    stack_dir = tempfile.mkdtemp(prefix="bench-ingestion-kafka-")
    args.stack_dir = stack_dir
    ports = ["--port", f"kafka={free_port()}", "--port", f"kafka.controller={free_port()}"]
    subprocess.run([*mocktrade_command(), "stack", "up", "--dir", stack_dir, "--engines", "kafka",
                    *ports], check=True, stdout=subprocess.DEVNULL)
    env = subprocess.run([*mocktrade_command(), "stack", "env", "--dir", stack_dir],
                         check=True, capture_output=True, text=True).stdout
    for line in env.splitlines():
        line = line.removeprefix("export ")
        if line.startswith("MOCKTRADE_KAFKA_BOOTSTRAP="):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise SystemExit(f"no Kafka bootstrap in the stack's env:\n{env}")


def stop_kafka(args) -> None:
    subprocess.run([*mocktrade_command(), "stack", "down", "--dir", args.stack_dir],
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(args.stack_dir, ignore_errors=True)


def run(args) -> None:
    me = [sys.executable, __file__, "--backend", args.backend, "--rate", str(args.rate),
          "--symbols", str(args.symbols), "--feed-port", str(args.feed_port),
          "--partitions", str(args.partitions), "--prefix", args.prefix,
          "--data-dir", args.data_dir, "--bootstrap", args.bootstrap or ""]
    if args.backend == "kafka":
        waited = asyncio.run(wait_for_kafka_producer(args))
        print(f"Kafka acknowledged a warm-up record after {waited:.1f} s", flush=True)
    feed = subprocess.Popen([*me, "--role", "feed"])
    ingestion = None
    try:
        time.sleep(2.0)  # the feed's server is up
        ingestion = subprocess.Popen([*me, "--role", "ingest"], stdout=subprocess.PIPE, text=True)
        cpu_feed, cpu_ingest = cpu_seconds(feed.pid), cpu_seconds(ingestion.pid)
        figures = asyncio.run(read(args))
        cpu_feed, cpu_ingest = cpu_seconds(feed.pid) - cpu_feed, cpu_seconds(ingestion.pid) - cpu_ingest
        ingestion.terminate()
        stats = json.loads(ingestion.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        for process in (ingestion, feed):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
    written = figures["in_window"] / args.duration
    lag = figures["lag_ms"]
    print(f"\ningestion, {args.backend} log ({args.partitions} partitions), feed {args.rate:,.0f} "
          f"ticks/s over {args.symbols} symbols, {args.duration:.0f} s window, on {machine()}")
    print(f"  written to the log: {written:,.0f} ticks/s ({figures['in_window']:,} ticks of the window, "
          f"{100 * written / args.rate:.1f}% of the feed's rate); goal >= {GOAL_RATE:,.0f}/s: "
          f"{'met' if written >= GOAL_RATE * 0.99 else 'MISSED'}")
    print(f"  lag feed -> readable in the log: {summary_ms(lag)}")
    print(f"  order per symbol: {figures['backwards']} ticks behind an earlier one of their symbol "
          f"in log order, of {figures['total']:,} read over {figures['symbols']} symbols")
    print(f"  ingestion service: {stats['ticksPublished']:,} published, {stats['malformedTicks']} "
          f"malformed, {stats['reconnects']} reconnects, {stats['ticksDropped']:,} dropped "
          f"(log behind), {stats['ticksWaiting']:,} waiting for the log at the end; "
          f"CPU over the run: ingestion "
          f"{stats['cpu']:.1f} s, feed {cpu_feed:.1f} s")
    if lag:
        print(f"  (p99 lag {percentile(lag, 0.99):.1f} ms; load {open('/proc/loadavg').read().split()[:3]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("embedded", "kafka"), default="embedded")
    parser.add_argument("--bootstrap", default="", help="Kafka bootstrap; empty: start a broker")
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="feed ticks/s")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--grace", type=float, default=3.0, help="seconds to read after the window")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--role", choices=("bench", "feed", "ingest"), default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--feed-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "feed":
        serve_feed(args)
        return
    if args.role == "ingest":
        import uvloop
        uvloop.install()
        asyncio.run(ingest(args))
        return

    args.feed_port = free_port()
    args.prefix = f"bench{uuid.uuid4().hex[:8]}."
    data_dir = tempfile.mkdtemp(prefix="bench-ingestion-")
    args.data_dir = data_dir
    started_kafka = args.backend == "kafka" and not args.bootstrap
    try:
        if started_kafka:
            args.bootstrap = start_kafka(args)
        run(args)
    finally:
        if started_kafka:
            stop_kafka(args)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
