"""The Phoenix Channels wire protocol, as pure encode/decode functions.

Off-the-shelf Phoenix clients speak one of two JSON serializers: v1 sends
objects {"topic","event","payload","ref","join_ref"}, v2 sends arrays
[join_ref, ref, topic, event, payload]. The server answers each message in
the shape it arrived in, so both kinds of client work on one endpoint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

PHOENIX_TOPIC = "phoenix"
EVENT_JOIN = "phx_join"
EVENT_LEAVE = "phx_leave"
EVENT_REPLY = "phx_reply"
EVENT_CLOSE = "phx_close"
EVENT_HEARTBEAT = "heartbeat"

STATUS_OK = "ok"
STATUS_ERROR = "error"


class Serializer(enum.IntEnum):
    V1 = 0
    V2 = 1


class PhoenixProtocolError(ValueError):
    """A frame that is not a Phoenix message; the connection cannot answer it."""


@dataclass(frozen=True, slots=True)
class PhoenixMessage:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def serializer_for_vsn(vsn: str | None) -> Serializer:
    """The serializer a client announced in its `vsn` query parameter.

    Phoenix itself defaults to 1.0.0 when the parameter is absent.
    """
    if vsn is not None and vsn.startswith("2."):
        return Serializer.V2
    return Serializer.V1


def decode_message(frame: str | bytes) -> tuple[PhoenixMessage, Serializer]:
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise PhoenixProtocolError(f"not JSON: {exc}") from None
    if isinstance(data, list):
        return _decode_v2(data), Serializer.V2
    if isinstance(data, dict):
        return _decode_v1(data), Serializer.V1
    raise PhoenixProtocolError("a Phoenix message is a JSON object (v1) or array (v2)")


def _decode_v2(data: list[Any]) -> PhoenixMessage:
    if len(data) != 5:
        raise PhoenixProtocolError("a v2 message is [join_ref, ref, topic, event, payload]")
    join_ref, ref, topic, event, payload = data
    return PhoenixMessage(_name(topic, "topic"), _name(event, "event"), payload,
                          _ref(ref, "ref"), _ref(join_ref, "join_ref"))


def _decode_v1(data: Mapping[str, Any]) -> PhoenixMessage:
    return PhoenixMessage(_name(data.get("topic"), "topic"), _name(data.get("event"), "event"),
                          data.get("payload"), _ref(data.get("ref"), "ref"),
                          _ref(data.get("join_ref"), "join_ref"))


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PhoenixProtocolError(f"{what} must be a non-empty string")
    return value


def _ref(value: object, what: str) -> str | None:
    # Refs are opaque to the server; some clients send them as numbers.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise PhoenixProtocolError(f"{what} must be a string or null")


def encode_message(message: PhoenixMessage, serializer: Serializer) -> str:
    if serializer is Serializer.V2:
        data: Any = [message.join_ref, message.ref, message.topic, message.event, message.payload]
    else:
        data = {"topic": message.topic, "event": message.event, "payload": message.payload,
                "ref": message.ref, "join_ref": message.join_ref}
    return orjson.dumps(data).decode()


def reply(to: PhoenixMessage, status: str, response: Mapping[str, Any] | None = None) -> PhoenixMessage:
    return PhoenixMessage(to.topic, EVENT_REPLY, {"status": status, "response": dict(response or {})},
                          to.ref, to.join_ref)


def close_notice(topic: str, join_ref: str | None) -> PhoenixMessage:
    """What Phoenix sends after a channel ends; its ref is the join ref."""
    return PhoenixMessage(topic, EVENT_CLOSE, {}, join_ref, join_ref)


def broadcast(topic: str, event: str, payload: Mapping[str, Any]) -> PhoenixMessage:
    # A broadcast carries no join_ref, so one encoding serves every member of
    # the topic; Phoenix JS accepts such messages for any join of the topic.
    return PhoenixMessage(topic, event, payload)
