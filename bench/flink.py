"""The jobs on Flink beside the Kafka consumer-group runner, one run.

    .venv/bin/mocktrade stack up --dir /tmp/devstack
    MOCKTRADE_STACK_DIR=/tmp/devstack .venv/bin/python bench/flink.py \
        [--runs consumer,flink:thread:1,flink:process:1,flink:thread:2] \
        [--backlog 600] [--rate 100] [--seconds 20] [--portfolios sqlite|dynamodb]

Each run gets a fresh table prefix and data dir, 20 accounts and a price,
then:
  1. start time and drain rate: BACKLOG buy orders are published straight to
     trade_orders before `mocktrade job execution --engine ENGINE` is
     launched; the time from launch to the first trade_executed event is the
     job's start time (provisioning is cached: JVM, mini-cluster, planner,
     Kafka source, the operators' adapters), and (BACKLOG-1) / (last - first)
     its drain rate;
  2. accept->executed under open-loop load: RATE orders/s for SECONDS more,
     each timed from the moment its publish to trade_orders returned (the
     order service's 202 happens there) to the moment its trade_executed
     event reaches a consumer.

--job persistence instead times the persistence job: BACKLOG trade_executed
events published before launch, then start (launch -> first document in the
history index) and drain (until all BACKLOG are searchable); Flink's
persistence job runs in process mode with its vectorized UDF, so the MODE of
a `flink:MODE:P` run does not apply to it.

--portfolios sqlite (default) applies executions to the embedded SQLite
portfolio store in the run's data dir instead of the DynamoDB-API engine,
which serialises every request (~60-150/s on this machine) and would hide
the difference between the runners. Flink runs are `flink:MODE:PARALLELISM`
(MODE thread or process). Prints one JSON line per run; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, machine, mocktrade_command, percentile  # noqa: E402

from mocktrade.config import Settings, read_env_file  # noqa: E402
from mocktrade.domain.events import (TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS,  # noqa: E402
                                     decode_envelope, decode_trade_executed, encode,
                                     trade_order_payload)
from mocktrade.domain.events import encode_trade_executed  # noqa: E402
from mocktrade.domain.model import Execution, ExecutionStatus, Order, PriceTick, Side  # noqa: E402

USERS = 20


def order_record(n: int) -> tuple[str, tuple[str, bytes, None]]:
    order = Order(str(uuid.uuid4()), f"u{n % USERS}", "MOCKAAPL", Decimal("1"), Side.BUY,
                  datetime.now(timezone.utc))
    return order.order_id, (order.user_id, encode("bench", trade_order_payload(order)), None)


async def prepare(resources, backlog: int) -> None:
    now = datetime.now(timezone.utc)
    await resources.prices.set_price(PriceTick("MOCKAAPL", Decimal("100.00"), now))
    await asyncio.gather(*(resources.portfolios.create_account(f"u{i}", Decimal("100000000"), now)
                           for i in range(USERS)))
    await resources.event_log.publish_many(TOPIC_TRADE_ORDERS, [order_record(n)[1] for n in range(backlog)])


async def prepare_executions(resources, backlog: int) -> None:
    now = datetime.now(timezone.utc)
    events = []
    for n in range(backlog):
        execution = Execution(str(uuid.uuid4()), f"u{n % USERS}", "MOCKAAPL", Decimal("1"), Side.BUY,
                              ExecutionStatus.EXECUTED, Decimal("100.00"), now, order_timestamp=now)
        events.append((execution.user_id, encode_trade_executed(execution), None))
    await resources.event_log.publish_many(TOPIC_TRADE_EXECUTED, events)


async def measure_persistence(settings: Settings, backlog: int, launched: float) -> dict:
    """Poll the history index's document count (Elasticsearch/OpenSearch)."""
    import httpx

    url = f"{settings.elasticsearch_url}/{settings.table_prefix}trading_trades/_count"
    first = None
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() - launched < 600:
            answer = await client.get(url, params={"ignore_unavailable": "true"})
            count = answer.json().get("count", 0) if answer.status_code == 200 else 0
            if count and first is None:
                first = time.monotonic() - launched
            if count >= backlog:
                break
            await asyncio.sleep(0.1)
    last = time.monotonic() - launched
    return {"start_s": round(first or float("nan"), 1), "all_done_s": round(last, 1),
            "drain_per_s": round(backlog / (last - first), 1) if first and last > first else None}


async def measure(resources, backlog: int, rate: float, seconds: float, launched: float) -> dict:
    consumer = resources.event_log.consumer(TOPIC_TRADE_EXECUTED, f"bench-{uuid.uuid4()}", reset="earliest")
    arrived: dict[str, float] = {}
    stop = asyncio.Event()

    async def collect() -> None:
        while not stop.is_set():
            for record in await consumer.poll(5000, 0.2):
                order_id = decode_trade_executed(decode_envelope(record.value).payload).order_id
                arrived.setdefault(order_id, time.monotonic())

    collector = asyncio.create_task(collect())
    try:
        deadline = launched + 600
        while len(arrived) < backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        times = sorted(arrived.values())
        first, last = times[0] - launched, times[-1] - launched
        # Open loop: each order at its scheduled time, whatever came before.
        accepted: dict[str, float] = {}
        began, count = time.monotonic(), int(rate * seconds)
        for n in range(count):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            order_id, (key, value, _) = order_record(n)
            await resources.event_log.publish(TOPIC_TRADE_ORDERS, key, value)
            accepted[order_id] = time.monotonic()
        offered = count / (time.monotonic() - began)
        settle = time.monotonic() + 120
        while any(o not in arrived for o in accepted) and time.monotonic() < settle:
            await asyncio.sleep(0.05)
        latencies = [(arrived[o] - t) * 1000 for o, t in accepted.items() if o in arrived]
        return {"start_s": round(first, 1),
                "drain_per_s": round((backlog - 1) / (last - first), 1) if last > first else None,
                "offered_per_s": round(offered, 1), "executed": len(latencies), "orders": count,
                **{f"p{q}_ms": round(percentile(latencies, q / 100), 1) for q in (50, 90, 99)},
                "max_ms": round(max(latencies), 1) if latencies else None}
    finally:
        stop.set()
        await collector
        await consumer.close()


def run(spec: str, engines: dict[str, str], args: argparse.Namespace) -> dict:
    from mocktrade.bootstrap import Resources

    engine, _, tail = spec.partition(":")
    mode, _, parallelism = tail.partition(":")
    data = Path(tempfile.mkdtemp(prefix=f"flinkbench-{engine}-"))
    env = {**os.environ, **engines, "MOCKTRADE_TABLE_PREFIX": f"fb{uuid.uuid4().hex[:6]}_",
           "MOCKTRADE_DATA_DIR": str(data), "MOCKTRADE_LOG_LEVEL": "WARNING",
           "MOCKTRADE_FLINK_EXECUTION_MODE": mode or "thread",
           "MOCKTRADE_FLINK_PARALLELISM": parallelism or "1"}
    if args.portfolios == "sqlite":
        env.pop("MOCKTRADE_DYNAMODB_ENDPOINT", None)
    os.environ.clear()
    os.environ.update(env)
    settings = Settings.from_env(data)

    async def session() -> dict:
        resources = Resources(settings)
        try:
            if args.job == "execution":
                await prepare(resources, args.backlog)
            else:
                await prepare_executions(resources, args.backlog)
            launched = time.monotonic()
            job = subprocess.Popen([*mocktrade_command(), "job", args.job, "--engine", engine,
                                    "--port", str(free_port())], env=env,
                                   stdout=subprocess.DEVNULL, stderr=open(data / "job.log", "wb"))
            try:
                if args.job == "execution":
                    return await measure(resources, args.backlog, args.rate, args.seconds, launched)
                return await measure_persistence(settings, args.backlog, launched)
            finally:
                job.terminate()
                job.wait(60)
        finally:
            await resources.close()

    figures = asyncio.run(session())
    return {"job": args.job, "run": spec, "portfolios": args.portfolios, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", choices=("execution", "persistence"), default="execution")
    parser.add_argument("--runs", default="consumer,flink:thread:1,flink:process:1,flink:thread:2")
    parser.add_argument("--backlog", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--portfolios", choices=("sqlite", "dynamodb"), default="sqlite")
    args = parser.parse_args()
    stack = Path(os.environ.get("MOCKTRADE_STACK_DIR", "/tmp/devstack"))
    engines = read_env_file(stack / "stack.env")
    if not engines:
        raise SystemExit(f"no engines at {stack}: run `mocktrade stack up --dir {stack}` first")
    print(f"# {machine()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    base = dict(os.environ)
    for spec in args.runs.split(","):
        print(json.dumps(run(spec, engines, args)), flush=True)
        os.environ.clear()
        os.environ.update(base)


if __name__ == "__main__":
    main()
