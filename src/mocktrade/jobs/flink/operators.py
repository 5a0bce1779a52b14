"""The Flink operators of both jobs: thin shells around the shared handlers.

Imported only inside the PyFlink venv (they subclass pyflink's functions).
Each operator instance owns one asyncio loop, made in open() and closed in
close(), on which the project's async adapters (opened through bootstrap's
Resources, as in any other process) do all their work; an element is handled
with run_until_complete, so when process_element returns, its effects on the
stores are durable. What the handler publishes (trade_executed events, dead
letters) is collected in an Outbox and emitted as rows to the job's Kafka
sinks: the main output for the job's output topic, a side output for the
dead-letter topic. Flink lets a checkpoint barrier pass an operator only
after the elements before it were processed, and the at-least-once Kafka sink
flushes at the barrier, so a completed checkpoint (and the source offsets it
commits) never covers an order whose trade_executed event is not in Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Iterable

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from ...config import Settings
from ...domain.events import TOPIC_TRADE_EXECUTED
from ...ports import LogRecord
from ..deadletter import dead_letter_topic
from ..outbox import OutboundRecord, Outbox
from ..runner import handle_until_done

log = logging.getLogger("mocktrade.flink")


def log_record(row: Row, topic: str) -> LogRecord:
    """A row of the Kafka source table as the LogRecord the handlers take."""
    headers = row["headers"] or {}
    return LogRecord(topic=topic, partition=row["partition"] if row["partition"] is not None else -1,
                     offset=row["offset"] if row["offset"] is not None else -1,
                     key=row["k"] or "", value=bytes(row["v"] or b""),
                     headers={k: bytes(v).decode("utf-8", "replace") for k, v in headers.items()
                              if v is not None})


# A Kafka record as the sink tables take it (key raw, value raw, headers).
BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
KAFKA_ROW = Types.ROW_NAMED(["k", "v", "headers"], [Types.STRING(), BYTES, Types.MAP(Types.STRING(), BYTES)])
DEAD_LETTERS = OutputTag("dead-letters", KAFKA_ROW)


def kafka_row(record: OutboundRecord) -> Row:
    return Row(k=record.key, v=record.value,
               headers={name: value.encode() for name, value in record.headers.items()})


class _HandlerFunction(KeyedProcessFunction):
    """Opens the process's adapters on its own event loop."""

    output_topic: str | None = None  # the main output's topic (dead letters: a side output)

    def __init__(self, topic: str):
        self.topic = topic

    def open(self, runtime_context: RuntimeContext):
        from ...bootstrap import Resources

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.settings = Settings.from_env(os.environ.get("MOCKTRADE_DATA_DIR"))
        # Analytics: the service that launched this job owns a chDB directory
        # (reached over ANALYTICS_URL), or ClickHouse is a server.
        self.resources = Resources(self.settings, owns_analytics=False)
        metrics = runtime_context.get_metrics_group()
        self.counters = {name: metrics.counter(name)
                         for name in ("executed", "failed", "persisted", "deadLettered")}
        self.outbox = Outbox()
        self.handler = self.make_handler(self.resources, self.outbox)
        self._reported: dict[str, int] = {}

    def make_handler(self, resources, outbox: Outbox):
        raise NotImplementedError

    def run(self, records: list[LogRecord]) -> Iterable:
        """Handle records; yield what the handler published, as sink rows."""
        async def attempt(batch):
            self.outbox.discard()  # a retried batch publishes everything again
            await self.handler.handle(batch)
        self.loop.run_until_complete(handle_until_done(attempt, records, self.topic))
        self._count()
        dead_letters = dead_letter_topic(self.topic)
        for record in self.outbox.drain():
            if record.topic == dead_letters:
                yield DEAD_LETTERS, kafka_row(record)
            elif record.topic == self.output_topic:
                yield kafka_row(record)
            else:  # never dropped: a handler that grew an output needs a sink for it
                raise RuntimeError(f"the {self.topic} job has no sink for topic {record.topic}")

    def _count(self) -> None:
        for name, value in vars(self.handler.stats).items():
            counter = self.counters.get({"dead_lettered": "deadLettered"}.get(name, name))
            if counter is not None and value > self._reported.get(name, 0):
                counter.inc(value - self._reported.get(name, 0))
                self._reported[name] = value

    def close(self):
        loop = getattr(self, "loop", None)
        if loop is None:
            return
        try:
            loop.run_until_complete(self.resources.close())
        finally:
            loop.close()


class ExecuteOrders(_HandlerFunction):
    """trade_orders -> ExecutionHandler (price, ledger apply) -> trade_executed rows."""

    output_topic = TOPIC_TRADE_EXECUTED

    def make_handler(self, resources, outbox: Outbox):
        from ..execution import ExecutionHandler

        return ExecutionHandler(resources.portfolios, resources.prices, outbox)

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterable:
        yield from self.run([log_record(row, self.topic)])


BUFFER_RECORD = Types.PICKLED_BYTE_ARRAY()


class PersistTrades(_HandlerFunction):
    """trade_executed -> PersistenceHandler, in batches, keyed by source partition.

    Records wait in keyed list state until `batch_size` of them or `flush_ms`
    after the first, then go to history (bulk, id = orderId) and analytics in
    one handler call, after which the group's offset for that partition moves
    past them (the source does not commit offsets on checkpoints for this
    job). PyFlink 1.20 gives Python functions no hook before a checkpoint
    barrier, so a checkpoint can complete while records are buffered; the
    buffer is part of it, so a restore from the checkpoint brings them back,
    and a start without one (from the group's offsets) reads them again
    because their offsets were never committed. Keying by partition is what
    makes "everything before this offset is written" true per flush.
    """

    def __init__(self, topic: str, group: str, batch_size: int, flush_ms: int):
        super().__init__(topic)
        self.group, self.batch_size, self.flush_ms = group, batch_size, flush_ms

    def make_handler(self, resources, outbox: Outbox):
        from ..persistence import PersistenceHandler

        return PersistenceHandler(resources.history, resources.analytics, outbox)

    def open(self, runtime_context: RuntimeContext):
        super().open(runtime_context)
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", BUFFER_RECORD))
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.INT()))
        self.timer = runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG()))

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterable:
        record = log_record(row, self.topic)
        self.buffer.add((record.topic, record.partition, record.offset, record.key,
                         record.value, dict(record.headers)))
        count = (self.count.value() or 0) + 1
        self.count.update(count)
        if count >= self.batch_size:
            yield from self.flush()
        elif self.timer.value() is None:
            due = ctx.timer_service().current_processing_time() + self.flush_ms
            ctx.timer_service().register_processing_time_timer(due)
            self.timer.update(due)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable:
        self.timer.clear()
        yield from self.flush()

    def flush(self) -> Iterable:
        buffered = [LogRecord(t, p, o, k, v, h) for t, p, o, k, v, h in (self.buffer.get() or [])]
        if buffered:
            yield from self.run(buffered)
            self.commit(buffered)
        self.buffer.clear()
        self.count.clear()

    def commit(self, records: list[LogRecord]) -> None:
        offsets: dict[int, int] = {}
        for record in records:
            if record.partition >= 0:
                offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        if offsets:  # the Flink jobs always read Kafka: event_log is a KafkaEventLog
            self.loop.run_until_complete(
                self.resources.event_log.commit_group_offsets(self.group, self.topic, offsets))
