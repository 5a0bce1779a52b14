"""The trigger job: resting orders meet ticks.

Keyed by symbol: it consumes market_data (as the `trade-triggers` group, so
replicas share the symbols' partitions) and every order update (each replica
reads all of order_updates, a small stream, like a broadcast join), keeps the
open orders in a `TriggerBook`, and sends the portfolio owner an instruction
keyed by user when a tick crosses an order (TRIGGER) or a DAY order's session
closes (EXPIRE). It never touches money: the owner decides, in its log order.

Its state is rebuilt on every start: first the OPEN orders in the portfolio
store, then order_updates from the oldest retained record. Replaying updates
already reflected in the snapshot is harmless (the book keeps the newest
status per order), and anything that happened after the snapshot is in the
log, so the book ends exact. A proposal sent twice (a redelivered tick) is
decided once by the owner.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

from .. import tracing
from ..domain.events import (TOPIC_MARKET_DATA, TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES,
                             EventDecodeError, decode_envelope, decode_market_data,
                             OrderUpdate, decode_order_update, encode_order_command)
from ..domain.lifecycle import Instruction, OrderStatus
from ..domain.model import utc_now
from ..domain.triggers import TriggerBook, never_rests
from ..ports import EventLog, LogRecord, PortfolioStore
from .deadletter import dead_letter
from .runner import run_consumer

log = logging.getLogger("mocktrade.triggers")

SOURCE = "trade-triggers"
TRIGGER_GROUP = "trade-triggers"
EXPIRY_CHECK_SECONDS = 0.1


@dataclass
class TriggerStats:
    ticks: int = 0
    updates: int = 0
    triggers: int = 0
    expiries: int = 0
    dead_lettered: int = 0


class TriggerHandler:
    def __init__(self, portfolios: PortfolioStore, event_log: EventLog,
                 clock: Callable = utc_now):
        self._portfolios, self._log, self._clock = portfolios, event_log, clock
        self.book = TriggerBook()
        self.stats = TriggerStats()
        # With tracing on: each resting order's trace context (from its order
        # updates), so the TRIGGER or EXPIRE sent for it joins the order's
        # trace. Kept only while tracing is on: the book stays lean otherwise.
        self._trace_contexts: dict[str, tracing.Carrier] = {}

    async def load(self) -> None:
        """Start from the store's OPEN orders (older ones may be past retention)."""
        for count, state in enumerate(await self._portfolios.open_orders(), 1):
            await self._send(self.book.apply_update(state.order, state.status.value,
                                                    state.last_seq, state.stop_triggered))
            if count % 1000 == 0:
                await asyncio.sleep(0)  # the other jobs of this process keep going
        log.info("trigger book loaded", extra={"openOrders": len(self.book)})

    async def handle_ticks(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            try:
                tick = decode_market_data(decode_envelope(record.value).payload)
            except EventDecodeError:
                continue  # the market-data service dead-letters these
            self.stats.ticks += 1
            proposals = self.book.on_tick(tick.symbol, tick.price, tick.timestamp)
            self.stats.triggers += len(proposals)
            await self._send(proposals)

    async def handle_updates(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            try:
                payload = decode_envelope(record.value).payload
                if never_rests(payload.get("type")):
                    # Most updates are of market orders (no "type" field, or
                    # MARKET), which the book ignores (TriggerBook.apply_update):
                    # decoding them into orders was 6-16% of the execution
                    # process's CPU.
                    self.stats.updates += 1
                    continue
                update = decode_order_update(payload)
            except EventDecodeError as exc:
                await dead_letter(self._log, record, str(exc))
                self.stats.dead_lettered += 1
                continue
            self.stats.updates += 1
            if tracing.enabled():
                self._remember_trace(record, update)
            proposals = self.book.apply_update(update.order, update.status, update.seq,
                                               update.stop_triggered)
            self.stats.triggers += len(proposals)
            await self._send(proposals)

    async def expire_due(self) -> None:
        expiries = self.book.due(self._clock())
        self.stats.expiries += len(expiries)
        await self._send(expiries)

    def _remember_trace(self, record: LogRecord, update: OrderUpdate) -> None:
        order_id = update.order.order_id
        if OrderStatus(update.status).final:
            self._trace_contexts.pop(order_id, None)
        elif order_id not in self._trace_contexts:
            context = tracing.record_context(record)
            if context:
                self._trace_contexts[order_id] = context

    async def _send(self, instructions: Sequence[Instruction]) -> None:
        for instruction in instructions:
            if not tracing.enabled():
                await self._log.publish(TOPIC_ORDER_COMMANDS, instruction.user_id,
                                        encode_order_command(instruction, SOURCE))
                continue
            await self._send_traced(instruction)

    async def _send_traced(self, instruction: Instruction) -> None:
        """The command as a child of the order's trace (a new trace if the
        order's context is unknown: placed before this run's book was built)."""
        order_id = getattr(instruction, "order_id", None)
        origin = self._trace_contexts.get(order_id) if order_id else None
        with tracing.span(f"publish {TOPIC_ORDER_COMMANDS}", tracing.PRODUCER, origin,
                          tracing.publish_attributes(
                              TOPIC_ORDER_COMMANDS, instruction.user_id,
                              **tracing.order_attributes(order_id, instruction.user_id),
                              **{"mocktrade.command": type(instruction).__name__})) as span:
            context = tracing.carrier(span)
            await self._log.publish(TOPIC_ORDER_COMMANDS, instruction.user_id,
                                    encode_order_command(instruction, SOURCE, context), context)


async def run_triggers(handler: TriggerHandler, event_log: EventLog) -> None:
    """The consumer-group runner of the trigger job (embedded log or Kafka)."""
    await handler.load()

    async def expiries() -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            await handler.expire_due()

    # A group of its own per run that never commits: every run reads all
    # retained updates, and an abandoned group pins no retention.
    await asyncio.gather(
        run_consumer(event_log, TOPIC_ORDER_UPDATES, f"{TRIGGER_GROUP}-book-{uuid.uuid4().hex[:12]}",
                     handler.handle_updates, reset="earliest", commit=False),
        run_consumer(event_log, TOPIC_MARKET_DATA, TRIGGER_GROUP, handler.handle_ticks,
                     reset="latest", poll_timeout=0.1),
        expiries())
