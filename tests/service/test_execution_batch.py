"""One execution batch over the embedded adapters: what it writes to the log
and how (the per-order CPU work was cut; the events must not change)."""

from __future__ import annotations

from decimal import Decimal

from mocktrade.domain.events import (TOPIC_ORDER_UPDATES, TOPIC_TRADE_EXECUTED,
                                     TOPIC_TRADE_ORDERS, decode_envelope, encode,
                                     executed_event_id, order_update_event_id,
                                     order_update_payload, trade_executed_payload,
                                     trade_order_payload)
from mocktrade.domain.model import Order, OrderType, Side, TimeInForce
from mocktrade.jobs.execution import ExecutionHandler

from .conftest import NOW


async def _read_all(log, topic):
    consumer = log.consumer(topic, "check")
    try:
        return await consumer.poll(1000, 0.05)
    finally:
        await consumer.close()


async def test_a_batch_writes_the_events_a_record_at_a_time_would_in_one_log_transaction(backends):
    b = backends
    await b.portfolios.create_account("bob", Decimal("50.00"), NOW)
    orders = [
        Order("fill-1", "alice", "MOCKAAPL", Decimal("2"), Side.BUY, NOW),
        Order("fill-2", "alice", "MOCKMSFT", Decimal("1"), Side.BUY, NOW),
        Order("rest-1", "alice", "MOCKAAPL", Decimal("1"), Side.BUY, NOW, OrderType.LIMIT,
              TimeInForce.GTC, limit_price=Decimal("90.0000")),
        Order("poor-1", "bob", "MOCKAAPL", Decimal("1"), Side.BUY, NOW),  # fails: funds
    ]
    await b.event_log.publish_many(TOPIC_TRADE_ORDERS, [
        (o.user_id, encode("test", trade_order_payload(o)), None) for o in orders])
    execution = ExecutionHandler(b.portfolios, b.prices, b.event_log, clock=lambda: NOW)
    consumer = b.event_log.consumer(TOPIC_TRADE_ORDERS, "exec")
    batch = await consumer.poll(100, 0.05)
    assert len(batch) == len(orders)
    await execution.handle(batch)
    await consumer.close()

    updates = await _read_all(b.event_log, TOPIC_ORDER_UPDATES)
    executed = await _read_all(b.event_log, TOPIC_TRADE_EXECUTED)
    # Both topics in one transaction: the log stamps every row of one with one time.
    assert len({r.timestamp for r in updates + executed}) == 1

    # Every event is the one built from the stored order alone.
    expected_updates = {}
    for o in orders:
        state = await b.portfolios.order(o.order_id)
        for t in state.transitions:
            expected_updates[(state.user_id, t.seq)] = order_update_payload(state, t)
    got_updates = {}
    for r in updates:
        envelope = decode_envelope(r.value)
        key = (envelope.payload["userId"], envelope.payload["seq"])
        assert envelope.event_id == order_update_event_id(*key)
        got_updates[key] = dict(envelope.payload)
    assert got_updates == expected_updates
    assert len(updates) == 2 + 2 + 2 + 2  # accepted+filled twice, accepted+open, accepted+failed

    got_executed = {}
    for r in executed:
        envelope = decode_envelope(r.value)
        assert envelope.event_id == executed_event_id(envelope.payload["orderId"])
        got_executed[envelope.payload["orderId"]] = dict(envelope.payload)
    assert set(got_executed) == {"fill-1", "fill-2", "poor-1"}
    for order_id, payload in got_executed.items():
        assert payload == trade_executed_payload(await b.portfolios.execution(order_id))
    assert got_executed["poor-1"]["status"] == "FAILED_INSUFFICIENT_FUNDS"
    assert execution.stats.executed == 2 and execution.stats.opened == 1
