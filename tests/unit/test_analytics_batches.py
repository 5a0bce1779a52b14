"""How the chDB/ClickHouse analytics adapter cuts a batch into inserts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from mocktrade.adapters.embedded.analytics import split_by_days
from mocktrade.domain.model import Execution, ExecutionStatus, Side

T0 = datetime(2025, 1, 1, 23, 30, tzinfo=timezone.utc)


def at(moment: datetime, order_id: str) -> Execution:
    return Execution(order_id, "alice", "MOCKKO", Decimal(1), Side.BUY, ExecutionStatus.EXECUTED,
                     Decimal(1), moment)


def test_a_batch_within_the_limit_stays_one_insert_in_time_order():
    batch = [at(T0 + timedelta(hours=h), f"o{h}") for h in (5, 0, 3)]
    assert [[e.order_id for e in chunk] for chunk in split_by_days(batch)] == [["o0", "o3", "o5"]]


def test_no_insert_spans_more_than_the_allowed_days():
    batch = [at(T0 + timedelta(days=d, minutes=m), f"o{d}-{m}") for d in range(10) for m in (0, 1)]
    chunks = split_by_days(batch, max_days=3)
    assert [len({e.execution_timestamp.date() for e in c}) for c in chunks] == [3, 3, 3, 1]
    assert sum(chunks, []) == sorted(batch, key=lambda e: e.execution_timestamp)


def test_days_are_utc_days():
    # 23:30 UTC and 00:30 UTC next day are two days, whatever the offset given.
    tokyo = timezone(timedelta(hours=9))
    batch = [at(T0.astimezone(tokyo), "a"), at((T0 + timedelta(hours=1)).astimezone(tokyo), "b")]
    assert [[e.order_id for e in c] for c in split_by_days(batch, max_days=1)] == [["a"], ["b"]]


def test_nothing_to_split():
    assert split_by_days([]) == []
