"""Structured JSON log lines, with orderId/userId/traceId when a caller knows them."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class DroppingStreamHandler(logging.StreamHandler):
    """A log line that cannot be written (the log file's disk is full) is
    dropped and counted, never raised: the platform keeps serving and logs
    again once there is room. logging's default would print a traceback per
    failed line to the same full stream."""

    dropped = 0

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            type(self).dropped += 1
            return
        super().handleError(record)  # a formatting bug is still reported


def configure(level: str = "INFO") -> None:
    handler = DroppingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would cost more than the request at our rates.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request at INFO ("HTTP Request: GET .../readyz"): the
    # launcher's readiness polls and the search adapter's calls would flood.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
