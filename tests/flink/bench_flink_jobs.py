"""Execution job: start time and drain throughput, Flink beside the Kafka
consumer-group runner, on a running stack (prints figures, never asserts).

    MOCKTRADE_STACK_DIR=/tmp/devstack .venv/bin/python -m tests.flink.bench_flink_jobs [ORDERS] [consumer,flink]

(MOCKTRADE_FLINK_PARALLELISM / _EXECUTION_MODE apply to the Flink run.)

For each engine, on a fresh table prefix: create USERS accounts, publish
ORDERS buy orders straight to trade_orders (a backlog), start
`mocktrade job execution --engine ENGINE`, and time (a) launch -> first
trade_executed event, (b) the whole backlog drained, hence orders/s.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from mocktrade.config import Settings, read_env_file
from mocktrade.domain.events import TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS, encode, trade_order_payload
from mocktrade.domain.model import Order, PriceTick, Side

USERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def prepare(settings: Settings, orders: int) -> None:
    from mocktrade.bootstrap import Resources

    r = Resources(settings)
    try:
        now = datetime.now(timezone.utc)
        await r.prices.set_price(PriceTick("MOCKAAPL", Decimal("100.00"), now))
        await asyncio.gather(*(r.portfolios.create_account(f"u{i}", Decimal("1000000"), now)
                               for i in range(USERS)))
        records = []
        for n in range(orders):
            order = Order(str(uuid.uuid4()), f"u{n % USERS}", "MOCKAAPL", Decimal("1"), Side.BUY, now)
            records.append((order.user_id, encode("bench", trade_order_payload(order)), None))
        await r.event_log.publish_many(TOPIC_TRADE_ORDERS, records)
    finally:
        await r.close()


async def count_outcomes(settings: Settings, expected: int, began: float) -> tuple[float, float]:
    from mocktrade.bootstrap import Resources

    r = Resources(settings)
    consumer = r.event_log.consumer(TOPIC_TRADE_EXECUTED, f"bench-{uuid.uuid4()}", reset="earliest")
    seen, first = set(), None
    try:
        while len(seen) < expected:
            for record in await consumer.poll(5000, 0.5):
                seen.add(record.value)  # a replay re-emits the identical event
                if first is None:
                    first = time.monotonic() - began
            if time.monotonic() - began > 900:
                break
        return first or float("nan"), time.monotonic() - began
    finally:
        await consumer.close()
        await r.close()


def run(engine: str, engines_env: dict[str, str], orders: int) -> dict:
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    data = Path(tempfile.mkdtemp(prefix=f"flinkbench-{engine}-"))
    env = {**os.environ, **engines_env, "MOCKTRADE_TABLE_PREFIX": prefix, "MOCKTRADE_DATA_DIR": str(data),
           "MOCKTRADE_LOG_LEVEL": "WARNING"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("MOCKTRADE_")})
    settings = Settings.from_env(data)
    asyncio.run(prepare(settings, orders))
    began = time.monotonic()
    job = subprocess.Popen([sys.executable, "-m", "mocktrade.cli", "job", "execution", "--engine", engine,
                            "--port", str(free_port())], env=env, stdout=subprocess.DEVNULL,
                           stderr=open(data / "job.log", "wb"))
    try:
        first, total = asyncio.run(count_outcomes(settings, orders, began))
    finally:
        job.terminate()
        job.wait(30)
    drain = total - first
    return {"engine": engine, "orders": orders, "first_result_s": round(first, 1),
            "all_done_s": round(total, 1), "orders_per_s_after_first": round((orders - 1) / drain, 1)}


def main() -> None:
    orders = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    engines_env = read_env_file(Path(os.environ.get("MOCKTRADE_STACK_DIR", "/tmp/devstack")) / "stack.env")
    for engine in (sys.argv[2].split(",") if len(sys.argv) > 2 else ("consumer", "flink")):
        print(run(engine, engines_env, orders), flush=True)


if __name__ == "__main__":
    main()
