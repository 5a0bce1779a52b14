"""The Flink operators of both jobs: thin shells around the shared handlers.

Imported only inside the PyFlink venv (they subclass pyflink's functions).
Each operator instance owns one asyncio loop, made in open() and closed in
close(), on which the project's async adapters (opened through bootstrap's
Resources, as in any other process) do all their work; an element is handled
with run_until_complete, so when process_element returns its effects are
durable. Flink only lets a checkpoint barrier pass an operator after the
elements before it were processed, so a completed checkpoint (and the source
offsets it commits) never covers an order whose trade_executed event is not
yet in Kafka, nor a trade that is neither in the stores nor in the
checkpointed buffer of the persistence job.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Iterable

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from ...config import Settings
from ...ports import LogRecord
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


class _HandlerFunction(KeyedProcessFunction):
    """Opens the process's adapters on its own event loop."""

    def __init__(self, topic: str):
        self.topic = topic

    def open(self, runtime_context: RuntimeContext):
        from ...bootstrap import Resources

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        settings = Settings.from_env(os.environ.get("MOCKTRADE_DATA_DIR"))
        # Analytics: the service that launched this job owns a chDB directory
        # (reached over ANALYTICS_URL), or ClickHouse is a server.
        self.resources = Resources(settings, owns_analytics=False)
        metrics = runtime_context.get_metrics_group()
        self.counters = {name: metrics.counter(name)
                         for name in ("executed", "failed", "persisted", "deadLettered")}
        self.handler = self.make_handler(self.resources)
        self._reported: dict[str, int] = {}

    def make_handler(self, resources):
        raise NotImplementedError

    def run(self, records: list[LogRecord]) -> None:
        self.loop.run_until_complete(handle_until_done(self.handler.handle, records, self.topic))
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
    """trade_orders -> ExecutionHandler (price, ledger apply, trade_executed)."""

    def make_handler(self, resources):
        from ..execution import ExecutionHandler

        return ExecutionHandler(resources.portfolios, resources.prices, resources.event_log)

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterable:
        self.run([log_record(row, self.topic)])
        return []


BUFFER_RECORD = Types.PICKLED_BYTE_ARRAY()


class PersistTrades(_HandlerFunction):
    """trade_executed -> PersistenceHandler, in batches.

    Records wait in keyed list state (part of every checkpoint, so a
    checkpoint never loses what was buffered: a restore brings the buffer
    back) until `batch_size` of them or `flush_ms` after the first, then go to
    history (bulk, id = orderId) and analytics in one handler call.
    """

    def __init__(self, topic: str, batch_size: int, flush_ms: int):
        super().__init__(topic)
        self.batch_size, self.flush_ms = batch_size, flush_ms

    def make_handler(self, resources):
        from ..persistence import PersistenceHandler

        return PersistenceHandler(resources.history, resources.analytics, resources.event_log)

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
            self.flush()
        elif self.timer.value() is None:
            due = ctx.timer_service().current_processing_time() + self.flush_ms
            ctx.timer_service().register_processing_time_timer(due)
            self.timer.update(due)
        return []

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable:
        self.timer.clear()
        self.flush()
        return []

    def flush(self) -> None:
        buffered = list(self.buffer.get() or [])
        if buffered:
            self.run([LogRecord(t, p, o, k, v, h) for t, p, o, k, v, h in buffered])
        self.buffer.clear()
        self.count.clear()
