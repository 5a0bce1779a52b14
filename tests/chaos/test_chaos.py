"""The chaos test in its CI form: the distributed deployment (consumer-group
jobs) on its own engines, four clients with idempotency keys and retries,
and a nemesis killing and pausing every service, job and engine for about a
minute (at least one fault per target); then the independent checker and
`mocktrade verify`. The Flink runner is left to bench/chaos.py --jobs flink:
its three mini-clusters alone take minutes to start here.

The assertions are about safety (nothing lost, nothing doubled, nothing
negative, every view agreeing with the outcomes) and liveness once healed;
how long the system was unavailable during a fault is reported, not judged.
bench/chaos.py runs the same for longer, and with the jobs on Flink.
"""

from __future__ import annotations

import os

import pytest

from tests.engines import ENABLED, SKIP_REASON

from .nemesis import ENGINES, JOBS, SERVICES
from .run import chaos_run

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)]

NEMESIS_SECONDS = float(os.environ.get("MOCKTRADE_CHAOS_SECONDS", "60"))


def test_no_order_lost_or_doubled_under_faults(tmp_path):
    report = chaos_run(tmp_path, NEMESIS_SECONDS, seed=int(os.environ.get("MOCKTRADE_CHAOS_SEED", "1")))
    print(report.text())
    assert {f.target for f in report.faults} == set(SERVICES + JOBS + ENGINES), report.text()
    assert report.history.acknowledged(), report.text()
    assert report.healed_after is not None, report.text()
    assert report.final_probe is not None, report.text()
    assert report.verdict.ok, report.text()
    assert report.verify_ok, report.text()
