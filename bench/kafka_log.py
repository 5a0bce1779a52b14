"""Figures for the Kafka event log adapter against a running broker:
single-record publish rate (sequential awaits, and many concurrent
publishers), batch publish, and poll->commit throughput of one consumer.

    .venv/bin/python bench/kafka_log.py [--bootstrap 127.0.0.1:9092] [--records 20000]
        [--publishers 100] [--linger-ms 1]

Everything goes to topics under a fresh prefix, deleted at the end. Prints
figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from mocktrade.adapters.kafka import KafkaEventLog

TOPIC = "trade_executed"
# About the size of a trade_executed event.
VALUE = b'{"eventId":"' + b"x" * 36 + b'","payload":{' + b"y" * 300 + b"}}"
HEADERS = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):6.2f} ms  p99 {pick(0.99):6.2f} ms  max {ordered[-1] * 1000:7.2f} ms"


def rate(count: int, elapsed: float, cpu: float) -> str:
    return f"{count / elapsed:9,.0f} /s ({count / cpu:,.0f} per CPU-second)"


async def sequential(log: KafkaEventLog, count: int) -> None:
    latencies = []
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        t = time.perf_counter()
        await log.publish(TOPIC, f"user-{i % 500}", VALUE, HEADERS)
        latencies.append(time.perf_counter() - t)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"publish, one awaited at a time   {rate(count, elapsed, cpu)}   {quantiles(latencies)}")


async def concurrent(log: KafkaEventLog, count: int, publishers: int) -> None:
    latencies: list[float] = []
    each = count // publishers

    async def publisher(p: int) -> None:
        for i in range(each):
            t = time.perf_counter()
            await log.publish(TOPIC, f"user-{p}-{i % 5}", VALUE, HEADERS)
            latencies.append(time.perf_counter() - t)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(publisher(p) for p in range(publishers)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"publish, {publishers} concurrent publishers {rate(each * publishers, elapsed, cpu)}   "
          f"{quantiles(latencies)}")


async def batches(log: KafkaEventLog, count: int) -> None:
    size = 500
    started, cpu = time.perf_counter(), time.process_time()
    for b in range(count // size):
        await log.publish_many(TOPIC, [(f"user-{i % 500}", VALUE, None) for i in range(size)])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"publish_many, {size} per call          {rate(count // size * size, elapsed, cpu)}")


async def consume(log: KafkaEventLog, expected: int) -> None:
    consumer = log.consumer(TOPIC, f"bench-{uuid.uuid4().hex[:6]}")
    first = await consumer.poll(500, 5.0)  # includes the group join
    seen, polls = len(first), 1
    await consumer.commit(first)
    started, cpu = time.perf_counter(), time.process_time()
    while seen < expected:
        records = await consumer.poll(500, 2.0)
        if not records:
            break
        await consumer.commit(records)
        seen, polls = seen + len(records), polls + 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"poll(500) + commit, one consumer   {rate(seen - len(first), elapsed, cpu)}   "
          f"{seen:,} records in {polls} polls")
    await consumer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("MOCKTRADE_KAFKA_BOOTSTRAP",
                                                              "127.0.0.1:9092"))
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=100)
    parser.add_argument("--linger-ms", type=float, default=None)
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}-"
    options = {} if args.linger_ms is None else {"linger_ms": args.linger_ms}
    log = KafkaEventLog(args.bootstrap, topic_prefix=prefix, **options)
    print(f"kafka event log at {args.bootstrap}, record {len(VALUE)} B, "
          f"linger.ms {log._linger_ms}, topic {prefix}{TOPIC}")
    try:
        await log.publish(TOPIC, "warm-up", VALUE)
        await sequential(log, min(args.records, 5_000))
        await concurrent(log, args.records, args.publishers)
        await batches(log, args.records)
        total = 1 + min(args.records, 5_000) + args.records // args.publishers * args.publishers \
            + args.records // 500 * 500
        await consume(log, total)
    finally:
        await log.close()
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.delete_topics([prefix + TOPIC], operation_timeout=10).values():
            future.exception(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
