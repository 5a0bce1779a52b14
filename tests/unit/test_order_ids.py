"""Order ids are RFC 9562 version 7 UUIDs: valid UUIDs (the API documents
`format: uuid`), time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from hypothesis import given, strategies as st

from mocktrade.services.order_ids import new_order_id


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
