"""Execution and persistence jobs over the embedded adapters."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from mocktrade.domain.events import (TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS, encode,
                                     trade_order_payload)
from mocktrade.domain.model import ExecutionStatus, Order, Side
from mocktrade.jobs.execution import ExecutionHandler
from mocktrade.jobs.persistence import PersistenceHandler
from mocktrade.ports import TradeQuery
from mocktrade.services.reconciliation import reconcile

from .conftest import NOW


async def drain(log, topic, group, handler):
    consumer = log.consumer(topic, group)
    try:
        while records := await consumer.poll(1000, 0.05):
            await handler(records)
            await consumer.commit(records)
    finally:
        await consumer.close()


async def publish_order(log, order_id, side="BUY", quantity="2", symbol="MOCKAAPL"):
    order = Order(order_id, "alice", symbol, Decimal(quantity), Side(side), NOW)
    await log.publish(TOPIC_TRADE_ORDERS, "alice", encode("test", trade_order_payload(order)))


async def test_orders_flow_to_portfolio_history_and_analytics(backends):
    b = backends
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    persistence = PersistenceHandler(b.history, b.analytics, b.event_log)
    await publish_order(b.event_log, "o1", "BUY", "5")
    await publish_order(b.event_log, "o2", "SELL", "2")
    await publish_order(b.event_log, "o3", "BUY", "100")  # too expensive at execution
    await publish_order(b.event_log, "o1", "BUY", "5")  # redelivered duplicate
    await b.event_log.publish(TOPIC_TRADE_ORDERS, "alice", b"garbage")
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)
    await drain(b.event_log, TOPIC_TRADE_EXECUTED, "persist", persistence.handle)

    portfolio = await b.portfolios.get("alice")
    assert portfolio.cash == Decimal("700.00") and dict(portfolio.holdings) == {"MOCKAAPL": Decimal("3")}
    page = await b.history.search(TradeQuery(user_id="alice"))
    assert page.total_count == 3
    statuses = {t.order_id: t.status for t in page.trades}
    assert statuses == {"o1": ExecutionStatus.EXECUTED, "o2": ExecutionStatus.EXECUTED,
                        "o3": ExecutionStatus.FAILED_INSUFFICIENT_FUNDS}
    [row] = await b.analytics.volume(NOW - timedelta(hours=1), NOW + timedelta(seconds=1))
    assert row.symbol == "MOCKAAPL" and row.volume == Decimal("7") and row.trade_count == 2
    assert execution.stats.dead_lettered == 1
    dlq = b.event_log.consumer(TOPIC_TRADE_ORDERS + ".dlq", "t")
    [dead] = await dlq.poll(10, 0.05)
    assert dead.value == b"garbage" and "dlq.reason" in dead.headers
    report = await reconcile(b.portfolios, b.history, b.event_log)
    assert report.ok, report.violations


async def test_reconcile_names_a_broken_portfolio(backends):
    b = backends
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    await publish_order(b.event_log, "o1", "BUY", "1")
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)
    report = await reconcile(b.portfolios, b.history, b.event_log)
    assert not report.ok
    assert any("o1 missing from history" in v for v in report.violations)


class _ExecutesOnFirstRead:
    """The real event log, except that verify's first read of it first lets
    the execution job run: an order executes between verify's pass over the
    store and its pass over the log, as it may on a live platform."""

    def __init__(self, log, execute):
        self._log, self._execute = log, execute

    def __getattr__(self, name):
        return getattr(self._log, name)

    def consumer(self, *args, **kwargs):
        inner, execute = self._log.consumer(*args, **kwargs), self

        class _Consumer:
            def __getattr__(self, name):
                return getattr(inner, name)

            async def poll(self, *a, **k):
                if execute._execute is not None:
                    run, execute._execute = execute._execute, None
                    await run()
                return await inner.poll(*a, **k)

        return _Consumer()


async def test_reconcile_judges_an_order_that_ends_while_it_reads(backends):
    b = backends
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    persistence = PersistenceHandler(b.history, b.analytics, b.event_log)
    await publish_order(b.event_log, "o1", "BUY", "1")
    await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)
    await drain(b.event_log, TOPIC_TRADE_EXECUTED, "persist", persistence.handle)
    await publish_order(b.event_log, "o2", "BUY", "1")  # still in flight when verify starts

    async def execute_o2():
        await drain(b.event_log, TOPIC_TRADE_ORDERS, "exec", execution.handle)

    report = await reconcile(b.portfolios, b.history, _ExecutesOnFirstRead(b.event_log, execute_o2))
    assert report.ok, report.violations
    assert report.orders == 2 and report.outcomes == 2
