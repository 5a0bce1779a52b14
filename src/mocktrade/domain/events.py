"""The three event types on the wire, with the shared envelope.

Encoding is canonical (decimals as plain strings, UTC ISO-8601 times) so a
replayed execution re-emits byte-identical events. Decoding is strict about
what it needs and ignores what it does not know, so producers can add fields.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

import orjson

from .lifecycle import (CancelOrder, ExpireOrder, Instruction, OrderState, OrderStatus,
                        ResetAccount, Transition, TriggerOrder)
from .model import Execution, ExecutionStatus, Order, OrderType, PriceTick, Side, TimeInForce
from .money import (CASH_QUANTUM, QUANTITY_QUANTUM, AmountError, fmt, parse_cash, parse_price,
                    parse_quantity)

SCHEMA_VERSION = 1

TOPIC_MARKET_DATA = "market_data"
TOPIC_TRADE_ORDERS = "trade_orders"
TOPIC_TRADE_EXECUTED = "trade_executed"
TOPIC_ORDER_COMMANDS = "order_commands"
TOPIC_ORDER_UPDATES = "order_updates"

# eventIds of trade_executed events are derived from the orderId so that a
# replayed execution carries the same id and downstream writes stay idempotent.
_EXECUTED_NAMESPACE = uuid.UUID("6f1c1d2e-5b7a-4e8e-9a43-2f0d8c3b9e11")
_UPDATE_NAMESPACE = uuid.UUID("0b8e5a7c-3d21-4f6a-8c9e-5a1b2c3d4e5f")
_EXECUTED_NAMESPACE_BYTES, _UPDATE_NAMESPACE_BYTES = _EXECUTED_NAMESPACE.bytes, _UPDATE_NAMESPACE.bytes


class EventDecodeError(ValueError):
    """A record that cannot be understood; it goes to a dead-letter place."""


# format_time's recent answers. The execution job formats the same few
# instants (the order's time, the step's clock) about fifteen times per order
# (ledger row, order record, each event and its envelope); a dict look-up is
# a twentieth of isoformat(). Equal aware datetimes are the same instant, so
# they share the text; the cache is emptied when full, never stale.
_FORMATTED: dict[datetime, str] = {}
_FORMATTED_MAX = 4096


def format_time(moment: datetime) -> str:
    text = _FORMATTED.get(moment)
    if text is None:
        if moment.tzinfo is None:
            raise ValueError("naive datetime; all times are UTC")
        text = moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace(
            "+00:00", "Z")
        if len(_FORMATTED) >= _FORMATTED_MAX:
            _FORMATTED.clear()
        _FORMATTED[moment] = text
    return text


def _uuid5(namespace: bytes, name: str) -> str:
    """str(uuid.uuid5(namespace, name)) without building UUID objects: the
    execution job names one or two events per order this way, and the
    UUID class's checks cost more than the SHA-1."""
    digest = bytearray(hashlib.sha1(namespace + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return uuid_text(digest.hex())


def uuid_text(hex32: str) -> str:
    """32 hex digits in a UUID's canonical 8-4-4-4-12 form (what str(UUID) gives)."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


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
    """The reference's fields, then the order type's (absent for a plain market
    order, so a reference consumer sees exactly the reference payload)."""
    payload: dict[str, Any] = {
        "orderId": order.order_id, "userId": order.user_id, "symbol": order.symbol,
        "quantity": fmt(order.quantity), "side": order.side.value,
        "orderTimestamp": format_time(order.order_timestamp)}
    if order.order_type is not OrderType.MARKET:
        payload["type"] = order.order_type.value
    if order.time_in_force is not TimeInForce.DAY:
        payload["timeInForce"] = order.time_in_force.value
    if order.limit_price is not None:
        payload["limitPrice"] = fmt(order.limit_price)
    if order.stop_price is not None:
        payload["stopPrice"] = fmt(order.stop_price)
    if order.client_order_id is not None:
        payload["clientOrderId"] = order.client_order_id
    if order.expires_at is not None:
        payload["expireAt"] = format_time(order.expires_at)
    return payload


def _optional(payload: Mapping[str, Any], name: str, decode: Callable[[], Any]) -> Any:
    return None if payload.get(name) is None else decode()


def decode_trade_order(payload: Mapping[str, Any]) -> Order:
    order_type = _enum(payload, "type", OrderType) if payload.get("type") is not None \
        else OrderType.MARKET
    tif = _enum(payload, "timeInForce", TimeInForce) if payload.get("timeInForce") is not None \
        else TimeInForce.DAY
    order = Order(
        _text(payload, "orderId"), _text(payload, "userId"), _text(payload, "symbol"),
        _amount(payload, "quantity", parse_quantity), _enum(payload, "side", Side),
        parse_time(payload.get("orderTimestamp"), "orderTimestamp"), order_type, tif,
        _optional(payload, "limitPrice", lambda: _amount(payload, "limitPrice", parse_price)),
        _optional(payload, "stopPrice", lambda: _amount(payload, "stopPrice", parse_price)),
        _optional(payload, "clientOrderId", lambda: _text(payload, "clientOrderId")),
        _optional(payload, "expireAt", lambda: parse_time(payload.get("expireAt"), "expireAt")))
    needs_limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    if needs_limit != (order.limit_price is not None):
        raise EventDecodeError(f"limitPrice {'is required' if needs_limit else 'is not allowed'} "
                               f"for {order_type.value} orders")
    if needs_stop != (order.stop_price is not None):
        raise EventDecodeError(f"stopPrice {'is required' if needs_stop else 'is not allowed'} "
                               f"for {order_type.value} orders")
    return order


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
    return _uuid5(_EXECUTED_NAMESPACE_BYTES, order_id)


def encode_trade_executed(execution: Execution, source_service: str = "trade-execution",
                          trace_context: Mapping[str, str] | None = None) -> bytes:
    """Identical for the same ledger entry (same eventId, payload and time), so
    replays are harmless; only the traceContext follows the record replayed."""
    return encode(source_service, trade_executed_payload(execution),
                  event_id=executed_event_id(execution.order_id),
                  event_timestamp=execution.execution_timestamp, trace_context=trace_context)


# -- order_commands: instructions to the portfolio owner (key: userId) -------------

COMMAND_CANCEL, COMMAND_TRIGGER, COMMAND_EXPIRE, COMMAND_RESET = "CANCEL", "TRIGGER", "EXPIRE", "RESET"


def order_command_payload(instruction: Instruction) -> dict[str, Any]:
    if isinstance(instruction, CancelOrder):
        return {"command": COMMAND_CANCEL, "userId": instruction.user_id,
                "orderId": instruction.order_id, "requestedAt": format_time(instruction.requested_at)}
    if isinstance(instruction, TriggerOrder):
        return {"command": COMMAND_TRIGGER, "userId": instruction.user_id,
                "orderId": instruction.order_id, "price": fmt(instruction.price),
                "tickTimestamp": format_time(instruction.tick_time)}
    if isinstance(instruction, ExpireOrder):
        return {"command": COMMAND_EXPIRE, "userId": instruction.user_id,
                "orderId": instruction.order_id, "at": format_time(instruction.at)}
    if isinstance(instruction, ResetAccount):
        return {"command": COMMAND_RESET, "userId": instruction.user_id,
                "resetId": instruction.reset_id,
                "cash": fmt(instruction.cash) if instruction.cash is not None else None,
                "requestedAt": format_time(instruction.requested_at)}
    raise TypeError(f"{type(instruction).__name__} is not an order command")


def decode_order_command(payload: Mapping[str, Any]) -> Instruction:
    command = payload.get("command")
    user = _text(payload, "userId")
    if command == COMMAND_CANCEL:
        return CancelOrder(user, _text(payload, "orderId"),
                           parse_time(payload.get("requestedAt"), "requestedAt"))
    if command == COMMAND_TRIGGER:
        return TriggerOrder(user, _text(payload, "orderId"), _amount(payload, "price", parse_price),
                            parse_time(payload.get("tickTimestamp"), "tickTimestamp"))
    if command == COMMAND_EXPIRE:
        return ExpireOrder(user, _text(payload, "orderId"), parse_time(payload.get("at"), "at"))
    if command == COMMAND_RESET:
        return ResetAccount(user, _text(payload, "resetId"),
                            _optional(payload, "cash", lambda: _amount(payload, "cash", parse_cash)),
                            parse_time(payload.get("requestedAt"), "requestedAt"))
    raise EventDecodeError(f"command must be one of CANCEL, TRIGGER, EXPIRE, RESET, not {command!r}")


def encode_order_command(instruction: Instruction, source_service: str,
                         trace_context: Mapping[str, str] | None = None) -> bytes:
    return encode(source_service, order_command_payload(instruction), trace_context=trace_context)


# -- order_updates: every status change of an order (key: userId) ------------------

def order_view(state: OrderState) -> dict[str, Any]:
    """An order as users see it (the API's order object without transitions)."""
    order, outcome = state.order, state.outcome
    return {
        "orderId": order.order_id, "clientOrderId": order.client_order_id,
        "userId": order.user_id, "symbol": order.symbol, "side": order.side.value,
        "type": order.order_type.value, "timeInForce": order.time_in_force.value,
        "quantity": fmt(order.quantity),
        "limitPrice": fmt(order.limit_price) if order.limit_price is not None else None,
        "stopPrice": fmt(order.stop_price) if order.stop_price is not None else None,
        "status": state.status.value,
        "stopTriggered": state.stop_triggered,
        "filledQuantity": fmt(order.quantity if outcome and outcome.executed else 0 * order.quantity),
        "executionPrice": fmt(outcome.execution_price) if outcome and outcome.execution_price is not None else None,
        "outcome": outcome.status.value if outcome else None,
        "failureReason": outcome.failure_reason if outcome else None,
        "reservedCash": fmt(state.reserved_cash.quantize(CASH_QUANTUM)),
        "reservedShares": fmt(state.reserved_shares.quantize(QUANTITY_QUANTUM)),
        "orderTimestamp": format_time(order.order_timestamp),
        "expireAt": format_time(order.expires_at) if order.expires_at else None,
    }


def order_update_payload(state: OrderState, transition: Transition,
                         view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`view`: order_view(state) if the caller already has it (a step emits
    two or more transitions of one order; the view is the same for each)."""
    payload = dict(view) if view is not None else order_view(state)
    if transition.seq != state.last_seq:
        # An earlier transition re-emitted: the status it had then, not now.
        payload.update(status=transition.status.value)
        if not transition.status.final:
            payload.update(filledQuantity=fmt(0 * state.order.quantity), executionPrice=None,
                           outcome=None, failureReason=None)
    payload.update(seq=transition.seq, time=format_time(transition.at))
    return payload


def order_update_event_id(user_id: str, seq: int) -> str:
    return _uuid5(_UPDATE_NAMESPACE_BYTES, f"{user_id}:{seq}")


def encode_order_update(state: OrderState, transition: Transition,
                        source_service: str = "trade-execution",
                        trace_context: Mapping[str, str] | None = None,
                        view: Mapping[str, Any] | None = None) -> bytes:
    return encode(source_service, order_update_payload(state, transition, view),
                  event_id=order_update_event_id(state.user_id, transition.seq),
                  event_timestamp=transition.at, trace_context=trace_context)


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """A decoded order_updates payload: what the trigger job and streams need."""

    user_id: str
    seq: int
    order: Order
    status: str
    stop_triggered: bool
    payload: Mapping[str, Any]


def decode_order_update(payload: Mapping[str, Any]) -> OrderUpdate:
    seq = payload.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise EventDecodeError("seq must be a positive integer")
    status = _enum(payload, "status", OrderStatus)
    order = decode_trade_order(payload)
    return OrderUpdate(order.user_id, seq, order, status.value,
                       bool(payload.get("stopTriggered")), payload)


# -- the stored form of an order's record (both portfolio stores) ------------------

def order_record(state: OrderState) -> dict[str, Any]:
    return {
        "order": trade_order_payload(state.order), "status": state.status.value,
        "transitions": [[t.status.value, format_time(t.at), t.seq] for t in state.transitions],
        "reservedCash": fmt(state.reserved_cash), "reservedShares": fmt(state.reserved_shares),
        "stopTriggered": state.stop_triggered,
        "outcome": trade_executed_payload(state.outcome) if state.outcome else None,
    }


def decode_order_record(record: Mapping[str, Any]) -> OrderState:
    order = decode_trade_order(record["order"])
    outcome = record.get("outcome")
    execution = None
    if outcome is not None:
        execution = decode_trade_executed(outcome)
        execution = Execution(*[getattr(execution, f) for f in (
            "order_id", "user_id", "symbol", "quantity", "side", "status", "execution_price",
            "execution_timestamp", "failure_reason")], order_timestamp=order.order_timestamp)
    return OrderState(
        order, OrderStatus(record["status"]),
        tuple(Transition(OrderStatus(s), parse_time(at, "at"), seq)
              for s, at, seq in record["transitions"]),
        Decimal(record["reservedCash"]), Decimal(record["reservedShares"]),
        bool(record["stopTriggered"]), execution)
