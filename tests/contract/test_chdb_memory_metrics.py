"""The embedded analytics store (chDB, in-process) reports chDB's own memory
and parts on /metrics, so an operator watching the process that owns it grow
can tell chDB's share (tracked allocations, caches) from the rest."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from mocktrade import metrics
from mocktrade.adapters.embedded.analytics import MEMORY_FIGURES, ChdbAnalytics
from mocktrade.domain.model import PriceTick

from .test_analytics_contract import trade

pytestmark = pytest.mark.skipif(not metrics.AVAILABLE, reason="metrics switched off")


def gauge(name: str, **labels: str) -> float | None:
    return metrics.prometheus_client.REGISTRY.get_sample_value(name, labels)


async def test_a_write_samples_chdbs_memory_and_parts_into_the_gauges(tmp_path):
    now = datetime.now(timezone.utc)
    store = ChdbAnalytics(tmp_path / "analytics")
    try:
        await store.record_ticks([PriceTick("MOCKKO", Decimal("10.5"), now)])
        tracked = gauge("mocktrade_chdb_memory_bytes", kind="tracked")
        assert tracked is not None and tracked > 0  # chDB allocates to open its tables
        for kind in MEMORY_FIGURES:
            assert gauge("mocktrade_chdb_memory_bytes", kind=kind) is not None
        assert gauge("mocktrade_chdb_parts", state="active") >= 1  # the tick's part
        # Sampled at most once a minute: the next write does not query again.
        metrics.CHDB_PARTS.labels("active").set(-1)
        await store.record([trade("o1", "MOCKKO", "1", "10.0000", now)])
        assert gauge("mocktrade_chdb_parts", state="active") == -1
    finally:
        await store.close()
