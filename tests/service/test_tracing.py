"""Trace context along the order path, over the embedded adapters in-process:
spans captured by the SDK's in-memory exporter, context read back from the
records' headers and the events' envelopes."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mocktrade import tracing
from mocktrade.domain.events import (TOPIC_MARKET_DATA, TOPIC_ORDER_COMMANDS, TOPIC_ORDER_UPDATES,
                                     TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS, encode,
                                     market_data_payload)
from mocktrade.domain.model import PriceTick
from mocktrade.jobs.execution import ExecutionHandler
from mocktrade.jobs.persistence import PersistenceHandler
from mocktrade.jobs.triggers import TriggerHandler

from .conftest import NOW
from .test_pipeline import drain

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


def by_name(finished) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in finished:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent else None


def span_id(span) -> str:
    return format(span.get_span_context().span_id, "016x")


def trace_id(span) -> str:
    return format(span.get_span_context().trace_id, "032x")


async def records(log, topic):
    consumer = log.consumer(topic, f"read-{topic}")
    try:
        return await consumer.poll(100, 0.05)
    finally:
        await consumer.close()


def envelope_context(record) -> dict:
    return orjson.loads(record.value)["traceContext"]


async def test_one_trace_from_the_request_to_persistence(backends, api, spans):
    b = backends
    answer = await api.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "2", "side": "BUY"},
                            headers={"traceparent": CALLER, "tracestate": "vendor=1"})
    assert answer.status_code == 202
    order_id = answer.json()["orderId"]
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec",
                ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW).handle)
    await drain(b.event_log, TOPIC_TRADE_EXECUTED, "persist",
                PersistenceHandler(b.history, b.analytics, b.event_log).handle)

    named = by_name(spans.get_finished_spans())
    [server] = named["POST /v1/orders"]
    [publish_order] = named["publish trade_orders"]
    [process_order] = named["process trade_orders"]
    [publish_executed] = named["publish trade_executed"]
    [publish_updates] = named["publish order_updates"]
    [persist] = named["process trade_executed"]
    everything = [server, publish_order, process_order, publish_executed, publish_updates, persist]
    assert {trace_id(s) for s in everything} == {CALLER_TRACE}  # the caller's trace, continued
    assert parent_of(server) == CALLER_SPAN
    assert parent_of(publish_order) == span_id(server)
    assert parent_of(process_order) == span_id(publish_order)
    assert parent_of(publish_executed) == parent_of(publish_updates) == span_id(process_order)
    assert parent_of(persist) == span_id(publish_executed)
    assert server.kind.name == "SERVER" and publish_order.kind.name == "PRODUCER"
    assert process_order.kind.name == persist.kind.name == "CONSUMER"
    assert server.attributes["http.response.status_code"] == 202
    assert process_order.attributes["mocktrade.order_id"] == order_id
    assert process_order.attributes["messaging.destination.name"] == TOPIC_TRADE_ORDERS
    assert process_order.attributes["messaging.kafka.offset"] == 0
    assert persist.attributes["mocktrade.user_id"] == "alice"
    assert server.get_span_context().trace_state.get("vendor") == "1"

    # The context each event carries: the same in the headers and the envelope,
    # naming the span that published it.
    [order_record] = await records(b.event_log, TOPIC_TRADE_ORDERS)
    [executed] = await records(b.event_log, TOPIC_TRADE_EXECUTED)
    updates = await records(b.event_log, TOPIC_ORDER_UPDATES)
    for record, publisher in [(order_record, publish_order), (executed, publish_executed),
                              *((u, publish_updates) for u in updates)]:
        assert envelope_context(record)["traceparent"] == record.headers["traceparent"]
        assert record.headers["traceparent"] == f"00-{CALLER_TRACE}-{span_id(publisher)}-01"
        assert record.headers["tracestate"] == "vendor=1"


async def test_a_trigger_fill_joins_the_resting_orders_trace(backends, api, spans):
    b = backends
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    triggers = TriggerHandler(b.portfolios, b.event_log, clock=lambda: NOW)
    answer = await api.post("/v1/orders", json={
        "symbol": "MOCKAAPL", "quantity": "1", "side": "BUY", "type": "LIMIT",
        "limitPrice": "90.00", "timeInForce": "GTC"})
    assert answer.status_code == 202
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)
    await drain(b.event_log, TOPIC_ORDER_UPDATES, "book", triggers.handle_updates)
    await b.event_log.publish(TOPIC_MARKET_DATA, "MOCKAAPL", encode("test", market_data_payload(
        PriceTick("MOCKAAPL", Decimal("89.0000"), NOW))))
    await drain(b.event_log, TOPIC_MARKET_DATA, "ticks", triggers.handle_ticks)
    await drain(b.event_log, TOPIC_ORDER_COMMANDS, "exec-commands", execution.handle)
    await drain(b.event_log, TOPIC_TRADE_EXECUTED, "persist",
                PersistenceHandler(b.history, b.analytics, b.event_log).handle)

    named = by_name(spans.get_finished_spans())
    [server] = named["POST /v1/orders"]
    [command] = named["publish order_commands"]
    [fill] = named["process order_commands"]
    [persist] = named["process trade_executed"]
    [executed] = await records(b.event_log, TOPIC_TRADE_EXECUTED)
    assert orjson.loads(executed.value)["payload"]["status"] == "EXECUTED"
    assert trace_id(command) == trace_id(fill) == trace_id(persist) == trace_id(server)
    assert command.attributes["mocktrade.command"] == "TriggerOrder"
    # The command's parent is the publish of the update that opened the order.
    opened = [s for s in named["publish order_updates"] if span_id(s) == parent_of(command)]
    assert opened and parent_of(fill) == span_id(command)


async def test_a_cancel_has_its_own_trace_into_execution(backends, api, spans):
    b = backends
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    placed = await api.post("/v1/orders", json={
        "symbol": "MOCKAAPL", "quantity": "1", "side": "BUY", "type": "LIMIT",
        "limitPrice": "50.00", "timeInForce": "GTC"})
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)
    canceled = await api.delete(f"/v1/orders/{placed.json()['orderId']}")
    assert canceled.status_code == 202
    await drain(b.event_log, TOPIC_ORDER_COMMANDS, "exec-commands", execution.handle)

    named = by_name(spans.get_finished_spans())
    [server] = named["DELETE /v1/orders/{orderId}"]
    [command] = named["publish order_commands"]
    [process] = named["process order_commands"]
    assert trace_id(server) == trace_id(command) == trace_id(process)
    assert trace_id(server) != trace_id(named["POST /v1/orders"][0])
    assert parent_of(command) == span_id(server) and parent_of(process) == span_id(command)
    assert process.attributes["mocktrade.order_id"] == placed.json()["orderId"]


async def test_with_tracing_off_the_context_is_forwarded_and_no_span_is_made(backends, api):
    b = backends
    assert not tracing.enabled()
    await api.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"},
                   headers={"traceparent": CALLER})
    await api.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"})
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec",
                ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW).handle)
    placed = await records(b.event_log, TOPIC_TRADE_ORDERS)
    executed = await records(b.event_log, TOPIC_TRADE_EXECUTED)
    updates = await records(b.event_log, TOPIC_ORDER_UPDATES)
    assert placed[0].headers["traceparent"] == CALLER
    generated = placed[1].headers["traceparent"]  # the gateway started a trace
    assert generated != CALLER and generated.startswith("00-")
    by_order = {orjson.loads(r.value)["payload"]["orderId"]: r for r in executed}
    for order_record in placed:
        order_id = orjson.loads(order_record.value)["payload"]["orderId"]
        record = by_order[order_id]
        assert record.headers["traceparent"] == order_record.headers["traceparent"]
        assert envelope_context(record) == {"traceparent": order_record.headers["traceparent"]}
    assert all(envelope_context(u)["traceparent"] in (CALLER, generated) for u in updates)


async def test_an_envelope_context_is_honoured_when_headers_are_absent(backends, spans):
    """A producer that writes traceContext in the envelope but no headers."""
    b = backends
    from mocktrade.domain.events import trade_order_payload
    from mocktrade.domain.model import Order, Side

    order = Order("o-env", "alice", "MOCKAAPL", Decimal("1"), Side.BUY, NOW)
    await b.event_log.publish(TOPIC_TRADE_ORDERS, "alice", encode(
        "foreign", trade_order_payload(order), trace_context={"traceparent": CALLER}))
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec",
                ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW).handle)
    [process] = by_name(spans.get_finished_spans())["process trade_orders"]
    assert trace_id(process) == CALLER_TRACE and parent_of(process) == CALLER_SPAN
