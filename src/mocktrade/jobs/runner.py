"""The consumer-group runner: poll a batch, hand it to a job, then commit.

Committing only after the handler returns gives at-least-once delivery; the
handlers are idempotent, which makes the result effectively-once. The same
loop runs over the embedded log or a Kafka consumer group.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, Literal, Sequence

from .. import metrics
from ..ports import DependencyUnavailable, EventLog, LogConsumer, LogRecord

log = logging.getLogger("mocktrade.runner")

Handler = Callable[[Sequence[LogRecord]], Awaitable[None]]


async def run_consumer(event_log: EventLog, topic: str, group: str, handler: Handler, *,
                       max_records: int = 500, poll_timeout: float = 0.5,
                       reset: Literal["earliest", "latest"] = "earliest",
                       stop: asyncio.Event | None = None, commit: bool = True,
                       linger: float = 0.0, consumer: LogConsumer | None = None,
                       until: Callable[[], bool] | None = None) -> None:
    """`commit=False`: a reader that rebuilds state from the log on every start
    (and so must leave no committed group behind). `linger`: after the first
    record, keep gathering for this long (or up to `max_records`) before
    handling, for handlers whose cost is per batch rather than per record.
    `consumer`: one the caller opened already (its position is set when it
    is opened); closed here at the end either way. `until`: asked before
    every poll; True ends the loop as `stop` does."""
    consumer = consumer or event_log.consumer(topic, group, reset=reset)
    meter = metrics.ConsumerMeter(group, topic)
    try:
        while (stop is None or not stop.is_set()) and (until is None or not until()):
            records = await consumer.poll(max_records, poll_timeout)
            await meter.sample_lag(consumer)  # a clock check; a look every few seconds
            if not records:
                continue
            if linger > 0:
                records = await _gather_more(consumer, records, max_records, linger)
            await handle_until_done(handler, records, group)
            if commit:
                # A commit is a write too (the embedded log's offsets live in
                # its SQLite file): on a full disk it waits like the handler.
                await _until_done(lambda: consumer.commit(records), group, "commit")
            meter.processed(len(records))
    finally:
        meter.close()
        await consumer.close()


async def _gather_more(consumer, records: list[LogRecord], max_records: int,
                       linger: float) -> list[LogRecord]:
    deadline = asyncio.get_running_loop().time() + linger
    while len(records) < max_records:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        records = records + await consumer.poll(max_records - len(records), remaining)
    return records


async def handle_until_done(handler: Handler, records: Sequence[LogRecord], group: str) -> None:
    """Retry a batch while a dependency is down; nothing is skipped or committed."""
    await _until_done(lambda: handler(records), group, "batch")


async def _until_done(action: Callable[[], Awaitable[None]], group: str, what: str) -> None:
    delay = 0.05
    while True:
        try:
            await action()
            return
        except DependencyUnavailable as exc:
            log.warning(f"dependency down, retrying {what}",
                        extra={"group": group, "reason": str(exc), "retryIn": round(delay, 2)})
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
