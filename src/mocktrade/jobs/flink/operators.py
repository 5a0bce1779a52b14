"""The Flink functions of the jobs: thin shells around the shared handlers
(execution, persistence) and the shared TriggerBook (triggers).

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
  The ticks of market_data go the same way through a second vectorized UDF
  (one analytics record_ticks call per batch).
- triggers (connected streams keyed by symbol): the resting orders are keyed
  state, snapshotted with the source offsets; the commands a record caused
  are in the at-least-once sink before the checkpoint after it completes. A
  start without a checkpoint first loads the portfolio store's OPEN orders
  (SeedOpenOrders) into the order_updates stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable

import orjson
from pyflink.common import Row, Time, Types
from pyflink.datastream import (FlatMapFunction, KeyedCoProcessFunction, KeyedProcessFunction, OutputTag,
                                RuntimeContext)
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from ...config import Settings
from ...domain.events import (TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS, EventDecodeError,
                              decode_envelope,
                              decode_market_data, decode_order_update, decode_trade_order,
                              encode_order_command, encode_order_update, format_time, parse_time,
                              trade_order_payload)
from ...domain.lifecycle import OrderStatus
from ...domain.triggers import ClosedOrders, TriggerBook
from ...ports import LogRecord
from ..deadletter import dead_letter_headers, dead_letter_topic
from ..outbox import OutboundRecord, Outbox
from ..runner import handle_until_done
from ..triggers import SOURCE as TRIGGER_SOURCE
from .metrics import (DEAD_LETTERED, EVENTS_PROCESSED, EXECUTION_LAG_MS, HANDLER_COUNTERS,
                      TRIGGER_COUNTERS, execution_lag_ms)

log = logging.getLogger("mocktrade.flink")

# Handler stats whose counter is named otherwise (names: .metrics).
_COUNTER_NAMES = {"dead_lettered": DEAD_LETTERED, "recorded": "ticksRecorded",
                  "open_orders": "openOrdersLoaded"}


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
        self.counters = {name: metric_group.counter(name) for name in HANDLER_COUNTERS}
        self.processed = metric_group.counter(EVENTS_PROCESSED)
        self._reported: dict[str, int] = {}

    def run(self, records: list[LogRecord]) -> list[OutboundRecord]:
        """Handle records (retrying while a store is down); what they published."""
        async def attempt(batch):
            self.outbox.discard()  # a retried batch publishes everything again
            await self.handler.handle(batch)
        self.loop.run_until_complete(handle_until_done(attempt, records, self.topic))
        self.processed.inc(len(records))
        for name, value in vars(self.handler.stats).items():
            counter = self.counters.get(_COUNTER_NAMES.get(name, name))
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
_OUTPUTS: dict[str, OutputTag] = {}
# A row of the Kafka source tables (what the seed of the trigger job emits too).
SOURCE_ROW = Types.ROW_NAMED(["k", "v", "topic", "partition", "offset", "headers"],
                             [Types.STRING(), BYTES, Types.STRING(), Types.INT(), Types.LONG(),
                              Types.MAP(Types.STRING(), BYTES)])


def output_tag(topic: str) -> OutputTag:
    """The side output whose records the job's sink for `topic` (unprefixed) writes."""
    if topic not in _OUTPUTS:
        _OUTPUTS[topic] = OutputTag(f"to-{topic}", KAFKA_ROW)
    return _OUTPUTS[topic]


def kafka_row(record: OutboundRecord) -> Row:
    return Row(k=record.key, v=record.value,
               headers={name: value.encode() for name, value in record.headers.items()})


def _execution_handler(resources, outbox: Outbox):
    from ..execution import ExecutionHandler

    return ExecutionHandler(resources.portfolios, resources.prices, outbox)


class ExecuteOrders(KeyedProcessFunction):
    """trade_orders and order_commands -> ExecutionHandler (price, ledger apply)
    -> trade_executed rows on the main output; order_updates and the dead
    letters of either input on side outputs (`output_tag(topic)`)."""

    def __init__(self, prefix: str, side_topics: tuple[str, ...]):
        self.prefix = prefix
        self.side_topics = frozenset(side_topics)

    def open(self, runtime_context: RuntimeContext):
        metric_group = runtime_context.get_metrics_group()
        self.host = HandlerHost("execution", _execution_handler, metric_group)
        self.last_lag_ms = 0
        metric_group.gauge(EXECUTION_LAG_MS, lambda: self.last_lag_ms)

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context) -> Iterable:
        topic = (row["topic"] or "").removeprefix(self.prefix)
        record_in = log_record(row, topic)
        for record in self.host.run([record_in]):
            if record.topic == TOPIC_TRADE_EXECUTED:
                if topic == TOPIC_TRADE_ORDERS:  # a market order: its acceptance time is at hand
                    lag = execution_lag_ms(record_in.value, record.value)
                    if lag is not None:
                        self.last_lag_ms = lag
                yield kafka_row(record)
            elif record.topic in self.side_topics:
                yield output_tag(record.topic), kafka_row(record)
            else:  # never dropped: a handler that grew an output needs a sink for it
                raise RuntimeError(f"the execution job has no sink for topic {record.topic}")

    def close(self):
        if hasattr(self, "host"):
            self.host.close()


# -- triggers --------------------------------------------------------------------

def payload_symbol(row: Row) -> str:
    """The symbol of a market_data or order_updates record ("" if undecodable:
    the function decodes it again and skips or dead-letters it)."""
    try:
        symbol = orjson.loads(bytes(row["v"] or b""))["payload"]["symbol"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return ""
    return symbol if isinstance(symbol, str) else ""


def _resting_entry(update) -> str:
    return orjson.dumps({"order": trade_order_payload(update.order), "seq": update.seq,
                         "stopTriggered": update.stop_triggered}).decode()


def _closed_orders(book: TriggerBook) -> ClosedOrders:
    """The orders the book has seen final, kept in keyed state beside the
    resting orders."""
    return book.closed


# How long the keyed state remembers an order seen final. The embedded book
# keeps the newest CLOSED_ORDERS_KEPT ids instead (ClosedOrders says why
# forgetting is safe); keyed state is per symbol, where a time bound is what
# Flink offers. Stale news only comes from a replay of the owner, minutes
# after the fact at most; without a bound the state grew by one entry per
# limit or stop order for the life of the job.
CLOSED_ORDERS_TTL = Time.days(1)


def _closed_orders_ttl() -> StateTtlConfig:
    return (StateTtlConfig.new_builder(CLOSED_ORDERS_TTL)
            .update_ttl_on_create_and_write()
            .never_return_expired()
            .cleanup_full_snapshot()
            .cleanup_incrementally(10, False)
            .build())


def _expiry_ms(moment: datetime) -> int:
    """A timer at or after `moment` (an EXPIRE's `at` must not precede expires_at)."""
    return math.ceil(moment.timestamp() * 1000)


@dataclass
class OpenOrdersStats:
    open_orders: int = 0


class OpenOrdersLoad:
    """A "handler" (for HandlerHost: retried while the store is down) that
    reads the portfolio store's OPEN orders."""

    def __init__(self, resources, outbox: Outbox):
        self._portfolios = resources.portfolios
        self.states: list = []
        self.stats = OpenOrdersStats()

    async def handle(self, _records) -> None:
        self.states = await self._portfolios.open_orders()
        self.stats.open_orders = len(self.states)


class SeedOpenOrders(FlatMapFunction):
    """The trigger job's first-start load (as TriggerHandler.load does on each
    start of the consumer-group runner): for the one element of a bounded
    source, the store's OPEN orders as order_updates rows, each the OPEN
    update with the order's stored last seq. Orders older than order_updates'
    retention are thus in the book; replayed beside the log's own updates it
    changes nothing (the book keeps the newest seq per order, and an order
    the log saw final stays closed). Restored from a checkpoint, the source
    is finished and nothing is loaded: the keyed state has the book."""

    def __init__(self, topic: str):
        self.topic = topic  # order_updates, prefixed

    def open(self, runtime_context: RuntimeContext):
        self.host = HandlerHost("triggers-load", OpenOrdersLoad, runtime_context.get_metrics_group())

    def flat_map(self, value):
        self.host.run([])
        states = self.host.handler.states
        print(orjson.dumps({"event": "trigger book seeded", "openOrders": len(states)}).decode(), flush=True)
        for state in states:
            yield Row(k=state.user_id, v=encode_order_update(state, state.transitions[-1], TRIGGER_SOURCE),
                      topic=self.topic, partition=-1, offset=-1, headers={})

    def close(self):
        if hasattr(self, "host"):
            self.host.close()


class TriggerOrders(KeyedCoProcessFunction):
    """market_data (input 1) and order_updates (input 2), both keyed by symbol.

    The symbol's resting orders live in keyed state (MapState orderId -> the
    order, its seq and stopTriggered; the ids of orders seen final; ValueState
    the last tick), checkpointed with the source offsets, so a restore loses
    none. The matching itself is the TriggerBook's: per symbol the function
    keeps a TriggerBook rebuilt from that state on first use (after every
    start or restore) and mirrors every change the book makes back into it. What the book proposes
    goes out as TRIGGER commands, keyed by user; each DAY order gets a
    processing-time timer at its expires_at, which sends EXPIRE.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix

    def open(self, runtime_context: RuntimeContext):
        self.orders = runtime_context.get_map_state(
            MapStateDescriptor("resting-orders", Types.STRING(), Types.STRING()))
        # A new name: state restored from a checkpoint of the unbounded
        # "closed-orders" cannot take a TTL (Flink refuses the migration);
        # starting this one empty forgets closed ids, which is safe.
        closed = MapStateDescriptor("closed-orders-ttl", Types.STRING(), Types.BOOLEAN())
        closed.enable_time_to_live(_closed_orders_ttl())
        self.closed = runtime_context.get_map_state(closed)
        self.last_tick = runtime_context.get_state(ValueStateDescriptor("last-tick", Types.STRING()))
        self.books: dict[str, TriggerBook] = {}  # a cache of the state, per symbol
        metrics = runtime_context.get_metrics_group()
        self.counters = {name: metrics.counter(name) for name in TRIGGER_COUNTERS}
        self.processed = metrics.counter(EVENTS_PROCESSED)

    # -- the book of the current key, rebuilt from state when not cached -----

    def _book(self, symbol: str) -> tuple[TriggerBook, list]:
        book = self.books.get(symbol)
        if book is not None:
            return book, []
        book = TriggerBook()
        last = self.last_tick.value()
        if last:
            tick = orjson.loads(last)
            book.on_tick(symbol, Decimal(tick["price"]), parse_time(tick["time"], "time"))
        _closed_orders(book).update(self.closed.keys())
        proposals, restored = [], 0
        for _, entry in list(self.orders.items()):
            data = orjson.loads(entry)
            # Only OPEN orders are stored; the last tick crossed none of them.
            proposals += book.apply_update(decode_trade_order(data["order"]), OrderStatus.OPEN.value,
                                           data["seq"], data["stopTriggered"])
            restored += 1
        if restored:
            print(orjson.dumps({"event": "trigger book restored", "symbol": symbol,
                                "restingOrders": restored}).decode(), flush=True)
        self.books[symbol] = book
        return book, proposals

    def _commands(self, instructions) -> Iterable[Row]:
        for instruction in instructions:
            yield Row(k=instruction.user_id, v=encode_order_command(instruction, TRIGGER_SOURCE),
                      headers={})

    # -- inputs ----------------------------------------------------------------

    def process_element1(self, row: Row, ctx: KeyedCoProcessFunction.Context):
        self.processed.inc()
        try:
            tick = decode_market_data(decode_envelope(bytes(row["v"] or b"")).payload)
        except EventDecodeError:
            return  # the market-data service dead-letters these
        self.counters["ticks"].inc()
        book, proposals = self._book(ctx.get_current_key())
        proposals += book.on_tick(tick.symbol, tick.price, tick.timestamp)
        self.last_tick.update(orjson.dumps({"price": str(tick.price),
                                            "time": format_time(tick.timestamp)}).decode())
        yield from self._proposed(proposals)

    def process_element2(self, row: Row, ctx: KeyedCoProcessFunction.Context):
        self.processed.inc()
        topic = (row["topic"] or "").removeprefix(self.prefix)
        try:
            update = decode_order_update(decode_envelope(bytes(row["v"] or b"")).payload)
        except EventDecodeError as exc:
            record = log_record(row, topic)
            self.counters[DEAD_LETTERED].inc()
            yield output_tag(dead_letter_topic(topic)), kafka_row(OutboundRecord(
                dead_letter_topic(topic), record.key, record.value, dead_letter_headers(record, str(exc))))
            return
        self.counters["updates"].inc()
        book, proposals = self._book(ctx.get_current_key())
        order_id = update.order.order_id
        proposals += book.apply_update(update.order, update.status, update.seq, update.stop_triggered)
        # Mirror the book: it files an order only on a newer OPEN update, and
        # drops it on a final status or when the last tick already crosses it.
        if order_id not in book:
            self.orders.remove(order_id)
            if order_id in _closed_orders(book) and not self.closed.contains(order_id):
                self.closed.put(order_id, True)
        elif update.status == OrderStatus.OPEN.value:
            stored = self.orders.get(order_id)
            if stored is None or orjson.loads(stored)["seq"] < update.seq:
                self.orders.put(order_id, _resting_entry(update))
                if update.order.expires_at is not None:
                    ctx.timer_service().register_processing_time_timer(
                        _expiry_ms(update.order.expires_at))
        yield from self._proposed(proposals)

    def on_timer(self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext):
        book, proposals = self._book(ctx.get_current_key())
        expiries = book.due(datetime.fromtimestamp(timestamp / 1000, timezone.utc))
        self.counters["expiries"].inc(len(expiries))
        for expiry in expiries:
            self.orders.remove(expiry.order_id)
        yield from self._proposed(proposals)
        yield from self._commands(expiries)

    def _proposed(self, proposals) -> Iterable[Row]:
        for proposal in proposals:
            if self.orders.contains(proposal.order_id):
                self.orders.remove(proposal.order_id)
        if proposals:
            self.counters["triggers"].inc(len(proposals))
        yield from self._commands(proposals)


# -- persistence -----------------------------------------------------------------

def _persistence_handler(resources, outbox: Outbox):
    from ..persistence import PersistenceHandler

    return PersistenceHandler(resources.history, resources.analytics, outbox)


def _tick_persistence_handler(resources, outbox: Outbox):
    from ..tick_persistence import TickPersistenceHandler

    return TickPersistenceHandler(resources.analytics)


class PersistBatch(ScalarFunction):
    """Vectorized (pandas) UDF: one Arrow batch of trade_executed records ->
    one PersistenceHandler call; per record, None once written, or the reason
    it could not be decoded (the job sends those to the dead-letter topic).
    With `ticks`: market_data records -> one TickPersistenceHandler call
    (analytics record_ticks); always None (undecodable ticks are skipped: the
    market-data service dead-letters them)."""

    def __init__(self, topic: str, ticks: bool = False):
        self.topic, self.ticks = topic, ticks

    def open(self, function_context: FunctionContext):
        handler = _tick_persistence_handler if self.ticks else _persistence_handler
        self.host = HandlerHost(self.topic, handler, function_context.get_metric_group())

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


def persist_ticks(topic: str):
    return udf(PersistBatch(topic, ticks=True), result_type=DataTypes.STRING(), func_type="pandas")


def dead_letter_headers_udf(topic: str):
    """The same dlq.* headers the consumer runner's dead letters carry."""
    def headers(original, reason, partition, offset):
        record = LogRecord(topic, partition, offset, "", b"",
                           {k: bytes(v).decode("utf-8", "replace") for k, v in (original or {}).items()
                            if v is not None})
        return {k: v.encode() for k, v in dead_letter_headers(record, reason).items()}
    return udf(headers, result_type=DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES()))
