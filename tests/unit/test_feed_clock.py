"""The rules for a feed clock that jumps (domain/feed_clock.py), property-tested."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mocktrade.domain.feed_clock import MAX_AHEAD, MAX_BEHIND, STEP, Correction, FeedClock, stamp

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)

# A feed's clock error: none, jitter or delay of up to two minutes, or a jump
# of up to two hours either way.
errors = st.one_of(st.just(timedelta(0)),
                   st.integers(-120_000_000, 10_000_000).map(lambda us: timedelta(microseconds=us)),
                   st.integers(-7200, 7200).map(lambda s: timedelta(seconds=s)))
# Ticks: (symbol, platform time advanced by, feed clock error).
ticks = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]),
                           st.integers(0, 500_000).map(lambda us: timedelta(microseconds=us)),
                           errors), max_size=200)


@given(ticks)
def test_recorded_times_strictly_increase_per_symbol_and_stay_near_the_platform_clock(stream):
    clock, now, last = FeedClock(), T0, {}
    for symbol, advance, error in stream:
        now += advance
        result = clock.stamp(symbol, now + error, now)
        assert symbol not in last or result.time > last[symbol]
        # Never further from the platform's clock than the skew allows,
        # except to stay after the symbol's last time (itself near the clock).
        assert result.time - now <= MAX_AHEAD + STEP * len(stream)
        assert now - result.time <= MAX_BEHIND
        last[symbol] = result.time


@given(ticks)
def test_a_believable_in_order_feed_time_is_kept(stream):
    clock, now = FeedClock(), T0
    for symbol, advance, error in stream:
        now += advance
        before = clock._last.get(symbol)
        result = clock.stamp(symbol, now + error, now)
        believable = -MAX_BEHIND <= error <= MAX_AHEAD
        if believable and (before is None or now + error > before):
            assert result == stamp(now + error, now, before)
            assert result.time == now + error and result.correction is Correction.NONE


@given(st.sampled_from([HOUR, -HOUR]), st.integers(1, 50))
def test_a_clock_jumping_an_hour_is_recorded_at_the_platform_time(jump, count):
    clock, now = FeedClock(), T0
    clock.stamp("A", now, now)
    for i in range(count):
        now += timedelta(milliseconds=100)
        result = clock.stamp("A", now + jump, now)
        assert result.correction is Correction.CLOCK and result.time == now
    assert clock.corrections[Correction.CLOCK] == count


def test_a_delayed_tick_keeps_its_time_but_not_one_from_an_hour_back():
    now = T0 + timedelta(seconds=30)
    assert stamp(T0, now, None) == stamp(T0, now, None, MAX_AHEAD, MAX_BEHIND)
    assert stamp(T0, now, None).correction is Correction.NONE
    assert stamp(now - HOUR, now, None).correction is Correction.CLOCK
    assert stamp(now + timedelta(seconds=6), now, None).correction is Correction.CLOCK


def test_a_tick_behind_its_symbols_last_is_moved_just_after_it():
    clock = FeedClock()
    clock.stamp("A", T0, T0)
    late = clock.stamp("A", T0 - timedelta(seconds=1), T0 + timedelta(milliseconds=1))
    assert late == stamp(T0 - timedelta(seconds=1), T0, T0)
    assert late.time == T0 + STEP and late.correction is Correction.ORDER
    # Another symbol is not held back by A.
    assert clock.stamp("B", T0 - timedelta(seconds=1), T0).correction is Correction.NONE


def test_a_forward_jump_never_records_a_tick_after_a_session_close_not_yet_reached():
    close = T0 + timedelta(minutes=30)
    now = close - timedelta(minutes=1)
    result = FeedClock().stamp("A", now + HOUR, now)
    assert result.time < close


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        stamp(datetime(2026, 1, 1), T0, None)


@given(ticks, ticks)
def test_a_restarted_clock_resumed_from_the_last_times_keeps_them_increasing(before, after):
    """Ingestion restarts between `before` and `after`; the new clock resumes
    from what the first one recorded last (the price cache's latest ticks)."""
    first, now, last = FeedClock(), T0, {}
    for symbol, advance, error in before:
        now += advance
        last[symbol] = first.stamp(symbol, now + error, now).time
    second = FeedClock()
    second.resume(dict(last))
    for symbol, advance, error in after:
        now += advance
        result = second.stamp(symbol, now + error, now)
        assert symbol not in last or result.time > last[symbol]
        last[symbol] = result.time


def test_resume_never_moves_a_symbol_back_and_refuses_naive_times():
    clock = FeedClock()
    recorded = clock.stamp("A", T0, T0).time
    clock.resume({"A": T0 - HOUR, "B": T0})
    assert clock.stamp("A", T0 - timedelta(seconds=1), T0).time == recorded + STEP
    assert clock.stamp("B", T0 - timedelta(seconds=1), T0).correction is Correction.ORDER
    with pytest.raises(ValueError):
        clock.resume({"C": datetime(2026, 12, 1)})
