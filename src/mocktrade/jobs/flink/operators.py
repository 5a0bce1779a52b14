"""The Flink functions of both jobs: thin shells around the shared handlers.

Imported only inside the PyFlink venv (they subclass pyflink's functions).
Each function instance owns a HandlerHost: one asyncio loop, made in open()
and closed in close(), on which the project's async adapters (opened through
bootstrap's Resources, as in any other process) do all their work. Records
are handled with run_until_complete, so when a call returns, its effects on
the stores are durable; what the handler publishes (trade_executed events,
dead letters) is collected in an Outbox and handed to the job's Kafka sinks.

Why a checkpoint never covers unfinished work:
- execution (DataStream, keyed by userId): Flink lets a barrier pass an
  operator only after the elements before it were processed, and the
  at-least-once Kafka sink flushes at the barrier; so a completed checkpoint
  (and the source offsets it commits) never covers an order whose
  trade_executed event is not in Kafka.
- persistence (Table API, a vectorized UDF): Flink hands the UDF Arrow
  batches of up to `batch_size` records, each written with one handler call
  (history bulk, analytics batch), and before a checkpoint barrier passes it
  finishes the bundle, sending the partial batch and waiting for the call.
  So everything read before a checkpoint is written when it completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Iterable

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from ...config import Settings
from ...domain.events import TOPIC_TRADE_EXECUTED
from ...ports import LogRecord
from ..deadletter import dead_letter_headers, dead_letter_topic
from ..outbox import OutboundRecord, Outbox
from ..runner import handle_until_done

log = logging.getLogger("mocktrade.flink")

COUNTERS = ("executed", "failed", "persisted", "deadLettered")


class HandlerHost:
    """A handler, its adapters and its event loop, inside one Flink function."""

    def __init__(self, topic: str, make_handler, metric_group):
        from ...bootstrap import Resources

        self.topic = topic
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        settings = Settings.from_env(os.environ.get("MOCKTRADE_DATA_DIR"))
        # Analytics: the service that launched this job owns a chDB directory
        # (reached over ANALYTICS_URL), or ClickHouse is a server.
        self.resources = Resources(settings, owns_analytics=False)
        self.outbox = Outbox()
        self.handler = make_handler(self.resources, self.outbox)
        self.counters = {name: metric_group.counter(name) for name in COUNTERS}
        self._reported: dict[str, int] = {}

    def run(self, records: list[LogRecord]) -> list[OutboundRecord]:
        """Handle records (retrying while a store is down); what they published."""
        async def attempt(batch):
            self.outbox.discard()  # a retried batch publishes everything again
            await self.handler.handle(batch)
        self.loop.run_until_complete(handle_until_done(attempt, records, self.topic))
        for name, value in vars(self.handler.stats).items():
            counter = self.counters.get({"dead_lettered": "deadLettered"}.get(name, name))
            if counter is not None and value > self._reported.get(name, 0):
                counter.inc(value - self._reported.get(name, 0))
                self._reported[name] = value
        return self.outbox.drain()

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.resources.close())
        finally:
            self.loop.close()


def log_record(row: Row, topic: str) -> LogRecord:
    """A row of the Kafka source table as the LogRecord the handlers take."""
    headers = row["headers"] or {}
    return LogRecord(topic=topic, partition=row["partition"] if row["partition"] is not None else -1,
                     offset=row["offset"] if row["offset"] is not None else -1,
                     key=row["k"] or "", value=bytes(row["v"] or b""),
                     headers={k: bytes(v).decode("utf-8", "replace") for k, v in headers.items()
                              if v is not None})


# -- execution -------------------------------------------------------------------

# A Kafka record as the sink tables take it (key raw, value raw, headers).
BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
KAFKA_ROW = Types.ROW_NAMED(["k", "v", "headers"], [Types.STRING(), BYTES, Types.MAP(Types.STRING(), BYTES)])
DEAD_LETTERS = OutputTag("dead-letters", KAFKA_ROW)


def kafka_row(record: OutboundRecord) -> Row:
    return Row(k=record.key, v=record.value,
               headers={name: value.encode() for name, value in record.headers.items()})


def _execution_handler(resources, outbox: Outbox):
    from ..execution import ExecutionHandler

    return ExecutionHandler(resources.portfolios, resources.prices, outbox)


class ExecuteOrders(KeyedProcessFunction):
    """trade_orders -> ExecutionHandler (price, ledger apply) -> trade_executed rows
    on the main output, dead letters on a side output."""

    def __init__(self, topic: str):
        self.topic = topic

    def open(self, runtime_context: RuntimeContext):
        self.host = HandlerHost(self.topic, _execution_handler, runtime_context.get_metrics_group())

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterable:
        dead_letters = dead_letter_topic(self.topic)
        for record in self.host.run([log_record(row, self.topic)]):
            if record.topic == dead_letters:
                yield DEAD_LETTERS, kafka_row(record)
            elif record.topic == TOPIC_TRADE_EXECUTED:
                yield kafka_row(record)
            else:  # never dropped: a handler that grew an output needs a sink for it
                raise RuntimeError(f"the execution job has no sink for topic {record.topic}")

    def close(self):
        if hasattr(self, "host"):
            self.host.close()


# -- persistence -----------------------------------------------------------------

def _persistence_handler(resources, outbox: Outbox):
    from ..persistence import PersistenceHandler

    return PersistenceHandler(resources.history, resources.analytics, outbox)


class PersistBatch(ScalarFunction):
    """Vectorized (pandas) UDF: one Arrow batch of trade_executed records ->
    one PersistenceHandler call; per record, None once written, or the reason
    it could not be decoded (the job sends those to the dead-letter topic)."""

    def __init__(self, topic: str):
        self.topic = topic

    def open(self, function_context: FunctionContext):
        self.host = HandlerHost(self.topic, _persistence_handler, function_context.get_metric_group())

    def eval(self, k, v, partition, offset):
        import pandas as pd

        records = [LogRecord(self.topic, int(p), int(o), key or "", bytes(value or b""), {})
                   for key, value, p, o in zip(k, v, partition, offset)]
        reasons = {(int(r.headers["dlq.partition"]), int(r.headers["dlq.offset"])): r.headers["dlq.reason"]
                   for r in self.host.run(records) if r.topic == dead_letter_topic(self.topic)}
        return pd.Series([reasons.get((r.partition, r.offset)) for r in records], dtype=object)

    def close(self):
        if hasattr(self, "host"):
            self.host.close()


def persist_batch(topic: str):
    return udf(PersistBatch(topic), result_type=DataTypes.STRING(), func_type="pandas")


def dead_letter_headers_udf(topic: str):
    """The same dlq.* headers the consumer runner's dead letters carry."""
    def headers(original, reason, partition, offset):
        record = LogRecord(topic, partition, offset, "", b"",
                           {k: bytes(v).decode("utf-8", "replace") for k, v in (original or {}).items()
                            if v is not None})
        return {k: v.encode() for k, v in dead_letter_headers(record, reason).items()}
    return udf(headers, result_type=DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES()))
