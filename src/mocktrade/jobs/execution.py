"""Trade execution: each accepted order becomes exactly one trade_executed event.

The portfolio store's ledger makes `apply_execution` idempotent per orderId,
and the event is derived from the ledger entry, so redelivering an order
(after a crash before the offset commit) re-emits the identical event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from ..domain.events import (TOPIC_TRADE_EXECUTED, EventDecodeError, decode_envelope,
                             decode_trade_order, encode_trade_executed)
from ..domain.model import Execution, utc_now
from ..ports import EventLog, LogRecord, PortfolioStore, PriceCache
from .deadletter import dead_letter

log = logging.getLogger("mocktrade.execution")


@dataclass
class ExecutionStats:
    executed: int = 0
    failed: int = 0
    dead_lettered: int = 0


class ExecutionHandler:
    def __init__(self, portfolios: PortfolioStore, prices: PriceCache, event_log: EventLog,
                 clock: Callable = utc_now):
        self._portfolios, self._prices, self._log, self._clock = portfolios, prices, event_log, clock
        self.stats = ExecutionStats()

    async def handle(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            await self.handle_one(record)

    async def handle_one(self, record: LogRecord) -> Execution | None:
        try:
            order = decode_trade_order(decode_envelope(record.value).payload)
        except EventDecodeError as exc:
            await dead_letter(self._log, record, str(exc))
            self.stats.dead_lettered += 1
            return None
        tick = await self._prices.get_price(order.symbol)
        execution = await self._portfolios.apply_execution(
            order, tick.price if tick else None, self._clock())
        headers = {k: v for k, v in record.headers.items() if k == "traceparent"}
        await self._log.publish(TOPIC_TRADE_EXECUTED, execution.user_id,
                                encode_trade_executed(execution), headers)
        if execution.executed:
            self.stats.executed += 1
        else:
            self.stats.failed += 1
        return execution
