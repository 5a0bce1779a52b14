"""The execution job's fast paths for event ids and times give exactly the
text of the library calls they stand in for (ids and times are part of the
events' identity: a replay must carry the same ones)."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from mocktrade.domain import events


def _slow_format(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_event_ids_are_the_uuid5_of_the_name():
    rng = random.Random(7)
    names = ["", "o1", "alice:1", "ünïcode:42", str(uuid.UUID(int=0))]
    names += ["".join(rng.choices("abcdef0123456789-:é", k=rng.randint(1, 60))) for _ in range(2000)]
    for name in names:
        assert events.executed_event_id(name) == str(uuid.uuid5(events._EXECUTED_NAMESPACE, name))
    assert events.order_update_event_id("alice", 7) == str(
        uuid.uuid5(events._UPDATE_NAMESPACE, "alice:7"))


def test_format_time_is_the_utc_isoformat_for_every_offset_and_on_every_call():
    rng = random.Random(11)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for _ in range(3000):
        moment = (base + timedelta(microseconds=rng.randint(0, 10**14))).astimezone(
            timezone(timedelta(minutes=rng.randint(-720, 720))))
        assert events.format_time(moment) == _slow_format(moment)
        assert events.format_time(moment) == _slow_format(moment)  # remembered
    whole = datetime(2026, 12, 2, 5, 0, tzinfo=timezone.utc)  # no microseconds
    assert events.format_time(whole) == "2026-12-02T05:00:00.000000Z"


def test_format_time_refuses_naive_times_even_when_an_equal_aware_one_is_remembered():
    events.format_time(datetime(2026, 12, 2, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="naive"):
        events.format_time(datetime(2026, 12, 2))


def test_the_remembered_times_stay_bounded():
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n in range(events._FORMATTED_MAX * 2 + 5):
        events.format_time(base + timedelta(microseconds=n))
    assert len(events._FORMATTED) <= events._FORMATTED_MAX
