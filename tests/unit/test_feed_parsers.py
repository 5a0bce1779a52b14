"""The feed's wire format: what the server writes, the parsers read back exactly."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from mocktrade.domain.model import PriceTick
from mocktrade.feed.parsers import (FeedFormatError, micros_to_time, parse_events, parse_frame,
                                    parse_tick, time_to_micros)
from mocktrade.feed.server import format_control, format_ticks

AT = datetime(2024, 11, 25, 16, 0, 0, 123456, tzinfo=timezone.utc)
AT_MICROS = 1732550400123456


def frame(*events: dict) -> str:
    return orjson.dumps(list(events)).decode()


def tick_event(**overrides) -> dict:
    event = {"type": "tick", "s": "MOCKAAPL", "p": "187.2300", "t": AT_MICROS}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def test_a_tick_frame_parses_into_domain_ticks():
    assert parse_frame(frame(tick_event())) == [PriceTick("MOCKAAPL", Decimal("187.2300"), AT)]


def test_a_lone_event_object_is_accepted_too():
    assert parse_frame(orjson.dumps(tick_event())) == [PriceTick("MOCKAAPL", Decimal("187.23"), AT)]


def test_what_the_server_formats_round_trips_exactly():
    ticks = [PriceTick("MOCKAAPL", Decimal("187.2300"), AT),
             PriceTick("MOCKMSFT", Decimal("0.0001"), AT),
             PriceTick("MOCKBRK", Decimal("612345.9999"), AT)]
    assert parse_frame(format_ticks(ticks)) == ticks


def test_control_events_carry_no_tick():
    assert parse_frame(format_control("welcome", feed="mocktrade-sim", version=1, symbols=[])) == []
    assert parse_frame(format_control("heartbeat")) == []


def test_unknown_fields_are_ignored():
    assert len(parse_frame(frame(tick_event(v=100, exchange="MOCKX")))) == 1


def test_microsecond_times_convert_both_ways_without_loss():
    assert micros_to_time(AT_MICROS) == AT
    assert time_to_micros(AT) == AT_MICROS
    assert time_to_micros(micros_to_time(1)) == 1


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"tick"', "JSON object"),
])
def test_frames_that_are_not_event_lists_are_refused(raw, message):
    with pytest.raises(FeedFormatError, match=message):
        parse_events(raw)


@pytest.mark.parametrize("event, message", [
    ({"type": "trade"}, "unknown feed event type 'trade'"),
    ({"s": "MOCKAAPL"}, "unknown feed event type None"),
    (tick_event(s=...), "symbol 's'"),
    (tick_event(s="mockaapl"), "symbol 's'"),
    (tick_event(s=42), "symbol 's'"),
    (tick_event(p=187.23), "must be a decimal string"),
    (tick_event(p=...), "must be a decimal string"),
    (tick_event(p="abc"), "not a decimal number"),
    (tick_event(p="1.23456"), "more than 4 decimal places"),
    (tick_event(p="NaN"), "finite"),
    (tick_event(p="0"), "must be positive"),
    (tick_event(p="-5.0000"), "must be positive"),
    (tick_event(t=...), "integer microseconds"),
    (tick_event(t="2024-11-25T16:00:00Z"), "integer microseconds"),
    (tick_event(t=1.5), "integer microseconds"),
    (tick_event(t=True), "integer microseconds"),
    (tick_event(t=-1), "out of range"),
    (tick_event(t=10 ** 20), "out of range"),
])
def test_malformed_ticks_are_refused_with_a_clear_message(event, message):
    with pytest.raises(FeedFormatError, match=message):
        parse_tick(event)


def test_one_malformed_event_fails_the_whole_frame_in_parse_frame():
    with pytest.raises(FeedFormatError):
        parse_frame(frame(tick_event(), tick_event(p="bad")))
