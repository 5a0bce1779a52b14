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
