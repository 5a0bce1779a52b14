"""One trace per order across real processes: `mocktrade up` (the HTTP process
and its two job processes) and `up --distributed` (a process per service
and job, real Kafka between them). Every process appends its finished spans
to one JSON-lines file (MOCKTRADE_TRACE_FILE, the SDK's span data, written by
mocktrade.tracing.JsonLinesSpanExporter)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from .conftest import RunningPlatform, wait_for

pytestmark = pytest.mark.e2e

STAGES = ("POST /v1/orders", "publish trade_orders", "process trade_orders",
          "publish trade_executed", "publish order_updates", "process trade_executed")


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def traced(request, tmp_path_factory):
    engines = request.getfixturevalue("real_engines") if request.param == "distributed" else None
    base = tmp_path_factory.mktemp("traces")
    trace_file = base / "spans.jsonl"
    running = RunningPlatform(base / "data", engines=engines,
                              env={"MOCKTRADE_TRACE_FILE": str(trace_file)}).start()
    with running.client("alice") as alice:  # orders need a price (the feed's first ticks)
        for symbol in ("MOCKAAPL", "MOCKMSFT"):
            wait_for(lambda: alice.get(f"/v1/prices/{symbol}").status_code == 200, timeout=60,
                     interval=0.2)
    yield running, trace_file
    running.stop()


def spans_of(trace_file: Path, trace_id: str) -> list[dict]:
    if not trace_file.exists():
        return []
    spans = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
    return [s for s in spans if s["traceId"] == trace_id]


def whole_trace(trace_file: Path, trace_id: str) -> dict[str, dict]:
    """The trace's spans by name, once every stage has finished."""
    def complete():
        named = {s["name"]: s for s in spans_of(trace_file, trace_id)}
        return named if all(stage in named for stage in STAGES) else None
    return wait_for(complete, timeout=60, interval=0.2)


def test_an_order_is_one_trace_from_the_request_to_persistence(traced):
    platform, trace_file = traced
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with platform.client("alice") as alice:
        placed = alice.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"},
                            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"})
        assert placed.status_code == 202, placed.text
    order_id = placed.json()["orderId"]
    named = whole_trace(trace_file, trace_id)

    server, publish = named["POST /v1/orders"], named["publish trade_orders"]
    process, executed = named["process trade_orders"], named["publish trade_executed"]
    updates, persist = named["publish order_updates"], named["process trade_executed"]
    # Parent links, across the process boundaries (Kafka or the embedded log).
    assert server["parentSpanId"] == caller_span and server["kind"] == "SERVER"
    assert publish["parentSpanId"] == server["spanId"] and publish["kind"] == "PRODUCER"
    assert process["parentSpanId"] == publish["spanId"] and process["kind"] == "CONSUMER"
    assert executed["parentSpanId"] == updates["parentSpanId"] == process["spanId"]
    assert persist["parentSpanId"] == executed["spanId"] and persist["kind"] == "CONSUMER"
    assert server["attributes"]["http.response.status_code"] == 202
    for span in (publish, process, executed, persist):
        assert span["attributes"]["mocktrade.order_id"] == order_id
        assert span["attributes"]["mocktrade.user_id"] == "alice"
    assert persist["attributes"]["mocktrade.status"] == "EXECUTED"
    assert isinstance(process["attributes"]["messaging.kafka.offset"], int)
    # Each stage reports as the process that ran it (embedded too: execution
    # and persistence run in job processes of their own).
    assert server["service"] == "mocktrade-gateway"
    assert process["service"] == "mocktrade-execution"
    assert persist["service"] == "mocktrade-persistence"


def test_an_order_without_a_caller_context_starts_its_own_trace(traced):
    platform, trace_file = traced
    with platform.client("alice") as alice:
        placed = alice.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "1", "side": "BUY"})
        assert placed.status_code == 202, placed.text
    order_id = placed.json()["orderId"]

    def server_span():
        if not trace_file.exists():
            return None
        for line in trace_file.read_text().splitlines():
            span = json.loads(line)
            if span["name"] == "publish trade_orders" and \
                    span["attributes"].get("mocktrade.order_id") == order_id:
                return span
        return None
    trace_id = wait_for(server_span, timeout=30, interval=0.2)["traceId"]
    named = whole_trace(trace_file, trace_id)
    assert named["POST /v1/orders"]["parentSpanId"] is None  # the root
    assert {s["traceId"] for s in named.values()} == {trace_id}
