"""Records a consumer cannot parse go to `<topic>.dlq`, never silently away."""

from __future__ import annotations

import logging

from .. import metrics
from ..ports import EventLog, LogRecord

log = logging.getLogger("mocktrade.deadletter")


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def dead_letter_headers(record: LogRecord, reason: str) -> dict[str, str]:
    """The record's own headers, and where it came from and why it is here."""
    headers = dict(record.headers)
    headers.update({"dlq.reason": reason[:500], "dlq.topic": record.topic,
                    "dlq.partition": str(record.partition), "dlq.offset": str(record.offset)})
    return headers


async def dead_letter(event_log: EventLog, record: LogRecord, reason: str) -> None:
    headers = dead_letter_headers(record, reason)
    await event_log.publish(dead_letter_topic(record.topic), record.key, record.value, headers)
    metrics.dead_lettered(record.topic)
    log.warning("record dead-lettered",
                extra={"topic": record.topic, "offset": record.offset, "reason": reason})
