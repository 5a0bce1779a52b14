"""The Flink jobs' metrics through Flink's metric system and its Prometheus reporter.

On the platform of conftest.py (every job on a Flink mini-cluster, each with
the Prometheus reporter on a port of MOCKTRADE_FLINK_METRICS_PORT's range):
orders placed over HTTP show up, scraped as Prometheus text, in the
operators' eventsProcessed counters of the execution and persistence jobs,
and as the execution operator's executionLagMs gauge; every Flink series the
Grafana dashboard queries is among those scraped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from mocktrade.jobs.flink.metrics import (DEAD_LETTERED, EVENTS_PROCESSED, EXECUTION_LAG_MS,
                                          prometheus_name)
from tests.e2e.conftest import RunningPlatform, wait_for
from tests.flink.conftest import USERS
from tests.flink.test_flink_jobs import pytestmark

pytestmark = pytestmark  # same gating as the other Flink tests

DASHBOARD = Path(__file__).resolve().parents[2] / "infra/grafana/dashboards/mocktrade.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def scrape(platform: RunningPlatform) -> str:
    """Every reporter's text (one per job's mini-cluster)."""
    texts = []
    for port in platform.flink_metrics_ports:
        try:
            texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        except httpx.HTTPError:
            pass
    return "\n".join(texts)


def total(text: str, metric: str, job: str) -> float | None:
    """Sum of the operator metric over the job's subtasks (None: no such series).
    The reporter writes label values with every character outside [a-zA-Z0-9_]
    as "_": job mocktrade-execution is job_name="mocktrade_execution"."""
    values = [float(value) for name, labels, value in SAMPLE.findall(text)
              if name == prometheus_name(metric) and f'job_name="mocktrade_{job}"' in (labels or "")]
    return sum(values) if values else None


def test_the_flink_jobs_report_their_metrics_through_the_prometheus_reporter(flink_cluster):
    before = scrape(flink_cluster)
    executed_before = total(before, EVENTS_PROCESSED, "execution") or 0.0
    with flink_cluster.client(USERS[1]) as client:
        for _ in range(10):
            r = client.post("/v1/orders", json={"symbol": "MOCKMSFT", "quantity": "1", "side": "BUY"})
            assert r.status_code == 202, r.text

    def counted() -> bool:
        text = scrape(flink_cluster)
        return ((total(text, EVENTS_PROCESSED, "execution") or 0) >= executed_before + 10
                and (total(text, EVENTS_PROCESSED, "persistence") or 0) >= 10
                and (total(text, EXECUTION_LAG_MS, "execution") or 0) > 0)
    # Python metrics reach Java with each finished bundle, the reporter on each scrape.
    try:
        wait_for(counted, timeout=90, interval=1)
    except AssertionError:
        text = scrape(flink_cluster)
        seen = sorted({f"{name}{labels}" for name, labels, _ in SAMPLE.findall(text)
                       if "eventsProcessed" in name or "executionLag" in name})
        raise AssertionError(
            f"ports {flink_cluster.flink_metrics_ports}; executed before {executed_before}, now "
            f"{[total(text, EVENTS_PROCESSED, j) for j in ('execution', 'persistence')]}, lag "
            f"{total(text, EXECUTION_LAG_MS, 'execution')}; series: {seen[:20]}") from None
    text = scrape(flink_cluster)
    assert total(text, EVENTS_PROCESSED, "triggers") is not None  # ticks flow through it
    assert total(text, DEAD_LETTERED, "execution") is not None
    # An order executes in ms to s here; a lag of minutes would be a unit mistake.
    assert 0 < total(text, EXECUTION_LAG_MS, "execution") < 60_000

    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bflink_[a-zA-Z0-9_]+", target["expr"]))
    scraped = {name for name, _, _ in SAMPLE.findall(text)}
    assert queried and queried <= scraped, queried - scraped
