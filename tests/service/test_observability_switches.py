"""The switches read at process start: OTLP export of traces (to a real
OTLP/HTTP receiver here, decoding the protobuf the SDK's exporter sends) and
MOCKTRADE_METRICS=off. Each case runs in a fresh interpreter, as a process
of the platform would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPAN_SCRIPT = """
from mocktrade import tracing
on = tracing.init("mocktrade-test")
with tracing.span("publish trade_orders", tracing.PRODUCER,
                  {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                  lambda: {"mocktrade.order_id": "o-1"}) as span:
    print(on, tracing.carrier(span, {"traceparent": "unchanged"}))
tracing.shutdown()
"""


def run(script: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OTEL_") and k not in ("MOCKTRADE_TRACE_FILE", "MOCKTRADE_METRICS")}
    result = subprocess.run([sys.executable, "-c", script], env={**clean, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def receiver():
    """An OTLP/HTTP trace receiver: the decoded export requests it was sent."""
    received: list[tuple[str, ExportTraceServiceRequest]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append((self.path, request))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_spans_go_over_otlp_http_when_the_endpoint_is_set(receiver):
    endpoint, received = receiver
    out = run(SPAN_SCRIPT, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    assert out.startswith("True {'traceparent': '00-0af7651916cd43dd8448eb211c80319c-")
    [(path, request)] = received
    assert path == "/v1/traces"
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "mocktrade-test"
    [span] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "publish trade_orders"
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id.hex() == "b7ad6b7169203331"
    assert {a.key: a.value.string_value for a in span.attributes} == {"mocktrade.order_id": "o-1"}


def test_otel_service_name_wins(receiver):
    endpoint, received = receiver
    run(SPAN_SCRIPT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{endpoint}/v1/traces",
        OTEL_SERVICE_NAME="my-gateway")
    [(_, request)] = received
    attributes = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert attributes["service.name"] == "my-gateway"


def test_without_an_endpoint_there_is_no_tracer_and_context_is_forwarded():
    assert run(SPAN_SCRIPT) == "False {'traceparent': 'unchanged'}"
    assert run(SPAN_SCRIPT, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
               OTEL_SDK_DISABLED="true") == "False {'traceparent': 'unchanged'}"


def test_metrics_off_makes_every_instrument_a_no_op_and_metrics_answer_503():
    script = """
import asyncio, httpx
from starlette.applications import Starlette
from mocktrade import metrics
from mocktrade.services import metrics_http
app = Starlette()
metrics_http.install(app)
metrics.order_accepted(0.001)
async def scrape():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answer = await c.get("/metrics")
        return answer.status_code, answer.text.strip()
print(metrics.AVAILABLE, type(metrics.ORDERS).__name__, *asyncio.run(scrape()), sep="|")
"""
    assert run(script, MOCKTRADE_METRICS="off") == \
        "False|_Noop|503|metrics are off (MOCKTRADE_METRICS=off)"
    assert run(script).startswith("True|Counter|200|")
