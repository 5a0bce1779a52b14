"""Persistence: trade_executed events into history (search) and analytics.

Both stores are idempotent on the orderId, so a batch written twice (crash
before the offset commit) leaves them as if it were written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .. import tracing
from ..domain.events import EventDecodeError, decode_envelope, decode_trade_executed
from ..domain.model import Execution
from ..ports import Analytics, EventLog, LogRecord, TradeHistory
from .deadletter import dead_letter


@dataclass
class PersistenceStats:
    persisted: int = 0
    dead_lettered: int = 0


class PersistenceHandler:
    def __init__(self, history: TradeHistory, analytics: Analytics, event_log: EventLog):
        self._history, self._analytics, self._log = history, analytics, event_log
        self.stats = PersistenceStats()

    async def handle(self, records: Sequence[LogRecord]) -> None:
        """With tracing on, each record's span (a child of the execution that
        published it) lasts until the whole batch is written."""
        executions: dict[str, Execution] = {}
        spans = []
        try:
            for record in records:
                try:
                    execution = decode_trade_executed(decode_envelope(record.value).payload)
                except EventDecodeError as exc:
                    await dead_letter(self._log, record, str(exc))
                    self.stats.dead_lettered += 1
                    continue
                executions[execution.order_id] = execution
                if tracing.enabled():
                    spans.append(_record_span(record, execution))
            if not executions:
                return
            batch = list(executions.values())
            await self._history.index(batch)
            await self._analytics.record(batch)
            self.stats.persisted += len(batch)
        except BaseException as exc:
            for span in spans:
                tracing.end(span, exc)
            raise
        tracing.end_all(spans)


def _record_span(record: LogRecord, execution: Execution):
    return tracing.start(
        f"process {record.topic}", tracing.CONSUMER, tracing.record_context(record),
        tracing.record_attributes(record, **tracing.order_attributes(execution.order_id,
                                                                     execution.user_id),
                                  **{"mocktrade.status": execution.status.value,
                                     "mocktrade.stores": "history,analytics"}))
