"""The three event types on the wire, with the shared envelope.

Encoding is canonical (decimals as plain strings, UTC ISO-8601 times) so a
replayed execution re-emits byte-identical events. Decoding is strict about
what it needs and ignores what it does not know, so producers can add fields.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

import orjson

from .model import Execution, ExecutionStatus, Order, PriceTick, Side
from .money import AmountError, fmt, parse_price, parse_quantity

SCHEMA_VERSION = 1

TOPIC_MARKET_DATA = "market_data"
TOPIC_TRADE_ORDERS = "trade_orders"
TOPIC_TRADE_EXECUTED = "trade_executed"

# eventIds of trade_executed events are derived from the orderId so that a
# replayed execution carries the same id and downstream writes stay idempotent.
_EXECUTED_NAMESPACE = uuid.UUID("6f1c1d2e-5b7a-4e8e-9a43-2f0d8c3b9e11")


class EventDecodeError(ValueError):
    """A record that cannot be understood; it goes to a dead-letter place."""


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime; all times are UTC")
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise EventDecodeError(f"{what} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise EventDecodeError(f"{what} is not an ISO-8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise EventDecodeError(f"{what} must carry a UTC offset")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    event_timestamp: datetime
    source_service: str
    schema_version: int
    payload: Mapping[str, Any]
    trace_context: Mapping[str, str] | None = None


def encode(source_service: str, payload: Mapping[str, Any], *, event_id: str | None = None,
           event_timestamp: datetime | None = None,
           trace_context: Mapping[str, str] | None = None) -> bytes:
    envelope: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "eventTimestamp": format_time(event_timestamp or datetime.now(timezone.utc)),
        "sourceService": source_service,
        "schemaVersion": SCHEMA_VERSION,
        "payload": payload,
    }
    if trace_context:
        envelope["traceContext"] = dict(trace_context)
    return orjson.dumps(envelope)


def decode_envelope(raw: bytes | str) -> Envelope:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventDecodeError("event must be a JSON object")
    version = data.get("schemaVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventDecodeError("schemaVersion must be an integer")
    if version > SCHEMA_VERSION:
        raise EventDecodeError(f"schemaVersion {version} is newer than supported {SCHEMA_VERSION}")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise EventDecodeError("payload must be a JSON object")
    trace = data.get("traceContext")
    return Envelope(
        event_id=_text(data, "eventId"),
        event_timestamp=parse_time(data.get("eventTimestamp"), "eventTimestamp"),
        source_service=_text(data, "sourceService"),
        schema_version=version,
        payload=payload,
        trace_context=trace if isinstance(trace, dict) else None,
    )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise EventDecodeError(f"{name} must be a non-empty string")
    return value


def _amount(data: Mapping[str, Any], name: str, parse: Callable[[object, str], Decimal]) -> Decimal:
    value = data.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # tolerate JSON numbers from foreign producers; keep their text
    try:
        return parse(value, name)
    except AmountError as exc:
        raise EventDecodeError(str(exc)) from None


def _enum(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise EventDecodeError(f"{name} must be one of {allowed}") from None


# -- market_data ------------------------------------------------------------

def market_data_payload(tick: PriceTick) -> dict[str, Any]:
    return {"symbol": tick.symbol, "price": fmt(tick.price), "feedTimestamp": format_time(tick.timestamp)}


def decode_market_data(payload: Mapping[str, Any]) -> PriceTick:
    return PriceTick(_text(payload, "symbol"), _amount(payload, "price", parse_price),
                     parse_time(payload.get("feedTimestamp"), "feedTimestamp"))


# -- trade_orders -------------------------------------------------------------

def trade_order_payload(order: Order) -> dict[str, Any]:
    return {"orderId": order.order_id, "userId": order.user_id, "symbol": order.symbol,
            "quantity": fmt(order.quantity), "side": order.side.value,
            "orderTimestamp": format_time(order.order_timestamp)}


def decode_trade_order(payload: Mapping[str, Any]) -> Order:
    return Order(_text(payload, "orderId"), _text(payload, "userId"), _text(payload, "symbol"),
                 _amount(payload, "quantity", parse_quantity), _enum(payload, "side", Side),
                 parse_time(payload.get("orderTimestamp"), "orderTimestamp"))


# -- trade_executed -----------------------------------------------------------

def trade_executed_payload(execution: Execution) -> dict[str, Any]:
    return {
        "orderId": execution.order_id, "userId": execution.user_id, "symbol": execution.symbol,
        "quantity": fmt(execution.quantity), "side": execution.side.value,
        "status": execution.status.value,
        "executionPrice": fmt(execution.execution_price) if execution.execution_price is not None else None,
        "executionTimestamp": format_time(execution.execution_timestamp),
        "failureReason": execution.failure_reason,
    }


def decode_trade_executed(payload: Mapping[str, Any]) -> Execution:
    status = _enum(payload, "status", ExecutionStatus)
    price = payload.get("executionPrice")
    execution_price = None if price is None else _amount(payload, "executionPrice", parse_price)
    if status is ExecutionStatus.EXECUTED and execution_price is None:
        raise EventDecodeError("executionPrice is required when status is EXECUTED")
    reason = payload.get("failureReason")
    if reason is not None and not isinstance(reason, str):
        raise EventDecodeError("failureReason must be a string or null")
    return Execution(_text(payload, "orderId"), _text(payload, "userId"), _text(payload, "symbol"),
                     _amount(payload, "quantity", parse_quantity), _enum(payload, "side", Side),
                     status, execution_price,
                     parse_time(payload.get("executionTimestamp"), "executionTimestamp"), reason)


def executed_event_id(order_id: str) -> str:
    return str(uuid.uuid5(_EXECUTED_NAMESPACE, order_id))


def encode_trade_executed(execution: Execution, source_service: str = "trade-execution") -> bytes:
    """Byte-identical for the same ledger entry, so replays are harmless."""
    return encode(source_service, trade_executed_payload(execution),
                  event_id=executed_event_id(execution.order_id),
                  event_timestamp=execution.execution_timestamp)
