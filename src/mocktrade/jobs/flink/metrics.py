"""What the Flink jobs report through Flink's metric system, by name.

Pure Python (no pyflink): the operators (PyFlink venv) register these in
their operator metric group, and the deployment-file tests (project venv)
check the Grafana dashboard against them. Flink's Prometheus reporter
(`metrics.reporter.prom.*`, enabled by MOCKTRADE_FLINK_METRICS_PORT on the
mini-cluster, by FLINK_PROPERTIES in docker-compose.yml's cluster) serves an
operator metric NAME as `flink_taskmanager_job_task_operator_NAME`, labelled
job_name, task_name, operator_name, subtask_index and so on.
"""

from __future__ import annotations

from datetime import datetime

import orjson

PROMETHEUS_PREFIX = "flink_taskmanager_job_task_operator_"

# Counters.
EVENTS_PROCESSED = "eventsProcessed"  # records handled by an operator (every job)
DEAD_LETTERED = "deadLettered"        # records sent to <topic>.dlq
HANDLER_COUNTERS = ("executed", "failed", "persisted", DEAD_LETTERED, "ticksRecorded",
                    "openOrdersLoaded")
TRIGGER_COUNTERS = ("ticks", "updates", "triggers", "expiries", DEAD_LETTERED)
# Gauge: accepted -> executed of the last market order the execution operator
# executed, in ms (a histogram would cost a PyFlink distribution per record;
# Prometheus' max_over_time of the gauge gives the worst one in a window).
EXECUTION_LAG_MS = "executionLagMs"

OPERATOR_METRICS = frozenset({EVENTS_PROCESSED, *HANDLER_COUNTERS, *TRIGGER_COUNTERS, EXECUTION_LAG_MS})


def prometheus_name(metric: str) -> str:
    return PROMETHEUS_PREFIX + metric


def _payload(value: bytes) -> dict:
    try:
        payload = orjson.loads(value).get("payload")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def execution_lag_ms(order_event: bytes, executed_event: bytes) -> int | None:
    """ms from a trade_orders event's orderTimestamp to the executionTimestamp
    of its trade_executed event, if that executed it (None otherwise)."""
    executed = _payload(executed_event)
    if executed.get("status") != "EXECUTED":
        return None
    order = _payload(order_event)
    if order.get("orderId") != executed.get("orderId"):
        return None
    accepted, done = _moment(order.get("orderTimestamp")), _moment(executed.get("executionTimestamp"))
    if accepted is None or done is None:
        return None
    return max(round((done - accepted).total_seconds() * 1000), 0)
