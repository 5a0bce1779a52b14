"""The platform's Prometheus instruments, and the cheap calls that feed them.

Every process keeps its own values in prometheus_client's default registry
(with its process and GC collectors) and serves them at /metrics
(services/metrics_http.py). Label children are made once and kept, so a hot
path pays a counter increment or a histogram observation and nothing else:
no label lookup, no allocation.

Without prometheus_client (the PyFlink venv imports the job handlers but has
no need for this), or with MOCKTRADE_METRICS=off (to measure what metrics
cost: bench/orders.py --observability-matrix), every instrument is a no-op
and /metrics answers 503.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import datetime
from typing import Any

log = logging.getLogger("mocktrade.metrics")

# Read once at import: the instruments below are made at import time.
SWITCHED_OFF = os.environ.get("MOCKTRADE_METRICS", "on").strip().lower() in ("off", "0", "false", "no")

prometheus_client: Any = None
if not SWITCHED_OFF:
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover - the PyFlink venv
        prometheus_client = None

if prometheus_client is None:
    class _Noop:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def labels(self, *args: Any, **kwargs: Any) -> "_Noop":
            return self

        def remove(self, *args: Any) -> None:
            pass

        def inc(self, amount: float = 1) -> None:
            pass

        def dec(self, amount: float = 1) -> None:
            pass

        def set(self, value: float) -> None:
            pass

        def observe(self, amount: float) -> None:
            pass

    Counter = Gauge = Histogram = _Noop  # type: ignore[misc, assignment]
else:
    from prometheus_client import Counter, Gauge, Histogram

    # `_created` series double the output and nobody here reads them.
    prometheus_client.disable_created_metrics()

AVAILABLE = prometheus_client is not None

# Seconds; from the fast path of an in-process call to a slow dependency.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)
# A market order executes in milliseconds; a resting one may wait for hours.
EXECUTION_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                         5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0)

# -- orders (the HTTP process that serves POST /v1/orders) ---------------------

ORDERS = Counter("mocktrade_orders_total",
                 "Orders answered by POST /v1/orders, by outcome: accepted, or the error code "
                 "of the rejection", ["outcome"])
ORDER_ACCEPT_SECONDS = Histogram("mocktrade_order_accept_seconds",
                                 "Time to accept an order: validation, idempotency key and "
                                 "publish to trade_orders", buckets=FAST_BUCKETS)
# Every error code _place answers with; another one gets its child on first use.
ORDER_REJECTIONS = ("invalid_request", "invalid_order", "unauthorized", "rate_limited",
                    "insufficient_funds", "insufficient_shares", "idempotency_conflict",
                    "client_order_id_taken", "no_account", "price_unavailable",
                    "dependency_unavailable")
_ORDERS_ACCEPTED = ORDERS.labels("accepted")
_ORDERS_REJECTED = {code: ORDERS.labels(code) for code in ORDER_REJECTIONS}


def order_accepted(seconds: float) -> None:
    _ORDERS_ACCEPTED.inc()
    ORDER_ACCEPT_SECONDS.observe(seconds)


def order_rejected(code: str) -> None:
    child = _ORDERS_REJECTED.get(code)
    if child is None:
        child = _ORDERS_REJECTED[code] = ORDERS.labels(code)
    child.inc()


# -- execution (the portfolio owner) ------------------------------------------

EXECUTION_LAG = Histogram("mocktrade_order_execution_lag_seconds",
                          "From an order's acceptance to its execution (EXECUTED outcomes "
                          "only; a resting order's wait included)", buckets=EXECUTION_LAG_BUCKETS)
EXECUTIONS = Counter("mocktrade_executions_total",
                     "Orders that reached a final outcome in the execution job, by status",
                     ["status"])
_EXECUTIONS = {status: EXECUTIONS.labels(status)
               for status in ("EXECUTED", "FAILED", "CANCELED", "EXPIRED")}


def order_final(status: str, order_timestamp: datetime | None,
                execution_timestamp: datetime) -> None:
    child = _EXECUTIONS.get(status)
    if child is None:
        child = _EXECUTIONS[status] = EXECUTIONS.labels(status)
    child.inc()
    if status == "EXECUTED" and order_timestamp is not None:
        EXECUTION_LAG.observe(max((execution_timestamp - order_timestamp).total_seconds(), 0.0))


# -- consumers (every run_consumer loop) ----------------------------------------

EVENTS_PROCESSED = Counter("mocktrade_events_processed_total",
                           "Log records handled (and then committed) by a job, per consumer "
                           "group", ["job"])
CONSUMER_LAG = Gauge("mocktrade_consumer_lag_records",
                     "Records in the log not yet read by the group's consumer in this process "
                     "(end offset minus position), sampled every few seconds",
                     ["group", "topic", "partition"])
DEAD_LETTERS = Counter("mocktrade_dead_letters_total",
                       "Records sent to <topic>.dlq, by the topic they came from", ["topic"])

LAG_SAMPLE_SECONDS = 5.0
# Groups made afresh on every run (the trigger book's, each order stream's)
# end in 12 hex digits; the metrics name the kind, not the run.
_PER_RUN_SUFFIX = re.compile(r"-[0-9a-f]{12}$")


def job_name(group: str) -> str:
    return _PER_RUN_SUFFIX.sub("", group)


class ConsumerMeter:
    """What one consumer loop reports: records processed, and its lag now and then."""

    __slots__ = ("_processed", "_group", "_topic", "_lag", "_next_sample")

    def __init__(self, group: str, topic: str):
        self._group, self._topic = job_name(group), topic
        self._processed = EVENTS_PROCESSED.labels(self._group)
        self._lag: dict[int, Any] = {}
        self._next_sample = 0.0

    def processed(self, count: int) -> None:
        self._processed.inc(count)

    async def sample_lag(self, consumer: Any) -> None:
        """Ask the consumer for its lag at most every LAG_SAMPLE_SECONDS."""
        now = time.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + LAG_SAMPLE_SECONDS
        lag = getattr(consumer, "lag", None)
        if lag is None:
            return
        try:
            lags = await lag()
        except Exception as exc:  # noqa: BLE001 - a metric never stops a job
            log.debug("consumer lag not sampled", extra={"topic": self._topic, "reason": repr(exc)})
            return
        for partition in [p for p in self._lag if p not in lags]:  # no longer ours
            self._remove(partition)
        for partition, records in lags.items():
            child = self._lag.get(partition)
            if child is None:
                child = self._lag[partition] = CONSUMER_LAG.labels(self._group, self._topic,
                                                                   str(partition))
            child.set(records)

    def close(self) -> None:
        for partition in list(self._lag):
            self._remove(partition)

    def _remove(self, partition: int) -> None:
        del self._lag[partition]
        try:
            CONSUMER_LAG.remove(self._group, self._topic, str(partition))
        except KeyError:
            pass  # another loop of the same group and topic removed it


def dead_lettered(topic: str) -> None:
    DEAD_LETTERS.labels(topic).inc()


# -- prices (ingestion, market data) -------------------------------------------

FEED_TICKS = Counter("mocktrade_feed_ticks_total", "Feed ticks ingested and published to "
                                                   "market_data")
FEED_TICKS_DROPPED = Counter("mocktrade_feed_ticks_dropped_total",
                             "Feed ticks dropped unpublished: the oldest waiting ones, while the "
                             "event log was too slow and the ingestion buffer full")
FEED_CLOCK_CORRECTIONS = Counter(
    "mocktrade_feed_clock_corrections_total",
    "Feed ticks recorded at another time than the feed said (domain/feed_clock.py): "
    "kind=clock (too far from the platform's clock), kind=order (not after the symbol's last)",
    ["kind"])
WS_CLIENTS = Gauge("mocktrade_ws_clients", "Connected market-data WebSocket clients")
WS_DROPPED = Counter("mocktrade_ws_dropped_clients_total",
                     "WebSocket clients disconnected for falling behind (1013)")
PRICE_PUSH_SECONDS = Histogram("mocktrade_price_push_seconds",
                               "From a tick's feed timestamp to its fan-out to WebSocket clients",
                               buckets=FAST_BUCKETS)


def price_fanned_out(feed_timestamp: datetime) -> None:
    PRICE_PUSH_SECONDS.observe(max(time.time() - feed_timestamp.timestamp(), 0.0))


# -- HTTP (services/metrics_http.py) ---------------------------------------------

HTTP_SECONDS = Histogram("mocktrade_http_request_duration_seconds",
                         "HTTP requests, by method, route template and status",
                         ["method", "route", "status"], buckets=FAST_BUCKETS)


# -- analytics (chDB, in the process that owns it: adapters/embedded/analytics.py)

CHDB_MEMORY = Gauge("mocktrade_chdb_memory_bytes",
                    "chDB's memory in this process, from its system.metrics, sampled about once "
                    "a minute: kind=tracked (all it has allocated, caches included), or one of "
                    "its caches", ["kind"])
CHDB_PARTS = Gauge("mocktrade_chdb_parts",
                   "Data parts of chDB's tables in this process: state=active, or outdated "
                   "(merged away, not yet removed)", ["state"])
