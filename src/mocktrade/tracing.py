"""OpenTelemetry traces of the order path: one small module, one switch.

Tracing is on in a process when `init` finds somewhere to send spans: the
standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
(OTLP/HTTP, the SDK's exporter, which reads the other OTEL_EXPORTER_OTLP_*
variables itself), or MOCKTRADE_TRACE_FILE (finished spans as JSON lines, for
tests). Otherwise no tracer exists and every helper below returns at its
first line: no span object is ever built.

Trace context travels as W3C `traceparent`/`tracestate`, both in the Kafka
record headers and in the event envelope's `traceContext` (the same carrier
dict). With tracing off a process still forwards the context it received, so
a trace stays whole across a process (a Flink job, say) that makes no spans.

Span attributes use OpenTelemetry's messaging names (messaging.system,
messaging.destination.name, messaging.destination.partition.id,
messaging.kafka.offset) plus `mocktrade.order_id` and `mocktrade.user_id`.
User ids are recorded plain: they are the same ids the JSON logs carry, and
an order's trace is useless to an operator who cannot tell whose it was.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson

log = logging.getLogger("mocktrade.tracing")

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
TRACE_FILE_ENV = "MOCKTRADE_TRACE_FILE"

Carrier = dict[str, str]

_tracer: Any = None      # an SDK tracer while tracing is on, else None
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configured() -> bool:
    """Whether the environment asks for traces (an OTLP endpoint or a trace file)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get(TRACE_FILE_ENV))


def init(default_service: str) -> bool:
    """Turn tracing on in this process if the environment asks for it.

    OTEL_SERVICE_NAME wins over `default_service` (mocktrade-gateway,
    mocktrade-jobs, ...). Safe to call twice; True when tracing is on."""
    if _tracer is not None or not configured():
        return _tracer is not None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:  # the PyFlink venv: context is forwarded, no spans made
        log.warning("tracing asked for but opentelemetry-sdk is not installed; "
                    "trace context is forwarded, no spans are made")
        return False
    service = os.environ.get("OTEL_SERVICE_NAME") or default_service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if os.environ.get(TRACE_FILE_ENV):
        provider.add_span_processor(SimpleSpanProcessor(
            JsonLinesSpanExporter(os.environ[TRACE_FILE_ENV])))
    use_provider(provider)
    atexit.register(shutdown)
    log.info("tracing on", extra={"service": service})
    return True


def use_provider(provider: Any) -> None:
    """Trace with `provider` (init's, or a test's with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("mocktrade") if provider is not None else None


def shutdown() -> None:
    """Flush what is still batched (called at exit)."""
    global _tracer
    provider, _tracer = _provider, None
    if provider is not None:
        provider.shutdown()


# -- carriers ------------------------------------------------------------------

def carrier_of_headers(headers: Mapping[str, str]) -> Carrier:
    """The trace context among a record's or a request's headers."""
    found = {}
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if value:
            found[name] = value
    return found


def record_context(record: Any) -> Carrier:
    """A consumed record's trace context: its headers, else the envelope's
    traceContext (a producer that writes no headers)."""
    found = carrier_of_headers(record.headers)
    if found:
        return found
    try:
        envelope = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return {}
    context = envelope.get("traceContext") if isinstance(envelope, dict) else None
    if not isinstance(context, dict):
        return {}
    return {k: v for k, v in context.items() if k in TRACE_HEADERS and isinstance(v, str) and v}


def carrier(span: Any, fallback: Mapping[str, str] | None = None) -> Carrier:
    """The context to send on: `span`'s, or with no span (tracing off) the
    context received, forwarded unchanged."""
    if span is None:
        return dict(fallback or {})
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    out: Carrier = {}
    TraceContextTextMapPropagator().inject(out, context=set_span_in_context(span))
    return out


# -- spans ---------------------------------------------------------------------

SERVER, PRODUCER, CONSUMER, INTERNAL = "SERVER", "PRODUCER", "CONSUMER", "INTERNAL"


Attributes = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None


def start(name: str, kind: str, parent: Mapping[str, str] | None,
          attributes: Attributes = None, links: Sequence[Mapping[str, str]] = (),
          start_time: int | None = None) -> Any:
    """A started span whose parent is the context in `parent` (a new trace if
    none), or None with tracing off. The caller ends it (`end`). `attributes`
    may be a function, so that a hot path with tracing off builds nothing."""
    if _tracer is None:
        return None
    if callable(attributes):
        attributes = attributes()
    from opentelemetry.trace import Link, SpanKind, get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    context = propagator.extract(parent) if parent else None
    span_links = []
    for linked in links:
        linked_span = get_current_span(propagator.extract(linked)).get_span_context()
        if linked_span.is_valid:
            span_links.append(Link(linked_span))
    return _tracer.start_span(name, context=context, kind=SpanKind[kind],
                              attributes=_clean(attributes), links=span_links,
                              start_time=start_time)


def end(span: Any, error: BaseException | None = None) -> None:
    if span is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


def end_all(spans: Sequence[Any]) -> None:
    for span in spans:
        span.end()


@contextmanager
def span(name: str, kind: str, parent: Mapping[str, str] | None,
         attributes: Attributes = None) -> Iterator[Any]:
    """`start` and `end` around a block; yields None with tracing off."""
    if _tracer is None:
        yield None
        return
    opened = start(name, kind, parent, attributes)
    try:
        yield opened
    except BaseException as exc:
        end(opened, exc)
        raise
    opened.end()


def set_attribute(span: Any, name: str, value: Any) -> None:
    if span is not None and value is not None:
        span.set_attribute(name, value)


def record_attributes(record: Any, **extra: Any) -> dict[str, Any]:
    """Where a consumed record came from, in OpenTelemetry's messaging names."""
    return {"messaging.system": "kafka", "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.kafka.message.key": record.key, **extra}


def order_attributes(order_id: str | None, user_id: str | None) -> dict[str, Any]:
    return {"mocktrade.order_id": order_id, "mocktrade.user_id": user_id}


def publish_attributes(topic: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"messaging.system": "kafka", "messaging.operation.type": "send",
            "messaging.destination.name": topic, "messaging.kafka.message.key": key, **extra}


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


# -- the test exporter ---------------------------------------------------------

class JsonLinesSpanExporter:
    """Finished spans as one JSON object a line, appended to a file that
    several processes may share (each line is one O_APPEND write). For the
    tests, which follow one order across processes; not for production."""

    def __init__(self, path: str):
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = b"".join(orjson.dumps(span_json(span)) + b"\n" for span in spans)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_json(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name, "kind": span.kind.name,
        "traceId": format(context.trace_id, "032x"), "spanId": format(context.span_id, "016x"),
        "parentSpanId": format(span.parent.span_id, "016x") if span.parent else None,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "links": [{"traceId": format(link.context.trace_id, "032x"),
                   "spanId": format(link.context.span_id, "016x")} for link in span.links],
        "start": span.start_time, "end": span.end_time,
        "status": span.status.status_code.name,
    }
