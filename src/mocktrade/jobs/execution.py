"""Trade execution: the portfolio owner. Every accepted order becomes exactly
one trade_executed event, and every change to a user's money goes through here.

It consumes two topics keyed by userId: trade_orders (new orders) and
order_commands (cancels, trigger fills, expiries, resets). Each record is one
instruction, applied by the portfolio store in one idempotent step (a batch
of them in one transaction where the store can: PortfolioStore.apply_many);
what the step changed is published: each order transition to order_updates,
each order that became final to trade_executed. A redelivered record (after
a crash before the offset commit) is a replay: the store changes nothing and
hands back the same events, with the same eventIds, to publish again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from time import time_ns
from typing import Callable, Sequence

from ..domain.events import (TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES, TOPIC_TRADE_EXECUTED,
                             EventDecodeError, decode_envelope, decode_order_command,
                             decode_trade_order, encode_order_update, encode_trade_executed,
                             order_view)
from ..domain.lifecycle import Instruction, PlaceOrder, Step, TriggerOrder
from .. import metrics, tracing
from ..domain.model import Execution, utc_now
from ..ports import Application, EventLog, LogRecord, PortfolioStore, PriceCache
from .deadletter import dead_letter

log = logging.getLogger("mocktrade.execution")


@dataclass
class ExecutionStats:
    executed: int = 0
    failed: int = 0
    canceled: int = 0
    expired: int = 0
    opened: int = 0
    dead_lettered: int = 0


def decode_instruction(record: LogRecord) -> Instruction:
    payload = decode_envelope(record.value).payload
    if record.topic.endswith(TOPIC_ORDER_COMMANDS):
        return decode_order_command(payload)
    return PlaceOrder(decode_trade_order(payload))


class ExecutionHandler:
    def __init__(self, portfolios: PortfolioStore, prices: PriceCache, event_log: EventLog,
                 clock: Callable = utc_now):
        self._portfolios, self._prices, self._log, self._clock = portfolios, prices, event_log, clock
        self.stats = ExecutionStats()

    async def handle(self, records: Sequence[LogRecord]) -> None:
        """Apply a batch in one store step, then publish what it produced,
        one batch per topic.

        Publishing after the whole batch is safe: the offsets are committed
        only after this returns, so a crash in between redelivers the batch,
        whose steps are then replays that hand back the same events.
        """
        started = time_ns()  # the start of each record's processing span
        decoded: list[tuple[LogRecord, Instruction]] = []
        for record in records:
            instruction = await self._decode(record)
            if instruction is not None:
                decoded.append((record, instruction))
        # Prices are read before the store step: no await may fall inside
        # the store's transaction, and a price a few microseconds older is
        # the same price the per-order path read just before its step.
        # One price read per symbol per batch: in the embedded job process a
        # read is a SQLite query, and a batch holds many orders per symbol.
        prices: dict[str, Decimal | None] = {}
        applications = [Application(instruction, await self._price_for(instruction, prices),
                                    self._clock())
                        for _, instruction in decoded]
        steps = await self._portfolios.apply_many(applications) if applications else []
        outbound: dict[str, list] = {}
        spans: list = []
        for (record, _), step in zip(decoded, steps):
            spans += self._collect(record, step, outbound, started)
        await self._publish(outbound)
        tracing.end_all(spans)  # a failed batch's spans are dropped; its retry has its own

    async def handle_one(self, record: LogRecord) -> Execution | None:
        """Apply one instruction and publish; the final outcome of the order it
        closed, if any."""
        started = time_ns()
        instruction = await self._decode(record)
        if instruction is None:
            return None
        step = await self._portfolios.apply(instruction, await self._price_for(instruction),
                                            self._clock())
        outbound: dict[str, list] = {}
        spans = self._collect(record, step, outbound, started)
        await self._publish(outbound)
        tracing.end_all(spans)
        return step.outcomes[-1] if step.outcomes else None

    async def _publish(self, outbound: dict[str, list]) -> None:
        """Every topic's batch at once: the embedded log writes appends that
        wait together in one transaction (order_updates and trade_executed:
        one commit per execution batch, not two), Kafka has both in flight.
        Each key keeps its order within its topic; no order across topics is
        promised. Every publish is waited for before a failure is raised, so
        a retried batch never races a publish still in flight."""
        results = await asyncio.gather(*(self._log.publish_many(topic, batch)
                                         for topic, batch in outbound.items()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _decode(self, record: LogRecord) -> Instruction | None:
        try:
            return decode_instruction(record)
        except EventDecodeError as exc:
            await dead_letter(self._log, record, str(exc))
            self.stats.dead_lettered += 1
            return None

    def _collect(self, record: LogRecord, step: Step, outbound: dict[str, list],
                 started: int | None = None) -> list:
        """Queue what `step` produced, carrying the record's trace context on
        (headers and envelope). With tracing on, the record's processing span
        and a publish span per topic; returned, to end once published."""
        received = tracing.record_context(record)
        spans = _execution_spans(record, step, received, started) if tracing.enabled() else {}
        views: dict[int, dict] = {}  # order_view per state: a fill emits two transitions
        for state, transition in step.new_transitions:
            context = _context_for(spans, TOPIC_ORDER_UPDATES, received)
            view = views.get(id(state))
            if view is None:
                view = views[id(state)] = order_view(state)
            outbound.setdefault(TOPIC_ORDER_UPDATES, []).append(
                (state.user_id, encode_order_update(state, transition, trace_context=context,
                                                    view=view), context))
        for outcome in step.outcomes:
            context = _context_for(spans, TOPIC_TRADE_EXECUTED, received)
            outbound.setdefault(TOPIC_TRADE_EXECUTED, []).append(
                (outcome.user_id, encode_trade_executed(outcome, trace_context=context), context))
        self._count(step)
        return list(spans.values())

    async def _price_for(self, instruction: Instruction,
                         read: dict[str, Decimal | None] | None = None) -> Decimal | None:
        """`read`: prices already read for this batch, by symbol (added to)."""
        if isinstance(instruction, TriggerOrder):
            return instruction.price  # a trigger fills at the tick that crossed the order
        if isinstance(instruction, PlaceOrder):
            symbol = instruction.order.symbol
            if read is not None and symbol in read:
                return read[symbol]
            tick = await self._prices.get_price(symbol)
            price = tick.price if tick else None
            if read is not None:
                read[symbol] = price
            return price
        return None

    def _count(self, step: Step) -> None:
        if step.replay:
            return
        for outcome in step.outcomes:
            status = outcome.status.value
            metrics.order_final(status, outcome.order_timestamp, outcome.execution_timestamp)
            if outcome.executed:
                self.stats.executed += 1
            elif status == "CANCELED":
                self.stats.canceled += 1
            elif status == "EXPIRED":
                self.stats.expired += 1
            else:
                self.stats.failed += 1
        self.stats.opened += sum(1 for _, t in step.new_transitions if t.status.value == "OPEN")


def _execution_spans(record: LogRecord, step: Step, received: dict[str, str],
                     started: int | None) -> dict[str, object]:
    """The record's processing span ("process"), and under it one publish span
    per topic the step writes to, keyed by topic."""
    subject = step.outcomes[0] if step.outcomes else \
        (step.new_transitions[0][0] if step.new_transitions else None)  # the order it moved
    order = tracing.order_attributes(getattr(subject, "order_id", None), record.key)
    process = tracing.start(f"process {record.topic}", tracing.CONSUMER, received,
                            {**tracing.record_attributes(record, **order),
                             "mocktrade.replay": step.replay}, start_time=started)
    spans: dict[str, object] = {"process": process}
    topics = ([TOPIC_ORDER_UPDATES] if step.new_transitions else []) + \
        ([TOPIC_TRADE_EXECUTED] if step.outcomes else [])
    for topic in topics:
        spans[topic] = tracing.start(f"publish {topic}", tracing.PRODUCER, tracing.carrier(process),
                                     tracing.publish_attributes(topic, record.key, **order))
    return spans


def _context_for(spans: dict[str, object], topic: str, received: dict[str, str]) -> dict[str, str]:
    """The context an event for `topic` carries: its publish span's, or with
    tracing off the context the record came with."""
    return tracing.carrier(spans.get(topic), received)
