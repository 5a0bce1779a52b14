"""Child processes for the contract suites.

Some promises can only be tested across a process boundary: a publish that
returned survives kill -9 of the publisher, and apply_execution stays atomic
when several processes share one store. The child builds the adapter from the
same backend target and location as the test.

usage: _child.py publish TARGET LOCATION TOPIC
       _child.py buy TARGET LOCATION USER SYMBOL PRICE ORDERS SEED START_AT
"""

from __future__ import annotations

import asyncio
import importlib
import random
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from mocktrade.domain.model import Order, Side

# Backend targets may live in the test tree ("tests.contract.real_backends_*"),
# which a script run as `python tests/contract/_child.py` cannot import unless
# the repository root is on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def build(target: str, location: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)(location)


async def publish_until_killed(target: str, location: str, topic: str) -> None:
    """Publish 0, 1, 2, ... and print each number once its publish returned."""
    log = build(target, location)
    for i in range(10_000_000):
        await log.publish(topic, f"key-{i % 7}", str(i).encode())
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()


async def buy(target: str, location: str, user: str, symbol: str, price: str,
              orders: str, seed: str, start_at: str) -> None:
    """Apply orders o0..oN-1 (one share each) in a shuffled order; print the statuses.

    Every child waits for the same wall-clock START_AT, so that their orders
    really do race instead of running one process after the other.
    """
    store = build(target, location)
    ids = [f"o{i}" for i in range(int(orders))]
    random.Random(int(seed)).shuffle(ids)
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    now = datetime.now(timezone.utc)
    for order_id in ids:
        order = Order(order_id, user, symbol, Decimal(1), Side.BUY, now)
        execution = await store.apply_execution(order, Decimal(price), now)
        print(order_id, execution.status.value)
    await store.close()


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    runner = {"publish": publish_until_killed, "buy": buy}[role]
    asyncio.run(runner(*arguments))
