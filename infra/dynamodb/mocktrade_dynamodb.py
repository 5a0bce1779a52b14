"""A DynamoDB-compatible server for mocktrade's local stack: moto's server,
made durable and serial.

Runs with the interpreter of the engine's own venv (infra/dynamodb/target/venv,
built from requirements.txt), never with the project's.

moto keeps its state in memory and handles requests on many threads. Two
things are added around its WSGI application:

* one lock around every request, so each call (a TransactWriteItems above all)
  runs alone: the all-or-nothing, conditional semantics the portfolio store
  relies on hold under concurrent clients;
* a journal: every successful DynamoDB call that can change state is appended
  (JSON line, flushed) to --journal, and replayed in order at start-up, so the
  data survives a restart or a crash of this process, much as Redis' AOF does.

    python mocktrade_dynamodb.py --host 127.0.0.1 --port 8001 --journal DIR/journal.jsonl
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import sys
import threading
import time

from werkzeug.serving import run_simple
from werkzeug.test import EnvironBuilder

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

# Operations whose success may change what a later read sees.
MUTATING_OPERATIONS = frozenset(
    {
        "CreateTable",
        "DeleteTable",
        "UpdateTable",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "ExecuteStatement",
        "BatchExecuteStatement",
        "ExecuteTransaction",
        "UpdateTimeToLive",
        "TagResource",
        "UntagResource",
        "UpdateContinuousBackups",
        "CreateGlobalTable",
        "UpdateGlobalTable",
    }
)

# Request headers kept in the journal: enough for moto to route the call and
# to pick the same account and region on replay.
JOURNALED_HEADERS = ("Authorization", "X-Amz-Target", "Content-Type", "X-Amz-Date", "Host")


class JournaledSerialApp:
    def __init__(self, app, journal_path: str, fsync: bool) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._journal_path = journal_path
        self._fsync = fsync
        self._journal = None

    def replay(self) -> int:
        if not os.path.exists(self._journal_path):
            return 0
        count = 0
        with open(self._journal_path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn last line of a crash: it never answered 200
                entry = json.loads(line)
                status, _ = self._call(
                    EnvironBuilder(
                        path="/",
                        method="POST",
                        headers=entry["headers"],
                        data=base64.b64decode(entry["body"]),
                    ).get_environ()
                )
                if not status.startswith("200"):
                    print(f"journal replay: entry {count} answered {status}", file=sys.stderr)
                count += 1
        return count

    def open_journal(self) -> None:
        self._truncate_torn_tail()
        self._journal = open(self._journal_path, "ab")

    def _truncate_torn_tail(self) -> None:
        if not os.path.exists(self._journal_path):
            return
        with open(self._journal_path, "rb+") as handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                handle.truncate(end)

    def _call(self, environ) -> tuple[str, list[bytes]]:
        captured: dict[str, object] = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        body = list(self._app(environ, start_response))
        return str(captured.get("status", "500")), body

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target.rsplit(".", 1)[-1]
        journaled = target.startswith("DynamoDB_") and operation in MUTATING_OPERATIONS
        body = b""
        if journaled:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        captured: dict[str, object] = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        with self._lock:
            chunks = b"".join(self._app(environ, capture))
            status = str(captured.get("status", "500 Internal Server Error"))
            if journaled and status.startswith("200") and self._journal is not None:
                self._append(environ, body)
        start_response(status, captured.get("headers", []))
        return [chunks]

    def _append(self, environ, body: bytes) -> None:
        headers = {}
        for name in JOURNALED_HEADERS:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if name == "Content-Type":
                value = environ.get("CONTENT_TYPE", value)
            if value:
                headers[name] = value
        entry = {"headers": headers, "body": base64.b64encode(body).decode("ascii")}
        self._journal.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        self._journal.flush()
        if self._fsync:
            os.fsync(self._journal.fileno())


class QuietRequestHandler(MotoRequestHandler):
    """No access-log line per request; errors are still logged."""

    def log_request(self, code="-", size="-") -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--journal", required=True, help="append-only journal file")
    parser.add_argument("--fsync", action="store_true", help="fsync the journal after each write")
    args = parser.parse_args(argv)

    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    dispatcher = DomainDispatcherApplication(create_backend_app)
    app = JournaledSerialApp(dispatcher, args.journal, args.fsync)
    started = time.monotonic()
    replayed = app.replay()
    app.open_journal()
    print(
        f"mocktrade-dynamodb: replayed {replayed} journal entries in "
        f"{time.monotonic() - started:.2f}s; serving http://{args.host}:{args.port}",
        flush=True,
    )
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=QuietRequestHandler,
    )


if __name__ == "__main__":
    main()
