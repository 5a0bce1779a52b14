"""Analytics contract: executed share volume per symbol over a time window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from mocktrade.domain.model import Execution, ExecutionStatus, Side
from mocktrade.domain.money import trade_value
from mocktrade.ports import SymbolVolume

T0 = datetime(2025, 6, 30, 23, 0, tzinfo=timezone.utc)  # windows cross a month boundary
HOUR = timedelta(hours=1)


def trade(order_id: str, symbol: str, quantity: str, price: str | None, at: datetime,
          status: ExecutionStatus = ExecutionStatus.EXECUTED, user: str = "alice",
          side: Side = Side.BUY) -> Execution:
    return Execution(order_id, user, symbol, Decimal(quantity), side, status,
                     Decimal(price) if price is not None else None, at,
                     None if status is ExecutionStatus.EXECUTED else "failed",
                     at - timedelta(milliseconds=3))


def expected(trades: list[Execution], since: datetime, until: datetime,
             symbol: str | None = None) -> list[SymbolVolume]:
    totals: dict[str, list] = {}
    for t in trades:
        if (t.executed and since <= t.execution_timestamp < until
                and symbol in (None, t.symbol)):
            row = totals.setdefault(t.symbol, [Decimal(0), 0, Decimal(0)])
            row[0] += t.quantity
            row[1] += 1
            row[2] += trade_value(t.quantity, t.execution_price)
    return [SymbolVolume(s, *totals[s]) for s in sorted(totals)]


TRADES = [
    trade("o1", "MOCKAAPL", "10", "187.2500", T0),
    trade("o2", "MOCKAAPL", "0.333333", "187.3333", T0 + timedelta(minutes=30), side=Side.SELL),
    trade("o3", "MOCKKO", "1000000", "9999999.9999", T0 + timedelta(minutes=59), user="bob"),
    trade("o4", "MOCKV", "5", "250.0000", T0 + HOUR),  # at the window's end: excluded
    trade("o5", "MOCKV", "7", "251.0000", T0 - timedelta(microseconds=1)),  # just before
    trade("o6", "MOCKAAPL", "3", None, T0 + timedelta(minutes=5),
          ExecutionStatus.FAILED_INSUFFICIENT_FUNDS),
    trade("o7", "MOCKKO", "2", None, T0 + timedelta(minutes=6),
          ExecutionStatus.FAILED_INSUFFICIENT_SHARES, side=Side.SELL),
    trade("o8", "MOCKV", "1", None, T0 + timedelta(minutes=7), ExecutionStatus.FAILED_OTHER),
    trade("o9", "MOCKKO", "4.5", "61.0001", T0 + timedelta(minutes=20), user="carol"),
]


async def test_volume_counts_executed_trades_in_the_window(analytics):
    await analytics.record(TRADES)
    volume = await analytics.volume(T0, T0 + HOUR)
    assert volume == expected(TRADES, T0, T0 + HOUR)
    assert volume == [
        SymbolVolume("MOCKAAPL", Decimal("10.333333"), 2,
                     trade_value(Decimal(10), Decimal("187.25"))
                     + trade_value(Decimal("0.333333"), Decimal("187.3333"))),
        SymbolVolume("MOCKKO", Decimal("1000004.5"), 2,
                     Decimal("9999999999900.00") + trade_value(Decimal("4.5"), Decimal("61.0001"))),
    ]


async def test_window_bounds_are_since_inclusive_until_exclusive(analytics):
    await analytics.record(TRADES)
    assert await analytics.volume(T0 + HOUR, T0 + 2 * HOUR) == [
        SymbolVolume("MOCKV", Decimal(5), 1, Decimal("1250.00"))]
    assert await analytics.volume(T0 - HOUR, T0) == [
        SymbolVolume("MOCKV", Decimal(7), 1, Decimal("1757.00"))]
    assert await analytics.volume(T0 - 2 * HOUR, T0 - HOUR) == []
    wide = await analytics.volume(T0 - HOUR, T0 + 2 * HOUR)
    assert wide == expected(TRADES, T0 - HOUR, T0 + 2 * HOUR)
    assert [v.symbol for v in wide] == ["MOCKAAPL", "MOCKKO", "MOCKV"]


async def test_symbol_filter(analytics):
    await analytics.record(TRADES)
    assert await analytics.volume(T0 - HOUR, T0 + 2 * HOUR, symbol="MOCKKO") == \
        expected(TRADES, T0 - HOUR, T0 + 2 * HOUR, "MOCKKO")
    assert await analytics.volume(T0 - HOUR, T0 + 2 * HOUR, symbol="MOCKNONE") == []


async def test_a_trade_recorded_twice_counts_once(analytics):
    await analytics.record(TRADES)
    await analytics.record(TRADES[:3])
    await analytics.record([TRADES[0], TRADES[0]])
    assert await analytics.volume(T0, T0 + HOUR) == expected(TRADES, T0, T0 + HOUR)


async def test_failed_trades_are_stored_but_not_volume(analytics):
    failed = [t for t in TRADES if not t.executed]
    await analytics.record(failed)
    assert await analytics.volume(T0 - HOUR, T0 + 2 * HOUR) == []


async def test_window_given_in_another_timezone_means_the_same_instants(analytics):
    await analytics.record(TRADES)
    tokyo = timezone(timedelta(hours=9))
    assert await analytics.volume(T0.astimezone(tokyo), (T0 + HOUR).astimezone(tokyo)) == \
        expected(TRADES, T0, T0 + HOUR)


async def test_a_batch_spanning_many_days_is_recorded(analytics):
    # Months of trades at once, as when rebuilding analytics from a replay.
    daily = [trade(f"d{i}", "MOCKPG", "1", "10.0000", T0 - timedelta(days=i, minutes=1))
             for i in range(250)]
    await analytics.record(daily)
    assert await analytics.volume(T0 - timedelta(days=300), T0) == [
        SymbolVolume("MOCKPG", Decimal(250), 250, Decimal("2500.00"))]


async def test_recording_nothing_is_harmless(analytics):
    await analytics.record([])
    assert await analytics.volume(T0 - HOUR, T0 + HOUR) == []


async def test_analytics_survive_reopening(open_analytics):
    store = await open_analytics()
    await store.record(TRADES)
    await store.close()

    reopened = await open_analytics()
    await reopened.record(TRADES[:2])  # a replay after the restart
    assert await reopened.volume(T0, T0 + HOUR) == expected(TRADES, T0, T0 + HOUR)


# -- price bars ------------------------------------------------------------------

from mocktrade.domain.bars import TIMEFRAMES, Bar  # noqa: E402
from mocktrade.domain.model import PriceTick  # noqa: E402

B0 = datetime(2025, 6, 30, 23, 50, tzinfo=timezone.utc)  # 1d and 1h bars cross midnight
FAR = B0 + timedelta(days=3)


def tick(symbol: str, seconds: float, price: str) -> PriceTick:
    return PriceTick(symbol, Decimal(price), B0 + timedelta(seconds=seconds))


# Ticks every 7 s for 25 minutes, prices wandering; MOCKKO interleaved.
BAR_TICKS = ([tick("MOCKAAPL", 7 * i, f"{100 + (i * 37 % 23) / 4:.4f}") for i in range(215)]
             + [tick("MOCKKO", 11 * i + 0.5, f"{60 + (i * 13 % 7) / 8:.4f}") for i in range(140)])

BAR_TRADES = [
    trade("b1", "MOCKAAPL", "10", "101.0000", B0 + timedelta(seconds=30)),
    trade("b2", "MOCKAAPL", "0.5", "101.5000", B0 + timedelta(seconds=59, microseconds=999999)),
    trade("b3", "MOCKAAPL", "2", "102.0000", B0 + timedelta(minutes=12, seconds=1), user="bob"),
    trade("b4", "MOCKAAPL", "7", None, B0 + timedelta(minutes=12, seconds=2),
          ExecutionStatus.FAILED_INSUFFICIENT_FUNDS),
    trade("b5", "MOCKKO", "3", "60.0000", B0 + timedelta(minutes=3)),
]


def expected_bars(ticks: list[PriceTick], trades: list[Execution], symbol: str, timeframe: str,
                  since: datetime | None = None, until: datetime = FAR) -> list[Bar]:
    seconds = TIMEFRAMES[timeframe]
    start = lambda moment: int(moment.timestamp() // seconds) * seconds  # noqa: E731
    unique = {(t.symbol, t.timestamp): t for t in ticks if t.symbol == symbol}
    buckets: dict[int, list[PriceTick]] = {}
    for t in sorted(unique.values(), key=lambda t: t.timestamp):
        buckets.setdefault(start(t.timestamp), []).append(t)
    volume: dict[int, Decimal] = {}
    for t in {t.order_id: t for t in trades}.values():
        if t.executed and t.symbol == symbol:
            key = start(t.execution_timestamp)
            volume[key] = volume.get(key, Decimal(0)) + t.quantity
    bars = []
    for key in sorted(buckets):
        at = datetime.fromtimestamp(key, timezone.utc)
        if (since is None or at >= since) and at < until:
            prices = [t.price for t in buckets[key]]
            bars.append(Bar(at, prices[0], max(prices), min(prices), prices[-1],
                            volume.get(key, Decimal(0)), len(prices)))
    return bars


async def test_minute_bars_from_ticks_with_executed_volume(analytics):
    await analytics.record_ticks(BAR_TICKS)
    await analytics.record(BAR_TRADES)
    bars = await analytics.bars("MOCKAAPL", "1m", B0, FAR, 100)
    assert bars == expected_bars(BAR_TICKS, BAR_TRADES, "MOCKAAPL", "1m", B0)
    assert len(bars) == 25
    first = bars[0]
    assert (first.start, first.volume, first.ticks) == (B0, Decimal("10.5"), 9)
    assert bars[12].volume == Decimal(2)  # the failed trade b4 is not volume
    assert [b.start for b in bars] == sorted(b.start for b in bars)  # oldest first


async def test_coarser_timeframes_roll_up_the_minutes(analytics):
    await analytics.record_ticks(BAR_TICKS)
    await analytics.record(BAR_TRADES)
    for symbol in ("MOCKAAPL", "MOCKKO"):
        for timeframe in TIMEFRAMES:
            assert await analytics.bars(symbol, timeframe, B0 - timedelta(days=1), FAR, 100) == \
                expected_bars(BAR_TICKS, BAR_TRADES, symbol, timeframe), (symbol, timeframe)
    daily = await analytics.bars("MOCKAAPL", "1d", B0 - timedelta(days=1), FAR, 100)
    assert [b.start for b in daily] == [datetime(2025, 6, 30, tzinfo=timezone.utc),
                                        datetime(2025, 7, 1, tzinfo=timezone.utc)]
    assert sum(b.ticks for b in daily) == 215
    assert sum(b.volume for b in daily) == Decimal("12.5")


async def test_replayed_ticks_and_trades_count_once(analytics):
    await analytics.record_ticks(BAR_TICKS)
    await analytics.record(BAR_TRADES)
    # A replay cut into other batches, overlapping, with in-batch duplicates.
    await analytics.record_ticks(BAR_TICKS[100:250])
    await analytics.record_ticks(BAR_TICKS[:40] + BAR_TICKS[:40])
    await analytics.record(BAR_TRADES[:2])
    for timeframe in ("1m", "15m", "1d"):
        assert await analytics.bars("MOCKAAPL", timeframe, B0 - timedelta(days=1), FAR, 100) == \
            expected_bars(BAR_TICKS, BAR_TRADES, "MOCKAAPL", timeframe)


async def test_late_ticks_in_a_later_batch_rebuild_their_minute(analytics):
    early, late = BAR_TICKS[:215:2], BAR_TICKS[1:215:2]
    await analytics.record_ticks(early)
    await analytics.record_ticks(late[::-1])  # out of order, touching every minute again
    assert await analytics.bars("MOCKAAPL", "1m", B0, FAR, 100) == \
        expected_bars(BAR_TICKS, [], "MOCKAAPL", "1m", B0)


async def test_bars_opening_in_the_window_are_whole(analytics):
    await analytics.record_ticks(BAR_TICKS)
    # since rounds up to the next bar, until excludes a bar opening at it, and the
    # last bar keeps its minutes after `until`.
    since, until = B0 + timedelta(minutes=2, seconds=1), B0 + timedelta(minutes=10, seconds=30)
    bars = await analytics.bars("MOCKAAPL", "5m", since, until, 100)
    assert [b.start for b in bars] == [B0 + timedelta(minutes=5), B0 + timedelta(minutes=10)]
    assert bars == [b for b in expected_bars(BAR_TICKS, [], "MOCKAAPL", "5m")
                    if since <= b.start < until]
    assert bars[-1].ticks == len([t for t in BAR_TICKS if t.symbol == "MOCKAAPL"
                                  and B0 + timedelta(minutes=10) <= t.timestamp
                                  < B0 + timedelta(minutes=15)])
    assert await analytics.bars("MOCKAAPL", "1m", B0 + timedelta(minutes=3),
                                B0 + timedelta(minutes=3), 10) == []


async def test_limit_takes_the_oldest_from_since_or_the_newest_without(analytics):
    await analytics.record_ticks(BAR_TICKS)
    every = expected_bars(BAR_TICKS, [], "MOCKAAPL", "1m")
    assert await analytics.bars("MOCKAAPL", "1m", B0, FAR, 5) == every[:5]
    assert await analytics.bars("MOCKAAPL", "1m", None, FAR, 5) == every[-5:]
    until = every[10].start
    assert await analytics.bars("MOCKAAPL", "1m", None, until, 3) == every[7:10]


async def test_bars_of_an_unknown_or_quiet_symbol_are_empty(analytics):
    await analytics.record_ticks(BAR_TICKS)
    assert await analytics.bars("MOCKNONE", "1h", None, FAR, 10) == []
    assert await analytics.bars("MOCKAAPL", "1h", B0 - timedelta(days=2), B0 - timedelta(days=1),
                                10) == []
    await analytics.record_ticks([])


async def test_volume_without_ticks_makes_no_bar(analytics):
    await analytics.record(BAR_TRADES)
    assert await analytics.bars("MOCKAAPL", "1m", None, FAR, 10) == []


async def test_bars_survive_reopening(open_analytics):
    store = await open_analytics()
    await store.record_ticks(BAR_TICKS[:150])
    await store.record(BAR_TRADES)
    await store.close()

    reopened = await open_analytics()
    await reopened.record_ticks(BAR_TICKS[100:])  # the replay after a restart overlaps
    await reopened.record(BAR_TRADES)
    assert await reopened.bars("MOCKAAPL", "1h", None, FAR, 10) == \
        expected_bars(BAR_TICKS, BAR_TRADES, "MOCKAAPL", "1h")


async def test_long_windows_from_whole_hours_and_edges_match_the_trades(analytics):
    """Windows whose whole hours come pre-aggregated and whose edges come from
    the trades: every window equals the sum over the trades, batches replayed
    and split any way."""
    import random

    rng = random.Random(7)
    spread = [trade(f"h{i}", rng.choice(["MOCKAAPL", "MOCKKO"]), f"{rng.randint(1, 50)}.5",
                    f"{rng.randint(10, 900)}.1234", T0 + timedelta(minutes=rng.randint(0, 60 * 30),
                                                                   seconds=rng.randint(0, 59)),
                    rng.choice([ExecutionStatus.EXECUTED] * 4 + [ExecutionStatus.CANCELED]))
              for i in range(300)]
    spread = [t if t.status is ExecutionStatus.EXECUTED else
              trade(t.order_id, t.symbol, str(t.quantity), None, t.execution_timestamp, t.status)
              for t in spread]
    for start in range(0, 300, 37):
        await analytics.record(spread[start:start + 37])
    await analytics.record(spread[100:220])  # a replay, batched differently
    windows = [(T0, T0 + 30 * HOUR), (T0 + timedelta(minutes=17), T0 + timedelta(hours=29, minutes=3)),
               (T0 + timedelta(minutes=61), T0 + timedelta(minutes=119)),
               (T0 + 3 * HOUR, T0 + 3 * HOUR + timedelta(seconds=1))]
    for since, until in windows:
        assert await analytics.volume(since, until) == expected(spread, since, until)
        assert await analytics.volume(since, until, "MOCKKO") == \
            expected(spread, since, until, "MOCKKO")


async def test_a_window_over_closed_hours_and_the_open_hour_as_trades_stream_in(analytics):
    """Closed hours are pre-aggregated, the open hour (the real clock's) is
    read raw: the 7-day-style window equals the deduplicated trades after
    every batch, with a replayed duplicate and a late trade for a closed hour."""
    now = datetime.now(timezone.utc)
    open_hour = now.replace(minute=0, second=0, microsecond=0)
    into_open_hour = (now - open_hour) / 4  # trades of the open hour stay in the past

    def in_open_hour(i: int) -> datetime:
        return open_hour + into_open_hour * (i % 4) / 4 + timedelta(microseconds=i)

    closed = [trade(f"c{i}", "MOCKAAPL" if i % 3 else "MOCKKO", f"{i + 1}.25", "101.5000",
                    open_hour - timedelta(hours=1 + i % 5, minutes=i % 60)) for i in range(40)]
    live = [trade(f"l{i}", "MOCKAAPL" if i % 2 else "MOCKKO", f"{i + 1}", "99.9900",
                  in_open_hour(i)) for i in range(12)]
    since, until = now - timedelta(days=7), now + timedelta(seconds=1)
    unique: dict[str, Execution] = {}  # what was recorded, each trade once

    async def record(batch: list[Execution]) -> None:
        await analytics.record(batch)
        unique.update((t.order_id, t) for t in batch)
        recorded = list(unique.values())
        assert await analytics.volume(since, until) == expected(recorded, since, until)
        assert await analytics.volume(since, until, "MOCKKO") == \
            expected(recorded, since, until, "MOCKKO")

    await record(closed[:20])
    await record(live[:6])
    await record(closed[20:])
    await record(live[6:] + [live[0]])       # a duplicate inside a batch
    await record(live[2:5] + closed[5:8])    # a replay across the closed and the open hours
    late = trade("late", "MOCKKO", "3", "98.0000", open_hour - timedelta(hours=2, seconds=1))
    await record([late])                     # a closed hour gets a late trade
    await record([late])
    # The open hour alone, and a window starting mid-hour.
    recorded = list(unique.values())
    assert await analytics.volume(open_hour, until) == expected(recorded, open_hour, until)
    mid = open_hour - timedelta(hours=3, minutes=17)
    assert await analytics.volume(mid, until) == expected(recorded, mid, until)
