"""The Phoenix Channels wire protocol: both JSON serializers, both directions."""

from __future__ import annotations

import orjson
import pytest

from mocktrade.services.phoenix import (EVENT_CLOSE, EVENT_REPLY, PhoenixMessage,
                                        PhoenixProtocolError, Serializer, broadcast, close_notice,
                                        decode_message, encode_message, reply, serializer_for_vsn)

JOIN = PhoenixMessage("prices:MOCKAAPL", "phx_join", {}, "3", "3")


def test_v1_objects_decode_as_v1():
    raw = '{"topic":"prices:MOCKAAPL","event":"phx_join","payload":{},"ref":"3","join_ref":"3"}'
    assert decode_message(raw) == (JOIN, Serializer.V1)


def test_v2_arrays_decode_as_v2():
    assert decode_message(b'["3","3","prices:MOCKAAPL","phx_join",{}]') == (JOIN, Serializer.V2)


def test_v1_messages_may_omit_join_ref_and_payload():
    message, _ = decode_message('{"topic":"phoenix","event":"heartbeat","ref":"9"}')
    assert message == PhoenixMessage("phoenix", "heartbeat", None, "9", None)


def test_numeric_refs_are_kept_as_text():
    message, _ = decode_message('[1, 2, "phoenix", "heartbeat", {}]')
    assert (message.join_ref, message.ref) == ("1", "2")


@pytest.mark.parametrize("raw, message", [
    ("not json", "not JSON"),
    ("42", r"object \(v1\) or array \(v2\)"),
    ('["1","1","phoenix","heartbeat"]', r"\[join_ref, ref, topic, event, payload\]"),
    ('[null,null,"","heartbeat",{}]', "topic must be a non-empty string"),
    ('{"topic":"phoenix","payload":{}}', "event must be a non-empty string"),
    ('{"topic":"phoenix","event":"heartbeat","ref":{"a":1}}', "ref must be a string or null"),
    ('[true,"1","phoenix","heartbeat",{}]', "join_ref must be a string or null"),
])
def test_frames_that_are_not_phoenix_messages_are_refused(raw, message):
    with pytest.raises(PhoenixProtocolError, match=message):
        decode_message(raw)


def test_v1_encoding_is_an_object_with_all_five_fields():
    encoded = orjson.loads(encode_message(JOIN, Serializer.V1))
    assert encoded == {"topic": "prices:MOCKAAPL", "event": "phx_join", "payload": {},
                       "ref": "3", "join_ref": "3"}


def test_v2_encoding_is_the_five_element_array():
    assert orjson.loads(encode_message(JOIN, Serializer.V2)) == ["3", "3", "prices:MOCKAAPL", "phx_join", {}]


@pytest.mark.parametrize("serializer", list(Serializer))
def test_encoding_round_trips(serializer):
    assert decode_message(encode_message(JOIN, serializer)) == (JOIN, serializer)


def test_a_reply_answers_the_message_ref_on_its_topic():
    answer = reply(JOIN, "ok", {"price": "1.0000"})
    assert answer == PhoenixMessage("prices:MOCKAAPL", EVENT_REPLY,
                                    {"status": "ok", "response": {"price": "1.0000"}}, "3", "3")
    assert reply(JOIN, "error").payload == {"status": "error", "response": {}}


def test_a_broadcast_has_no_refs_so_one_encoding_serves_every_member():
    push = broadcast("prices:MOCKAAPL", "price_update", {"symbol": "MOCKAAPL"})
    assert orjson.loads(encode_message(push, Serializer.V2)) == [
        None, None, "prices:MOCKAAPL", "price_update", {"symbol": "MOCKAAPL"}]


def test_the_close_notice_after_a_leave_carries_the_join_ref():
    notice = close_notice("prices:MOCKAAPL", "3")
    assert (notice.event, notice.ref, notice.join_ref, notice.payload) == (EVENT_CLOSE, "3", "3", {})


@pytest.mark.parametrize("vsn, expected", [
    (None, Serializer.V1), ("1.0.0", Serializer.V1), ("2.0.0", Serializer.V2), ("junk", Serializer.V1),
])
def test_vsn_parameter_picks_the_serializer(vsn, expected):
    assert serializer_for_vsn(vsn) is expected
