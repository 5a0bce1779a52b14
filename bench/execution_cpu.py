"""CPU the embedded execution job spends per order, measured on its own.

    .venv/bin/python bench/execution_cpu.py                          # 20,000 orders at 2,000/s
    .venv/bin/python bench/execution_cpu.py --src /tmp/old/src --src src   # side by side
    .venv/bin/python bench/execution_cpu.py --profile /tmp/exec.svg  # py-spy flame graph

The execution job runs as the embedded platform's job process runs it
(bootstrap.execution_job; prices read from prices.sqlite3, which the HTTP
process writes; no checkpoints in its commits), but alone in a child
process, so that the figure is the job's and not the trigger job's beside
it. This process plays the others: it registers the users and the prices,
runs the WAL checkpointer (the persistence process's, in the platform),
appends market orders to trade_orders in small group commits at --rate
(one every 10 ms, as the HTTP process's loop turns do), and waits until
the ledger holds every order. A --rate above what the job keeps up with
(8,000/s here) measures it saturated, in batches of 500.

The figure is the child's CPU seconds (user + system, /proc) from the
first order to the last ledger entry, per 1,000 orders; the idle CPU of
the same child over the same length of time before the first order is
printed beside it. Each --src runs in turn on a fresh data dir, with the
child's PYTHONPATH set to it, so two source trees compare in one window:
CPU per order is robust to a shared machine, latency is not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Platform, cpu_seconds, machine  # noqa: E402

SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA")


def child_main(data_dir: str) -> None:
    """The execution job alone, set up as the embedded job process sets it up."""
    from mocktrade.adapters.embedded._sqlite import checkpoints_elsewhere
    from mocktrade.bootstrap import Resources, execution_job
    from mocktrade.config import Settings

    checkpoints_elsewhere()
    settings = Settings.from_env(data_dir)
    resources = Resources(settings, owns_analytics=False, sets_prices=False)

    async def run() -> None:
        job = execution_job(resources)
        print("ready", flush=True)
        await job()

    asyncio.run(run())


def _order_id(ordered: bool) -> str:
    """A random UUID as the order service makes, or (--ordered-ids) a
    time-ordered one (UUIDv7 layout), to see what key locality saves."""
    if not ordered:
        return str(uuid.uuid4())
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | uuid.uuid4().int & ((1 << 76) - 1)
    value = value & ~(0xC << 60) | (0x8 << 60)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


async def _publish(data_dir: Path, users: list[str], count: int, rate: float,
                   ordered_ids: bool = False) -> float:
    """Append `count` market buys to trade_orders at `rate`; seconds taken."""
    from mocktrade.adapters.embedded.eventlog import SqliteEventLog
    from mocktrade.domain.events import TOPIC_TRADE_ORDERS, encode, trade_order_payload
    from mocktrade.domain.model import Order, Side

    event_log = SqliteEventLog(data_dir / "eventlog.sqlite3")
    per_turn = max(1, round(rate / 100))
    started = time.monotonic()
    try:
        for first in range(0, count, per_turn):
            batch = []
            for n in range(first, min(count, first + per_turn)):
                user = users[n % len(users)]
                order = Order(_order_id(ordered_ids), user, SYMBOLS[n % len(SYMBOLS)], Decimal("1"),
                              Side.BUY, datetime.now(timezone.utc))
                batch.append((user, encode("order-service", trade_order_payload(order)), None))
            await event_log.publish_many(TOPIC_TRADE_ORDERS, batch)
            due = started + (first + per_turn) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await event_log.close()
    return time.monotonic() - started


async def _set_prices(platform: Platform) -> None:
    from mocktrade.adapters.embedded.prices import EmbeddedPriceCache
    from mocktrade.domain.model import PriceTick

    cache = EmbeddedPriceCache(platform.data_dir / "prices.sqlite3")
    try:
        for n, symbol in enumerate(SYMBOLS):
            await cache.set_price(PriceTick(symbol, Decimal("100.25") + n,
                                            datetime.now(timezone.utc)))
    finally:
        await cache.close()


def measure(src: str, args: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="cpu-bench-", dir=args.tmp))
    platform = Platform(data_dir=data_dir)
    users = [f"cpu-bench-{n}" for n in range(args.users)]
    platform.create_users(users, "100000000.00")
    asyncio.run(_set_prices(platform))
    env = {**platform.env, "PYTHONPATH": str(Path(src).resolve())}
    # The WAL checkpoints run in the persistence process of the platform;
    # here in this one, so that their CPU is not counted as the job's.
    from mocktrade.adapters.embedded.checkpoints import WalCheckpointer
    checkpointer = WalCheckpointer(data_dir)
    checkpointer.start()
    child = subprocess.Popen([sys.executable, __file__, "--child", str(data_dir)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spy = None
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"job child did not start: {line}{child.stdout.read()}")
        time.sleep(1.0)  # let the consumers open and settle
        idle_from = cpu_seconds(child.pid)
        time.sleep(2.0)
        idle_per_s = (cpu_seconds(child.pid) - idle_from) / 2.0
        if args.profile:
            target = Path(args.profile).with_stem(
                f"{Path(args.profile).stem}-{Path(src).resolve().parent.name}")
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                                    str(child.pid), "-r", "200", "-f", args.profile_format,
                                    "-o", str(target), *(["--idle"] if args.profile_idle else [])],
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu_from, wall_from = cpu_seconds(child.pid), time.monotonic()
        asyncio.run(_publish(data_dir, users, args.orders, args.rate, args.ordered_ids))
        platform.wait_for_ledger(args.orders, timeout=300)
        wall = time.monotonic() - wall_from
        cpu = cpu_seconds(child.pid) - cpu_from
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        child.terminate()
        child.wait(15)
        checkpointer.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"src": src, "cpu_s": cpu, "wall_s": wall, "idle_cores": idle_per_s,
            "ms_per_order": 1000 * cpu / args.orders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="source tree(s) for the job (default: src)")
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="orders/s appended")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--ordered-ids", action="store_true",
                        help="time-ordered orderIds (UUIDv7 layout) instead of random ones")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the --src list")
    parser.add_argument("--profile", help="py-spy output path (one per --src)")
    parser.add_argument("--profile-format", default="flamegraph")
    parser.add_argument("--profile-idle", action="store_true",
                        help="sample waiting threads too (where the job waits for a lock)")
    parser.add_argument("--tmp", default=None, help="where the data dirs go")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    sources = args.src or [str(Path(__file__).resolve().parent.parent / "src")]
    print(f"# {machine()}; {args.orders:,} orders at {args.rate:,.0f}/s, {args.users:,} users")
    for round_ in range(args.repeat):
        for src in sources:
            r = measure(src, args)
            print(f"{src}: {r['ms_per_order']:.3f} s CPU per 1,000 orders "
                  f"({r['cpu_s']:.2f} s over {r['wall_s']:.1f} s = "
                  f"{r['cpu_s'] / r['wall_s']:.2f} cores; idle {r['idle_cores']:.3f} cores)",
                  flush=True)


if __name__ == "__main__":
    main()
