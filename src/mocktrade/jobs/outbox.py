"""An output port for the handlers that collects instead of publishing.

The handlers publish their results (trade_executed events, dead letters)
through whatever `EventLog` they are given. The consumer-group runner gives
them the Kafka or SQLite log itself; a Flink operator gives them an Outbox,
then hands what was collected to the job's Kafka sinks, which make it durable
before a checkpoint completes (the sink flushes at the barrier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    topic: str                  # without the table prefix, as handlers name topics
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Outbox:
    def __init__(self) -> None:
        self._records: list[OutboundRecord] = []

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        self._records.append(OutboundRecord(topic, key, value, dict(headers or {})))

    async def publish_many(self, topic: str, records) -> None:
        for key, value, headers in records:
            await self.publish(topic, key, value, headers)

    def drain(self) -> list[OutboundRecord]:
        records, self._records = self._records, []
        return records

    def discard(self) -> None:
        """Forget a partial batch (a retried batch publishes its records again)."""
        self._records.clear()
