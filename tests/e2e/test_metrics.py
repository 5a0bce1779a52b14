"""/metrics of the embedded platform: one port covers the HTTP process and
the two job processes beside it (every sample labelled with its `process`)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from .conftest import RunningPlatform, wait_for

pytestmark = pytest.mark.e2e

EXPECTED = ("mocktrade_orders", "mocktrade_order_accept_seconds",
            "mocktrade_order_execution_lag_seconds", "mocktrade_consumer_lag_records",
            "mocktrade_events_processed", "mocktrade_dead_letters", "mocktrade_feed_ticks",
            "mocktrade_ws_clients", "mocktrade_ws_dropped_clients", "mocktrade_price_push_seconds",
            "mocktrade_http_request_duration_seconds", "mocktrade_executions",
            "mocktrade_metrics_source_up")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    running = RunningPlatform(tmp_path_factory.mktemp("metrics") / "data").start()
    yield running
    running.stop()


def scrape(base: str) -> dict:
    answer = httpx.get(f"{base}/metrics", timeout=10)  # no token: operators scrape it
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    """The sum of the family's samples named `sample` whose labels include `labels`."""
    name = sample or family
    return sum(s.value for s in families[family].samples
               if s.name == name and labels.items() <= s.labels.items())


def test_one_port_covers_every_process(embedded: RunningPlatform):
    async def watch_prices() -> None:
        async with websockets.connect(embedded.ws_url + "?vsn=2.0.0") as ws:
            await ws.send(json.dumps(["1", "1", "prices:MOCKAAPL", "phx_join", {}]))
            await asyncio.wait_for(ws.recv(), 5)
            families = await asyncio.to_thread(scrape, embedded.base)
            assert value(families, "mocktrade_ws_clients", process="platform") >= 1

    asyncio.run(watch_prices())
    with embedded.client("alice") as alice:
        for _ in range(3):
            placed = alice.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "1",
                                                    "side": "BUY"})
            assert placed.status_code == 202, placed.text
        assert alice.post("/v1/orders", json={"symbol": "MOCKAAPL", "quantity": "999999",
                                              "side": "BUY"}).status_code == 402
        assert alice.post("/v1/orders", json={"symbol": "NOSUCH", "quantity": "1",
                                              "side": "BUY"}).status_code == 400
        assert "/metrics" not in alice.get("/v1/openapi.json").json()["paths"]

    # The job processes' series arrive through the HTTP process's port: the
    # execution job's from the execution child, persistence's from its own.
    families = wait_for(lambda: (f := scrape(embedded.base)) and value(
        f, "mocktrade_order_execution_lag_seconds", "mocktrade_order_execution_lag_seconds_count",
        process="execution") >= 3 and value(
        f, "mocktrade_events_processed", "mocktrade_events_processed_total",
        job="trade-persistence", process="persistence") >= 3 and f, timeout=20, interval=0.2)
    assert set(EXPECTED) <= set(families)
    assert value(families, "mocktrade_metrics_source_up", process="execution") == 1
    assert value(families, "mocktrade_metrics_source_up", process="persistence") == 1
    assert value(families, "mocktrade_events_processed", "mocktrade_events_processed_total",
                 job="trade-execution", process="execution") >= 3
    assert value(families, "mocktrade_events_processed", "mocktrade_events_processed_total",
                 job="trade-execution", process="persistence") == 0
    assert value(families, "mocktrade_executions", "mocktrade_executions_total",
                 status="EXECUTED", process="execution") >= 3
    lag_sum = value(families, "mocktrade_order_execution_lag_seconds",
                    "mocktrade_order_execution_lag_seconds_sum", process="execution")
    assert 0 < lag_sum < 30  # three market orders, each executed within seconds
    groups = {s.labels["group"] for s in families["mocktrade_consumer_lag_records"].samples}
    assert {"trade-execution", "trade-persistence", "market-data"} <= groups
    assert all(s.value >= 0 for s in families["mocktrade_consumer_lag_records"].samples)

    # The HTTP process's own.
    orders = {s.labels["outcome"]: s.value for s in families["mocktrade_orders"].samples
              if s.labels["process"] == "platform"}
    assert orders["accepted"] == 3 and orders["insufficient_funds"] == 1
    assert orders["invalid_order"] + orders["invalid_request"] == 1
    assert value(families, "mocktrade_order_accept_seconds",
                 "mocktrade_order_accept_seconds_count", process="platform") == 3
    assert 0 < value(families, "mocktrade_order_accept_seconds",
                     "mocktrade_order_accept_seconds_sum") < 3
    assert value(families, "mocktrade_http_request_duration_seconds",
                 "mocktrade_http_request_duration_seconds_count",
                 method="POST", route="/v1/orders", status="202", process="platform") == 3
    assert value(families, "mocktrade_http_request_duration_seconds",
                 "mocktrade_http_request_duration_seconds_count",
                 method="GET", route="/healthz", process="execution") == 0  # nobody asked the child
    assert value(families, "mocktrade_feed_ticks", "mocktrade_feed_ticks_total") > 0
    assert value(families, "mocktrade_price_push_seconds",
                 "mocktrade_price_push_seconds_count", process="platform") > 0
    assert value(families, "mocktrade_ws_clients", process="platform") == 0  # it left
    # The standard process collectors, from every process.
    cpu = {s.labels["process"] for s in families["process_cpu_seconds"].samples}
    assert cpu == {"platform", "execution", "persistence"}
