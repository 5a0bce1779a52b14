"""The analytics owner over HTTP (chDB served by the persistence job's
process, written by the Flink persistence job): a job catching up after an
outage writes batches of hundreds, far over the services' request body limit.
Sent whole, every retry got 413 and the job never moved on (found by the
chaos run: a killed Flink persistence job never recovered)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import uvicorn
from starlette.applications import Starlette

from mocktrade.adapters.analytics_http import HttpAnalytics, internal_routes
from mocktrade.adapters.embedded.analytics import ChdbAnalytics
from mocktrade.domain.events import trade_executed_payload
from mocktrade.domain.model import Execution, ExecutionStatus, PriceTick, Side
from mocktrade.portcheck import free_port
from mocktrade.services.limits import MAX_BODY_BYTES, RequestLimits

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
TRADES = 500  # the Flink persistence job's batch size


def trade(n: int) -> Execution:
    return Execution(f"order-{n:04d}", f"user-{n % 7}", "MOCKAAPL", Decimal(3), Side.BUY,
                     ExecutionStatus.EXECUTED, Decimal("101.2500"), T0 + timedelta(milliseconds=n))


async def test_a_backlog_batch_over_the_body_limit_is_recorded_once(tmp_path):
    analytics = ChdbAnalytics(tmp_path / "analytics")
    app = RequestLimits(Starlette(routes=internal_routes(analytics, lambda request: True)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = HttpAnalytics(f"http://127.0.0.1:{port}", "internal-token", timeout=30)
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        trades = [trade(n) for n in range(TRADES)]
        import orjson
        assert len(orjson.dumps([trade_executed_payload(t) for t in trades])) > MAX_BODY_BYTES
        await client.record(trades)
        await client.record(trades[:300])  # a batch retried after a later part failed: no second copy
        [volume] = await client.volume(T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
        assert (volume.symbol, volume.trade_count, volume.volume) == ("MOCKAAPL", TRADES, Decimal(3 * TRADES))
        ticks = [PriceTick("MOCKAAPL", Decimal("100.0000") + n, T0 + timedelta(milliseconds=n))
                 for n in range(2000)]
        await client.record_ticks(ticks)
        bars = await client.bars("MOCKAAPL", "1m", None, T0 + timedelta(minutes=1), 10)
        assert sum(bar.ticks for bar in bars) == 2000
    finally:
        await client.close()
        server.should_exit = True
        thread.join(10)
        await analytics.close()
