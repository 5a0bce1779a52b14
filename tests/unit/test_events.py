from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mocktrade.domain import events
from mocktrade.domain.model import Execution, ExecutionStatus, Order, PriceTick, Side

T0 = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def test_envelope_carries_the_reference_fields():
    raw = events.encode("order-service", {"a": 1}, trace_context={"traceparent": "00-abc"})
    data = orjson.loads(raw)
    assert set(data) == {"eventId", "eventTimestamp", "sourceService", "schemaVersion",
                         "payload", "traceContext"}
    assert data["eventTimestamp"].endswith("Z")
    assert data["schemaVersion"] == events.SCHEMA_VERSION


def test_trade_order_round_trip_keeps_exact_decimals():
    order = Order("o-1", "alice", "MOCKAAPL", Decimal("1.500000"), Side.SELL, T0)
    raw = events.encode("order-service", events.trade_order_payload(order))
    payload = orjson.loads(raw)["payload"]
    assert payload["quantity"] == "1.500000"
    assert events.decode_trade_order(events.decode_envelope(raw).payload) == order


def test_unknown_fields_are_ignored():
    tick = PriceTick("MOCKAAPL", Decimal("187.2300"), T0)
    payload = dict(events.market_data_payload(tick), exchange="SIM", extra={"x": 1})
    raw = orjson.dumps({**orjson.loads(events.encode("feed", payload)), "future": True})
    assert events.decode_market_data(events.decode_envelope(raw).payload) == tick


@pytest.mark.parametrize("raw, message", [
    (b"{", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"schemaVersion": 99, "payload": {}}', "newer than supported"),
    (b'{"schemaVersion": "1", "payload": {}}', "schemaVersion"),
    (b'{"schemaVersion": 1, "payload": 3}', "payload"),
    (b'{"schemaVersion": 1, "payload": {}, "eventTimestamp": "2026-01-01T00:00:00Z"}', "eventId"),
])
def test_envelope_errors_are_clear(raw, message):
    with pytest.raises(events.EventDecodeError, match=message):
        events.decode_envelope(raw)


@pytest.mark.parametrize("change, message", [
    ({"side": "HOLD"}, "side must be one of BUY, SELL"),
    ({"quantity": "abc"}, "quantity"),
    ({"orderTimestamp": "yesterday"}, "orderTimestamp"),
    ({"orderTimestamp": "2026-01-01T00:00:00"}, "UTC offset"),
    ({"userId": ""}, "userId"),
])
def test_trade_order_errors_name_the_field(change, message):
    order = Order("o-1", "alice", "MOCKAAPL", Decimal("1"), Side.BUY, T0)
    payload = {**events.trade_order_payload(order), **change}
    with pytest.raises(events.EventDecodeError, match=message):
        events.decode_trade_order(payload)


def test_executed_event_is_byte_identical_on_replay():
    e = Execution("o-9", "bob", "MOCKMSFT", Decimal("2"), Side.BUY, ExecutionStatus.EXECUTED,
                  Decimal("410.1200"), T0)
    first, second = events.encode_trade_executed(e), events.encode_trade_executed(e)
    assert first == second
    assert events.decode_envelope(first).event_id == events.executed_event_id("o-9")


def test_failed_execution_has_null_price_and_reason():
    e = Execution("o-9", "bob", "MOCKMSFT", Decimal("2"), Side.SELL,
                  ExecutionStatus.FAILED_INSUFFICIENT_SHARES, None, T0, "none held")
    payload = orjson.loads(events.encode_trade_executed(e))["payload"]
    assert payload["executionPrice"] is None and payload["failureReason"] == "none held"
    assert events.decode_trade_executed(payload) == e


def test_executed_without_price_is_rejected():
    e = Execution("o-9", "bob", "MOCKMSFT", Decimal("2"), Side.BUY, ExecutionStatus.EXECUTED,
                  Decimal("1"), T0)
    payload = {**events.trade_executed_payload(e), "executionPrice": None}
    with pytest.raises(events.EventDecodeError, match="executionPrice"):
        events.decode_trade_executed(payload)


@given(st.binary(max_size=200))
def test_decoder_never_crashes_on_garbage(raw):
    try:
        events.decode_envelope(raw)
    except events.EventDecodeError:
        pass

