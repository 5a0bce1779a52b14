"""Order ids are RFC 9562 version 7 UUIDs: valid UUIDs (the API documents
`format: uuid`), time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from hypothesis import given, strategies as st

from mocktrade.services.ids import new_event_id, new_order_id, new_traceparent, random_bytes


def test_a_version_7_uuid_carrying_the_millisecond_it_was_made():
    before = time.time_ns() // 1_000_000
    text = new_order_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical lower-case form
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


@given(st.integers(0, 2**48 - 10**6 - 1), st.integers(1, 10**6))
def test_ids_of_later_milliseconds_sort_after(millis, gap_ms):
    first = new_order_id(millis * 1_000_000)
    later = new_order_id((millis + gap_ms) * 1_000_000)
    assert first < later
    assert uuid.UUID(first).version == uuid.UUID(later).version == 7


def test_unique_within_one_millisecond():
    now = time.time_ns()
    ids = {new_order_id(now) for _ in range(100_000)}
    assert len(ids) == 100_000


def test_event_ids_are_version_4_uuids():
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_traceparent_is_w3c_shaped_and_new_each_time():
    first, second = new_traceparent(), new_traceparent()
    for value in (first, second):
        version, trace_id, span_id, flags = value.split("-")
        assert (version, flags) == ("00", "01")
        assert len(trace_id) == 32 and len(span_id) == 16
        int(trace_id, 16), int(span_id, 16)
    assert first != second


def test_the_pool_never_hands_out_the_same_bytes_twice():
    # Across pool refills: 4,096-byte pools, 10,000 draws of 24 bytes.
    draws = [random_bytes(24) for _ in range(10_000)]
    assert len(set(draws)) == len(draws)
    assert all(len(d) == 24 for d in draws)


def test_a_forked_child_draws_other_bytes_than_its_parent():
    import os

    random_bytes(1)  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert child != random_bytes(16)
