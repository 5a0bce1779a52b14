"""A DynamoDB-compatible server for mocktrade's local stack: moto's server,
made serial, transactional at scale, and durable.

Runs with the interpreter of the engine's own venv (infra/dynamodb/target/venv,
built from requirements.txt), never with the project's.

moto keeps its state in memory and handles requests on many threads. Around
its WSGI application this adds:

* one lock around every request, so each call (a TransactWriteItems above all)
  runs alone: the all-or-nothing, conditional semantics the portfolio store
  relies on hold under concurrent clients;
* TransactWriteItems in two phases (all conditions against the state before
  the transaction, as DynamoDB does; then the writes), backing up only the
  items it touches. moto's own deep-copies every table it touches on every
  transaction, which makes a transaction cost grow with the table (about 1
  transaction/s at 10,000 items);
* durability, in --data-dir: every successful call that can change state is
  appended to a journal (JSON line, flushed) before it is answered; at start
  the last snapshot (a pickle of moto's tables) is loaded and the journal
  replayed; after start-up and at a clean stop (SIGTERM) a new snapshot is
  written and a new journal generation begun, so a restart costs the size of
  the data, not of its history. A crash loses nothing that was answered.

    python mocktrade_dynamodb.py --host 127.0.0.1 --port 9400 --data-dir DIR
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import os
import pickle
import signal
import sys
import threading
import time

from werkzeug.serving import run_simple
from werkzeug.test import EnvironBuilder

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
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


TRANSACT_OPERATIONS = ("ConditionCheck", "Put", "Delete", "Update")


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict]) -> None:
    """TransactWriteItems: check every condition, then write, else change nothing.

    Runs under the server-wide lock, so nothing interleaves with it.
    """
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    operations, seen = [], set()
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in TRANSACT_OPERATIONS:
            raise MockValidationException(f"Unsupported transaction operation {op_type}")
        key = op.get("Key")
        if op_type == "Put":
            table = self.get_table(op["TableName"])
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        identity = (str(op["TableName"]), str(dict(sorted(key.items()))))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        operations.append((op_type, op, key))

    # Phase 1: every condition, against the state before the transaction.
    errors, currents = [], []
    for op_type, op, key in operations:
        current, failure = None, (None, None, None)
        try:
            current = self.get_item(op["TableName"], key)
            if op.get("ConditionExpression") is not None:
                condition = get_filter_expression(
                    op["ConditionExpression"], op.get("ExpressionAttributeNames"),
                    op.get("ExpressionAttributeValues"))
                if not condition.expr(current):
                    old = None
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        old = current.to_json()["Attributes"]
                    failure = ("ConditionalCheckFailed", "The conditional request failed", old)
        except MockValidationException:
            raise
        except Exception as exc:  # noqa: BLE001 - reported per item, as DynamoDB does
            failure = (type(exc).__name__, str(exc), None)
        errors.append(failure)
        currents.append(current)
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    # Phase 2: the writes; on any failure, put back the items touched so far.
    backups = []
    try:
        for (op_type, op, key), current in zip(operations, currents):
            if op_type == "ConditionCheck":
                continue
            backups.append((op["TableName"], key, copy.deepcopy(current)))
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"])
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key)
            else:
                self.update_item(
                    op["TableName"], key, update_expression=op["UpdateExpression"],
                    expression_attribute_names=op.get("ExpressionAttributeNames"),
                    expression_attribute_values=op.get("ExpressionAttributeValues"))
    except Exception:
        for table_name, key, before in reversed(backups):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before.to_json()["Attributes"])
        raise


DynamoDBBackend.transact_write_items = transact_write_items


class DurableStore:
    """Snapshot + journal generations in one directory.

    snapshot.pickle holds {"generation": G, "tables": {(account, region): tables}};
    journal-G.jsonl holds the calls made after that snapshot. Writing snapshot
    G+1 (atomically, by rename) before opening journal-(G+1) means a crash at
    any point leaves either (G, journal-G) or (G+1, nothing yet): never a
    journal replayed twice.
    """

    def __init__(self, directory: str, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.generation = 0
        self._journal = None
        os.makedirs(directory, exist_ok=True)

    def _journal_path(self, generation: int) -> str:
        return os.path.join(self.directory, f"journal-{generation}.jsonl")

    def load_snapshot(self) -> int:
        path = os.path.join(self.directory, "snapshot.pickle")
        if not os.path.exists(path):
            return 0
        with open(path, "rb") as handle:
            snapshot = pickle.load(handle)
        self.generation = snapshot["generation"]
        for (account, region), tables in snapshot["tables"].items():
            dynamodb_backends[account][region].tables = tables
        return sum(len(tables) for tables in snapshot["tables"].values())

    def journal_entries(self):
        path = self._journal_path(self.generation)
        if not os.path.exists(path):
            return
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    return  # torn last line of a crash: that call was never answered
                yield json.loads(line)

    def checkpoint(self) -> None:
        """Snapshot the current state as a new generation and start its journal."""
        state = {}
        for account, regions in dynamodb_backends.items():
            for region, backend in regions.items():
                if backend.tables:
                    state[(account, region)] = backend.tables
        snapshot = {"generation": self.generation + 1, "tables": state}
        tmp = os.path.join(self.directory, "snapshot.pickle.tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(snapshot, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, os.path.join(self.directory, "snapshot.pickle"))
        if self._journal is not None:
            self._journal.close()
        self.generation += 1
        self._journal = open(self._journal_path(self.generation), "ab")
        for name in os.listdir(self.directory):
            if name.startswith("journal-") and name != os.path.basename(self._journal_path(self.generation)):
                os.unlink(os.path.join(self.directory, name))

    def append(self, entry: dict) -> None:
        self._journal.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        self._journal.flush()
        if self.fsync:
            os.fsync(self._journal.fileno())


class SerialJournaledApp:
    def __init__(self, app, store: DurableStore) -> None:
        self._app = app
        self._store = store
        self.lock = threading.Lock()

    def recover(self) -> tuple[int, int]:
        """Load the snapshot and replay the journal; returns (tables, calls replayed)."""
        tables = self._store.load_snapshot()
        replayed = 0
        for entry in self._store.journal_entries():
            environ = EnvironBuilder(path="/", method="POST", headers=entry["headers"],
                                     data=base64.b64decode(entry["body"])).get_environ()
            status, _headers, _body = self._call(environ)
            if not status.startswith("200"):
                print(f"journal replay: call {replayed} answered {status}", file=sys.stderr)
            replayed += 1
        return tables, replayed

    def checkpoint(self) -> None:
        with self.lock:
            self._store.checkpoint()

    def _call(self, environ):
        captured: dict[str, object] = {}

        def start_response(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self._app(environ, start_response))
        return str(captured.get("status", "500 Internal Server Error")), captured.get("headers", []), body

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        journaled = target.startswith("DynamoDB_") and target.rsplit(".", 1)[-1] in MUTATING_OPERATIONS
        body = b""
        if journaled:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        with self.lock:
            status, headers, payload = self._call(environ)
            if journaled and status.startswith("200"):
                self._store.append({"headers": _journal_headers(environ),
                                    "body": base64.b64encode(body).decode("ascii")})
        start_response(status, headers)
        return [payload]


def _journal_headers(environ) -> dict[str, str]:
    headers = {}
    for name in JOURNALED_HEADERS:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if name == "Content-Type":
            value = environ.get("CONTENT_TYPE", value)
        if value:
            headers[name] = value
    return headers


class QuietRequestHandler(MotoRequestHandler):
    """No access-log line per request; errors are still logged."""

    def log_request(self, code="-", size="-") -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--data-dir", required=True, help="snapshot and journal directory")
    parser.add_argument("--fsync", action="store_true", help="fsync the journal after each write")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    app = SerialJournaledApp(DomainDispatcherApplication(create_backend_app),
                             DurableStore(args.data_dir, args.fsync))
    started = time.monotonic()
    tables, replayed = app.recover()
    app.checkpoint()
    print(f"mocktrade-dynamodb: {tables} tables from the snapshot, {replayed} journal calls replayed, "
          f"checkpointed in {time.monotonic() - started:.2f}s; serving http://{args.host}:{args.port}",
          flush=True)

    def stop(_signum, _frame) -> None:
        app.checkpoint()  # waits for the call in flight, then snapshots
        print("mocktrade-dynamodb: checkpointed; stopping", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_simple(args.host, args.port, app, threaded=True, request_handler=QuietRequestHandler)


if __name__ == "__main__":
    main()
