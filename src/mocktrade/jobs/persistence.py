"""Persistence: trade_executed events into history (search) and analytics.

Both stores are idempotent on the orderId, so a batch written twice (crash
before the offset commit) leaves them as if it were written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
        executions: dict[str, Execution] = {}
        for record in records:
            try:
                execution = decode_trade_executed(decode_envelope(record.value).payload)
            except EventDecodeError as exc:
                await dead_letter(self._log, record, str(exc))
                self.stats.dead_lettered += 1
                continue
            executions[execution.order_id] = execution
        if not executions:
            return
        batch = list(executions.values())
        await self._history.index(batch)
        await self._analytics.record(batch)
        self.stats.persisted += len(batch)
