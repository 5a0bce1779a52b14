"""Figures for the Redis and DynamoDB adapters against running engines.

    .venv/bin/python bench/redis_dynamodb.py [--stack-dir /tmp/devstack] [--only redis,dynamodb]

Engines come from MOCKTRADE_REDIS_URL / MOCKTRADE_DYNAMODB_ENDPOINT, else from
the stack.env of --stack-dir, else the development defaults. Everything runs
under a fresh key / table prefix that is removed afterwards. Prints figures;
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from mocktrade.adapters.dynamodb import LEDGER_TABLE, PORTFOLIOS_TABLE, DynamoDbPortfolioStore
from mocktrade.adapters.redis import RedisIdempotencyStore, RedisPriceCache
from mocktrade.domain.model import Order, PriceTick, Side

DEFAULTS = {"MOCKTRADE_REDIS_URL": "redis://127.0.0.1:6379/0",
            "MOCKTRADE_DYNAMODB_ENDPOINT": "http://127.0.0.1:8001"}


def settings(stack_dir: str | None) -> dict[str, str]:
    found = dict(DEFAULTS)
    if stack_dir and (Path(stack_dir) / "stack.env").exists():
        for line in (Path(stack_dir) / "stack.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name in found:
                found[name] = value.strip()
    return {name: os.environ.get(name, value) for name, value in found.items()}


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):7.2f} ms  p99 {pick(0.99):7.2f} ms  max {ordered[-1] * 1000:7.2f} ms"


async def timed(calls, concurrency: int = 1) -> tuple[float, list[float]]:
    """Run the coroutine factories with `concurrency` in flight; (rate/s, latencies)."""
    pending = iter(calls)
    latencies: list[float] = []

    async def worker() -> None:
        for call in pending:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- Redis ---------------------------------------------------------------------

async def bench_redis(url: str) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    cache = RedisPriceCache(url, key_prefix=prefix)
    idempotency = RedisIdempotencyStore(url, key_prefix=prefix)
    symbols = [f"SYM{i:04d}" for i in range(1000)]
    try:
        count = 5000
        for concurrency in (1, 16):
            rate, lat = await timed([
                (lambda i=i: cache.set_price(PriceTick(symbols[i % 1000], Decimal(i), now())))
                for i in range(count)], concurrency)
            print(f"redis  set_price  x{concurrency:<3}   {rate:9,.0f} /s   {quantiles(lat)}")
        for concurrency in (1, 16):
            rate, lat = await timed([(lambda i=i: cache.get_price(symbols[i % 1000]))
                                     for i in range(count)], concurrency)
            print(f"redis  get_price  x{concurrency:<3}   {rate:9,.0f} /s   {quantiles(lat)}")
        rate, lat = await timed([cache.all_prices for _ in range(200)])
        print(f"redis  all_prices (1000 symbols)  {rate:6,.0f} /s   {quantiles(lat)}")

        # publish -> subscriber: paced, so this is latency rather than queueing.
        subscription = cache.subscribe()
        sent: dict[Decimal, float] = {}
        delays: list[float] = []

        async def receive(expected: int) -> None:
            async for tick in subscription:
                if tick.price in sent:
                    delays.append(time.perf_counter() - sent[tick.price])
                if len(delays) == expected:
                    return

        updates = 2000
        reader = asyncio.create_task(receive(updates))
        for i in range(updates):
            price = Decimal(100_000 + i)
            sent[price] = time.perf_counter()
            await cache.set_price(PriceTick("LATENCY", price, now()))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(reader, 30)
        await subscription.aclose()
        print(f"redis  publish -> subscriber ({updates} paced updates)   {quantiles(delays)}")

        rate, lat = await timed([
            (lambda i=i: idempotency.reserve(f"user-{i % 100}", f"key-{i}", "fp", f"order-{i}"))
            for i in range(count)], 16)
        print(f"redis  idempotency reserve x16    {rate:9,.0f} /s   {quantiles(lat)}")
    finally:
        keys = [key async for key in cache._redis.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            await cache._redis.delete(*keys[start:start + 500])
        await idempotency.close()
        await cache.close()


# -- DynamoDB ------------------------------------------------------------------

async def bench_dynamodb(endpoint: str) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    store = DynamoDbPortfolioStore(endpoint, table_prefix=prefix)
    try:
        users = [f"user-{i:03d}" for i in range(50)]
        for user in users:
            await store.create_account(user, Decimal("1000000.00"), now())
        at = now()

        def order(i: int, user: str) -> Order:
            side = Side.BUY if i % 3 else Side.SELL
            return Order(f"{prefix}{i}", user, "MOCKAAPL", Decimal(1), side, at)

        # The server's own pace, to read the figures below against: one raw
        # GetItem round trip at a time, no adapter in between.
        client, table = store._client, store.portfolios_table
        rate, lat = await timed([(lambda: asyncio.to_thread(
            client.get_item, TableName=table, Key={"userId": {"S": users[0]}}))
            for _ in range(200)])
        print(f"dynamodb server baseline: raw GetItem x1        {rate:7,.0f} /s   {quantiles(lat)}")

        count = 400
        rate, lat = await timed([(lambda i=i: store.apply_execution(order(i, users[0]),
                                                                      Decimal("10.00"), at))
                                 for i in range(count)])
        print(f"dynamodb apply_execution one user, sequential   {rate:7,.0f} /s   {quantiles(lat)}")
        rate, lat = await timed([(lambda i=i: store.apply_execution(
            order(count + i, users[i % 50]), Decimal("10.00"), at)) for i in range(count)], 16)
        print(f"dynamodb apply_execution 50 users, x16          {rate:7,.0f} /s   {quantiles(lat)}")
        rate, lat = await timed([(lambda i=i: store.apply_execution(order(i, users[0]),
                                                                      Decimal("10.00"), at))
                                 for i in range(count)], 16)
        print(f"dynamodb apply_execution replays, x16           {rate:7,.0f} /s   {quantiles(lat)}")

        fresh = DynamoDbPortfolioStore(endpoint, table_prefix=prefix)  # no known portfolios
        rate, lat = await timed([(lambda i=i: fresh.apply_execution(
            order(2 * count + i, users[i % 50]), Decimal("10.00"), at)) for i in range(count // 2)],
            16)
        print(f"dynamodb apply_execution cold cache, x16        {rate:7,.0f} /s   {quantiles(lat)}")
        await fresh.close()

        for concurrency in (1, 16):
            rate, lat = await timed([(lambda i=i: store.get(users[i % 50])) for i in range(count)],
                                    concurrency)
            print(f"dynamodb get x{concurrency:<3}                               "
                  f"{rate:7,.0f} /s   {quantiles(lat)}")
        started = time.perf_counter()
        ledger = await store.ledger(users[0])
        print(f"dynamodb ledger of {len(ledger)} entries: {(time.perf_counter() - started) * 1000:.1f} ms")
    finally:
        await store.close()
        import boto3

        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="mocktrade", aws_secret_access_key="mocktrade")
        for table in (PORTFOLIOS_TABLE, LEDGER_TABLE):
            client.delete_table(TableName=prefix + table)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-dir", default=os.environ.get("MOCKTRADE_STACK_DIR"))
    parser.add_argument("--only", default="redis,dynamodb")
    args = parser.parse_args()
    engines = settings(args.stack_dir)
    only = set(args.only.split(","))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if "redis" in only:
        await bench_redis(engines["MOCKTRADE_REDIS_URL"])
    if "dynamodb" in only:
        await bench_dynamodb(engines["MOCKTRADE_DYNAMODB_ENDPOINT"])


if __name__ == "__main__":
    asyncio.run(main())
