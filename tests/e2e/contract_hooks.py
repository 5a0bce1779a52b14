"""Schemathesis hooks for tests/e2e/test_api_contract.py (loaded by `st run`
through SCHEMATHESIS_HOOKS, in the fuzzer's process).

They model what the document cannot say, and nothing else:

- An order is accepted (202) before it is processed: a client reads it once
  the platform has. Before reading or canceling an order this run placed, we
  wait until it is readable, as a client would poll; an order that never
  appears still fails `ensure_resource_availability`.
- A pageToken is opaque: only tokens this server issued are valid, which no
  schema can describe. A schema-valid but made-up token answering 400 with
  field pageToken is not a contract failure.
- startDate must be before endDate: a rule across two parameters (stated in
  the operation's description), answered with 400.
- DELETE /v1/orders/{orderId} requests a cancel; the order stays readable
  (as CANCELED, or whatever it became), as its 202 description says. A later
  GET of it answering 200 with the same order is not a use after free.
"""

from __future__ import annotations

import json
import os
import threading
import time

import requests
import schemathesis

ORDER_PATH = "/v1/orders/{orderId}"
_accepted: set[str] = set()
_lock = threading.Lock()


def _error(response) -> dict:
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


@schemathesis.hook
def after_call(context, case, response):
    if (case.operation.method.upper() == "POST" and case.operation.path == "/v1/orders"
            and response.status_code == 202):
        order_id = json.loads(response.content).get("orderId")
        with _lock:
            _accepted.add(order_id)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != ORDER_PATH:
        return
    order_id = (case.path_parameters or {}).get("orderId")
    with _lock:
        placed_here = order_id in _accepted
    if not placed_here:
        return
    base = os.environ["MOCKTRADE_CONTRACT_BASE"]
    headers = {"Authorization": f"Bearer {os.environ['MOCKTRADE_CONTRACT_TOKEN']}"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if requests.get(f"{base}/v1/orders/{order_id}", headers=headers,
                        timeout=5).status_code != 404:
            return
        time.sleep(0.02)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    code = getattr(failure, "code", "")
    if code == "ST202" and response.status_code == 400:
        error = _error(response)
        if error.get("field") == "pageToken" and (case.query or {}).get("pageToken"):
            return False
        if error.get("message") in ("startDate must be before endDate", "start must be before end"):
            return False
    if code == "ST301" and response.status_code == 200:
        free, usage = getattr(failure, "free", ""), getattr(failure, "usage", "")
        if (free.startswith("DELETE /v1/orders/") and usage.startswith("GET /v1/orders/")
                and free.split(" ", 1)[1] == usage.split(" ", 1)[1]):
            return False
    return True
