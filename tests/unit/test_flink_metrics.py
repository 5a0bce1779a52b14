"""The execution lag the Flink execution operator reports (jobs/flink/metrics.py)."""

from __future__ import annotations

import orjson

from mocktrade.jobs.flink.metrics import OPERATOR_METRICS, execution_lag_ms, prometheus_name


def event(payload: dict) -> bytes:
    return orjson.dumps({"eventId": "e", "payload": payload})


ORDER = event({"orderId": "o1", "orderTimestamp": "2026-12-01T10:00:00.000Z"})


def test_lag_from_acceptance_to_execution_in_ms():
    executed = event({"orderId": "o1", "status": "EXECUTED", "executionTimestamp": "2026-12-01T10:00:00.250Z"})
    assert execution_lag_ms(ORDER, executed) == 250


def test_no_lag_for_a_failed_order_another_order_or_garbage():
    failed = event({"orderId": "o1", "status": "FAILED_INSUFFICIENT_FUNDS",
                    "executionTimestamp": "2026-12-01T10:00:01Z"})
    other = event({"orderId": "o2", "status": "EXECUTED", "executionTimestamp": "2026-12-01T10:00:01Z"})
    assert execution_lag_ms(ORDER, failed) is None
    assert execution_lag_ms(ORDER, other) is None
    assert execution_lag_ms(b"not json", other) is None
    assert execution_lag_ms(ORDER, event({"orderId": "o1", "status": "EXECUTED",
                                          "executionTimestamp": "yesterday"})) is None


def test_a_clock_step_backwards_is_no_negative_lag():
    early = event({"orderId": "o1", "status": "EXECUTED", "executionTimestamp": "2026-12-01T09:59:59Z"})
    assert execution_lag_ms(ORDER, early) == 0


def test_prometheus_names_of_the_operator_metrics():
    assert prometheus_name("eventsProcessed") == "flink_taskmanager_job_task_operator_eventsProcessed"
    assert {"eventsProcessed", "deadLettered", "executionLagMs"} <= OPERATOR_METRICS
