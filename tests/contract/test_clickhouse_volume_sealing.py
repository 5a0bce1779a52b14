"""How the ClickHouse adapter keeps hourly volume (clickhouse_volume): only
closed hours are pre-aggregated, once; the open hour is read raw. On chDB,
with a clock the test moves. The Analytics contract proves the answers on
every backend; this proves the work a batch no longer does."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from mocktrade.adapters import clickhouse_volume
from mocktrade.adapters.clickhouse import ClickHouseAnalytics, chdb_openers

from .test_analytics_contract import expected, trade

H0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def hourly_rows(store: ClickHouseAnalytics) -> list[tuple]:
    client = store._get_client()
    return client.query(f"SELECT symbol, hour, volume, trades FROM {store.volume_table} FINAL "
                        f"ORDER BY symbol, hour").result_rows


async def test_only_closed_hours_are_sealed_and_late_trades_recompute_them(tmp_path):
    clock = Clock(H0 + timedelta(minutes=30))
    writes, reads = chdb_openers(tmp_path / "analytics")
    store = ClickHouseAnalytics(writes, read_client=reads, clock=clock)
    try:
        earlier = [trade(f"e{i}", "MOCKKO", "2", "10.0000", H0 - timedelta(minutes=50 - i))
                   for i in range(5)]
        live = [trade(f"o{i}", "MOCKKO", "1", "10.0000", H0 + timedelta(minutes=i))
                for i in range(10)]
        await store.record(earlier)  # 09:xx closed 30 min ago: sealed by this batch
        await store.record(live[:5])
        await store.record(live[5:] + live[:2])  # with a replay
        rows = hourly_rows(store)
        assert [(symbol, hour.replace(tzinfo=timezone.utc), trades)
                for symbol, hour, _, trades in rows] == [("MOCKKO", H0 - timedelta(hours=1), 5)]
        since, until = H0 - timedelta(hours=5), clock.now
        assert await store.volume(since, until) == expected(earlier + live, since, until)

        # The hour closes; the first batch after its grace seals it, once.
        clock.now = H0 + timedelta(hours=1) + clickhouse_volume.SEAL_GRACE
        after = [trade("n1", "MOCKKO", "4", "10.0000", clock.now - timedelta(seconds=1))]
        await store.record(after)
        assert [(hour.replace(tzinfo=timezone.utc), volume, trades)
                for _, hour, volume, trades in hourly_rows(store)] == [
            (H0 - timedelta(hours=1), Decimal(10), 5), (H0, Decimal(10), 10)]

        # A late trade of the sealed hour recomputes it.
        late = trade("late", "MOCKKO", "7", "10.0000", H0 + timedelta(minutes=59))
        await store.record([late, live[0]])
        assert hourly_rows(store)[-1][2:] == (Decimal(17), 11)
        until = clock.now
        assert await store.volume(H0 - timedelta(hours=5), until) == \
            expected(earlier + live + after + [late], H0 - timedelta(hours=5), until)
    finally:
        await store.close()
