"""Resting orders with the execution and trigger jobs on Flink.

On the platform of conftest.py (every job on Flink): a LIMIT order published
to trade_orders rests (OPEN, cash reserved) until a market_data tick crosses
it, then the trigger job's TRIGGER fills it at the tick's price; a CANCEL on
order_commands cancels an open order; a DAY order expires at its expireAt
(the trigger job's processing-time timer); and kill -9 of the trigger job's
Flink JVM, then its restart from the last checkpoint, keeps a resting order
(in keyed state, not re-read from the log) that a later tick fills once; and
a first start (checkpoints gone) with order_updates truncated, as retention
would, still knows a resting order: loaded from the portfolio store.

Each test trades its own symbols (names the feed never ticks), so only the
ticks a test publishes move them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.e2e.conftest import RunningPlatform, wait_for
from tests.flink.conftest import group_is_at_the_end, job_ready

pytestmark = [
    pytest.mark.e2e, pytest.mark.stack,
    pytest.mark.skipif(os.environ.get("MOCKTRADE_TEST_FLINK") == "0",
                       reason="MOCKTRADE_TEST_FLINK=0 leaves the Flink jobs out"),
]

TRADER = "resting1"
CASH = Decimal("100000.00")


@pytest.fixture(scope="module")
def platform(flink_cluster):
    flink_cluster.cli("accounts", "create", TRADER, "--cash", str(CASH))
    return flink_cluster


def symbol() -> str:
    return f"FLK{uuid.uuid4().hex[:6].upper()}"


# -- publishing to, and reading, the platform's topics -------------------------------

def _log(platform: RunningPlatform):
    from mocktrade.adapters.kafka import KafkaEventLog

    return KafkaEventLog(platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"],
                         topic_prefix=platform.env["MOCKTRADE_TABLE_PREFIX"])


def publish(platform: RunningPlatform, topic: str, key: str, value: bytes) -> None:
    async def send() -> None:
        log = _log(platform)
        try:
            await log.publish(topic, key, value)
        finally:
            await log.close()
    asyncio.run(send())


def place_limit(platform: RunningPlatform, sym: str, limit: str, quantity: str = "2",
                expires_in: float | None = None) -> str:
    """A BUY LIMIT order, as the order service publishes one to trade_orders."""
    from mocktrade.domain.events import encode, trade_order_payload
    from mocktrade.domain.model import Order, OrderType, Side, TimeInForce

    now = datetime.now(timezone.utc)
    order = Order(str(uuid.uuid4()), TRADER, sym, Decimal(quantity), Side.BUY, now, OrderType.LIMIT,
                  TimeInForce.DAY if expires_in else TimeInForce.GTC, Decimal(limit),
                  expires_at=now + timedelta(seconds=expires_in) if expires_in else None)
    publish(platform, "trade_orders", TRADER, encode("order-service", trade_order_payload(order)))
    return order.order_id


def tick(platform: RunningPlatform, sym: str, price: str) -> None:
    from mocktrade.domain.events import encode, market_data_payload
    from mocktrade.domain.model import PriceTick

    value = encode("ingestion", market_data_payload(PriceTick(sym, Decimal(price), datetime.now(timezone.utc))))
    publish(platform, "market_data", sym, value)


def cancel(platform: RunningPlatform, order_id: str) -> None:
    from mocktrade.domain.events import encode, order_command_payload
    from mocktrade.domain.lifecycle import CancelOrder

    command = CancelOrder(TRADER, order_id, datetime.now(timezone.utc))
    publish(platform, "order_commands", TRADER, encode("order-service", order_command_payload(command)))


def events(platform: RunningPlatform, topic: str, order_id: str) -> list[dict]:
    """Every record of `topic` about the order (envelopes), oldest first."""
    async def read() -> list[dict]:
        log = _log(platform)
        consumer = log.consumer(topic, f"check-{uuid.uuid4().hex[:8]}", reset="earliest")
        found, quiet_since = [], time.monotonic()
        try:
            while time.monotonic() - quiet_since < 3:
                records = await consumer.poll(1000, 0.5)
                if records:
                    quiet_since = time.monotonic()
                for record in records:
                    if order_id.encode() in record.value:
                        found.append(json.loads(record.value))
        finally:
            await consumer.close()
            await log.close()
        return found
    return asyncio.run(read())


def order(platform: RunningPlatform, order_id: str) -> dict:
    with platform.client(TRADER) as client:
        answer = client.get(f"/v1/orders/{order_id}")
    return answer.json() if answer.status_code == 200 else {}


def status_becomes(platform: RunningPlatform, order_id: str, status: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (lambda o: o if o.get("status") == status else None)(order(platform, order_id)),
                    timeout=timeout, interval=0.5)


def portfolio(platform: RunningPlatform) -> dict:
    with platform.client(TRADER) as client:
        return client.get(f"/v1/portfolio/{TRADER}").json()


def outcomes(platform: RunningPlatform, order_id: str) -> dict[str, dict]:
    """The order's trade_executed events by eventId (a replay re-sends the same event)."""
    return {e["eventId"]: e["payload"] for e in events(platform, "trade_executed", order_id)}


# -- tests ----------------------------------------------------------------------------

def test_a_resting_limit_order_is_filled_by_the_tick_that_crosses_it(platform):
    sym = symbol()
    order_id = place_limit(platform, sym, "100.00")
    opened = status_becomes(platform, order_id, "OPEN")
    assert Decimal(opened["reservedCash"]) == Decimal("200.00")
    tick(platform, sym, "100.50")  # above a buy limit: it keeps resting
    time.sleep(3)
    assert order(platform, order_id)["status"] == "OPEN"

    tick(platform, sym, "99.50")
    filled = status_becomes(platform, order_id, "EXECUTED")
    assert Decimal(filled["executionPrice"]) == Decimal("99.50")
    assert [t["status"] for t in filled["transitions"]] == ["ACCEPTED", "OPEN", "EXECUTED"]

    updates = events(platform, "order_updates", order_id)
    assert [u["payload"]["status"] for u in updates][:3] == ["ACCEPTED", "OPEN", "EXECUTED"]
    assert {u["payload"]["seq"] for u in updates} == {t["seq"] for t in filled["transitions"]}
    (outcome,) = outcomes(platform, order_id).values()
    assert (outcome["status"], Decimal(outcome["executionPrice"])) == ("EXECUTED", Decimal("99.50"))
    view = portfolio(platform)
    assert Decimal(view["holdings"][sym]) == Decimal("2")
    assert Decimal(view["reservedCash"]) == Decimal("0.00")


def test_a_cancel_on_order_commands_cancels_an_open_order_and_a_day_order_expires(platform):
    sym = symbol()
    order_id = place_limit(platform, sym, "50.00")
    day_order = place_limit(platform, sym, "10.00", expires_in=8)
    status_becomes(platform, order_id, "OPEN")
    cancel(platform, order_id)
    canceled = status_becomes(platform, order_id, "CANCELED")
    assert [t["status"] for t in canceled["transitions"]] == ["ACCEPTED", "OPEN", "PENDING_CANCEL", "CANCELED"]
    (outcome,) = outcomes(platform, order_id).values()
    assert outcome["status"] == "CANCELED"
    # Its trigger is gone too: a crossing tick now fills nothing.
    tick(platform, sym, "40.00")
    expired = status_becomes(platform, day_order, "EXPIRED", timeout=60)
    assert [t["status"] for t in expired["transitions"]] == ["ACCEPTED", "OPEN", "EXPIRED"]
    assert order(platform, order_id)["status"] == "CANCELED"
    assert {o["status"] for o in outcomes(platform, order_id).values()} == {"CANCELED"}
    assert sym not in portfolio(platform)["holdings"]


def service_starts(platform: RunningPlatform, job: str) -> list[dict]:
    path = platform.data_dir / "logs" / f"{job}.log"
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
            if '"starting flink job"' in line]


def restored_books(platform: RunningPlatform) -> list[dict]:
    """What the trigger job's function rebuilt from restored keyed state."""
    path = platform.data_dir / "flink" / "triggers" / "flink.log"
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
            if line.startswith('{"event":"trigger book restored"')]


def test_kill_9_of_the_trigger_job_keeps_a_resting_order_that_a_later_tick_fills_once(platform):
    sym = symbol()
    order_id = place_limit(platform, sym, "20.00", quantity="3")
    status_becomes(platform, order_id, "OPEN")
    # A completed checkpoint covers the OPEN update (offsets are committed with it).
    wait_for(lambda: group_is_at_the_end(platform, "order_updates", "trade-triggers"), timeout=60, interval=0.5)
    starts, seeded = len(service_starts(platform, "triggers")), len(seeded_books(platform))
    os.kill(int((platform.data_dir / "flink" / "triggers" / "jvm.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: len(service_starts(platform, "triggers")) > starts, timeout=60, interval=0.5)
    restore = service_starts(platform, "triggers")[-1]["restoreFrom"]
    checkpoints = platform.data_dir / "flink" / "triggers" / "checkpoints"
    assert restore and restore.startswith(f"{checkpoints.as_uri()}/"), restore
    time.sleep(2)
    wait_for(lambda: job_ready(platform, "triggers"), timeout=180, interval=1)

    tick(platform, sym, "19.00")
    filled = status_becomes(platform, order_id, "EXECUTED", timeout=90)
    assert Decimal(filled["executionPrice"]) == Decimal("19.00")
    # The order came back from the checkpoint's keyed state (the restored
    # source resumed after its OPEN update, it did not read it again).
    assert any(b["symbol"] == sym and b["restingOrders"] >= 1 for b in restored_books(platform))
    assert len(seeded_books(platform)) == seeded  # a restore does not load the store again
    time.sleep(3)  # a second fill would come now
    assert [o["status"] for o in outcomes(platform, order_id).values()] == ["EXECUTED"]
    assert Decimal(portfolio(platform)["holdings"][sym]) == Decimal("3")


def seeded_books(platform: RunningPlatform) -> list[dict]:
    """What the trigger job loaded from the portfolio store (first starts only)."""
    path = platform.data_dir / "flink" / "triggers" / "flink.log"
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines()
            if line.startswith('{"event":"trigger book seeded"')]


def truncate(platform: RunningPlatform, topic: str) -> None:
    """Delete every record of `topic` so far, as retention would."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": platform.env["MOCKTRADE_KAFKA_BOOTSTRAP"]})
    topic = platform.env["MOCKTRADE_TABLE_PREFIX"] + topic
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    ends = [TopicPartition(topic, tp.partition, f.result(10).offset) for tp, f in admin.list_offsets(
        {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}).items()]
    for f in admin.delete_records(ends).values():
        f.result(10)


def test_a_first_start_loads_the_stores_open_orders_the_log_no_longer_has(platform):
    sym = symbol()
    order_id = place_limit(platform, sym, "30.00")
    status_becomes(platform, order_id, "OPEN")
    wait_for(lambda: group_is_at_the_end(platform, "order_updates", "trade-triggers"), timeout=60, interval=0.5)
    # A first start (no checkpoint to restore) of a trigger job that reads
    # order_updates from the earliest record, none of them about the order.
    starts, seeded = len(service_starts(platform, "triggers")), len(seeded_books(platform))
    directory = platform.data_dir / "flink" / "triggers"
    os.kill(int((directory / "jvm.pid").read_text()), signal.SIGKILL)
    shutil.rmtree(directory / "checkpoints")  # the service waits >= 0.5 s before it looks
    truncate(platform, "order_updates")
    assert not events(platform, "order_updates", order_id)
    wait_for(lambda: len(service_starts(platform, "triggers")) > starts, timeout=60, interval=0.5)
    assert service_starts(platform, "triggers")[-1]["restoreFrom"] is None
    time.sleep(2)
    wait_for(lambda: job_ready(platform, "triggers"), timeout=180, interval=1)
    (load,) = seeded_books(platform)[seeded:]
    assert load["openOrders"] >= 1

    tick(platform, sym, "29.00")
    filled = status_becomes(platform, order_id, "EXECUTED", timeout=90)
    assert Decimal(filled["executionPrice"]) == Decimal("29.00")
    time.sleep(3)  # a second fill would come now
    assert [o["status"] for o in outcomes(platform, order_id).values()] == ["EXECUTED"]
