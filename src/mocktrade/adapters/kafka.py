"""ports.EventLog over a real Kafka cluster, with confluent-kafka (librdkafka).

Publishing. One idempotent producer per log (enable.idempotence, acks=all):
`publish` returns only when the delivery report says the partition leader has
the record and every in-sync replica has it too, so a returned publish
survives the publisher being killed, and a retried send is never written
twice or out of order within a partition. Keys pick partitions with murmur2,
as a Java producer would, so other Kafka tools agree on where a userId or
symbol lives. If the cluster cannot take the record within `delivery_timeout`
(down, unreachable, no leader), `publish` raises DependencyUnavailable and
the caller answers 503; a record that timed out was never acknowledged, and
callers must not assume it was written (with an unreachable cluster it was
not). Headers (trace context among them) travel as Kafka headers.

librdkafka does the network work on its own threads; one daemon thread here
serves the delivery reports and hands them, one wake-up per batch, to the
event loop that waits for them, so the loop never blocks on the cluster.
linger.ms defaults to 0: a caller that awaits each publish (the feed
ingestion, one order per request) would pay any linger in full on every
record, while concurrent publishers are batched anyway, because records queue
up behind the requests in flight (bench/kafka_log.py: one awaited at a time
~1,800/s at linger 0 against ~540/s at 1 ms and ~340/s at 2 ms; 100
concurrent publishers ~20-26k/s with any of them).

Topics are created on first use (with the configured partition count and
replication factor) if they do not exist; the cluster is expected to run with
auto topic creation off. A topic is used only once every partition's leader
answers (ListOffsets): a partition created moments ago can refuse the first
produce requests ("not leader") yet take the next ones, and librdkafka then
counts the refused records as written, because a later batch of the same
producer succeeded ("implicit ack"; the broker, holding no state for a new
producer, accepted the gap). Those records would be acknowledged and lost.
Every name is prefixed by `topic_prefix`, and so is every consumer group, so
several deployments or tests can share one cluster.

Consuming. Each `consumer()` is one member of a Kafka consumer group, with
the classic protocol and cooperative-sticky assignment by default (a
rebalance moves only the partitions that change owner, and the client sets
the heartbeat: 1 s, session 10 s). `group_protocol="consumer"` selects KIP-848
instead; there the broker sets the heartbeat (5 s by default) and a member
of a topic created moments earlier can wait one heartbeat for partitions.
Auto commit is off: `commit` stores, per partition, the offset after the
highest record given, and never moves a partition back. It returns once the
group coordinator has answered, or after `delivery_timeout` without an
answer. Uncommitted records are delivered again after a restart or a
rebalance (at-least-once), which the idempotent handlers make harmless; so a
commit the cluster refuses (partitions lost to a rebalance, coordinator
unreachable) or leaves unanswered is logged, not raised: its records simply
come again. The commit is sent asynchronously and the member keeps polling
while it waits (records fetched meanwhile are kept for the next poll):
librdkafka's synchronous commit has no time limit, and while it waits, the
one thread that polls cannot serve the rebalance a restarted broker asks
for, so the group drops the member and its partitions stop. That fits what
a CI run showed (stop 10): after a broker restart the persistence member
stopped for good, every event it missed was in Kafka, uncommitted, and its
group had no member from 16 s after the restart. A librdkafka consumer is
not meant to be shared between threads, so each consumer owns one worker
thread that makes all its calls; a poll returns as soon as one record is
there, with whatever else is already fetched (up to max_records).

Where a member starts on a partition it is given: after the group's commit if
there is one; else, for reset="earliest", at the oldest record kept; for
reset="latest", at the first record stamped after the millisecond in which
`consumer()` was called (not after the group join, which finishes a little
later: a record published right after creating the consumer is not skipped,
as with the embedded log). Producers' clocks stamp records, so this is as
exact as those clocks agree, to the millisecond.

A consumer's first `poll` includes joining the group (tens of milliseconds on
a local broker, more if other members must first give up partitions); its
timeout counts from when the member has its partitions. Nor does a poll
return [] while a partition that held records at assignment has delivered
none yet (bounded by JOIN_WAIT), so [] means "nothing there", not "not
fetched yet", as with the embedded log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import Literal, Mapping, Sequence

from confluent_kafka import (OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError,
                             KafkaException, Message, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from ..ports import DependencyUnavailable, LogRecord, OutgoingRecord, offsets_after

log = logging.getLogger("mocktrade.kafka")
# librdkafka's own log lines and client errors; see _Throttle.
client_log = logging.getLogger("mocktrade.kafka.client")


# How long a consumer's first poll waits for the group to hand it partitions
# before its own timeout starts counting anyway.
JOIN_WAIT = 10.0
# A waiting poll looks at its close flag this often.
POLL_SLICE = 0.1
# How long the broker may hold a fetch that has no data. Low, because a
# partition that becomes ready while a fetch is in flight waits for it.
FETCH_WAIT_MS = 100
FLUSH_TIMEOUT = 10.0

# Errors that mean "the cluster cannot serve now", as opposed to a bug.
_UNAVAILABLE = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._DESTROY,
    KafkaError._WAIT_COORD, KafkaError._QUEUE_FULL, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NETWORK_EXCEPTION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
# A commit refused because the member lost the partition to a rebalance: the
# records go to the new owner again, which at-least-once delivery allows.
_LOST_OWNERSHIP = {
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST, KafkaError._NO_OFFSET,
    getattr(KafkaError, "STALE_MEMBER_EPOCH", -1), getattr(KafkaError, "FENCED_MEMBER_EPOCH", -1),
}


class KafkaRequestFailed(Exception):
    """The cluster refused a request for a reason other than being unavailable
    (a bug or a misconfiguration: record too large, topic not allowed, ...)."""


def _failure(error: KafkaError, what: str) -> Exception:
    if error.code() in _UNAVAILABLE or error.retriable() or error.fatal():
        return DependencyUnavailable("kafka", f"{what}: {error.str()}")
    return KafkaRequestFailed(f"{what}: {error.str()}")


def _unavailable(exc: Exception, what: str) -> Exception:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        return _failure(error, what)
    return DependencyUnavailable("kafka", f"{what}: {exc}")


class KafkaEventLog:
    """ports.EventLog on a Kafka cluster; see the module docstring."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = "", partitions: int = 4,
                 replication_factor: int = 1, client_id: str = "mocktrade",
                 delivery_timeout: float = 5.0, linger_ms: float = 0.0,
                 group_protocol: Literal["classic", "consumer"] = "classic"):
        if partitions < 1 or replication_factor < 1:
            raise ValueError("partitions and replication_factor must be at least 1")
        if group_protocol not in ("classic", "consumer"):
            raise ValueError("group_protocol must be 'classic' or 'consumer'")
        self.bootstrap, self.prefix = bootstrap, topic_prefix
        self._partitions, self._replication = partitions, replication_factor
        self._client_id, self._group_protocol = client_id, group_protocol
        self._delivery_timeout, self._linger_ms = delivery_timeout, linger_ms
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        # Delivery reports served by librdkafka, waiting to go to their loops.
        self._reports: deque[_Report] = deque()
        self._stopping = threading.Event()
        self._consumers: set[KafkaLogConsumer] = set()
        self._closed = False
        # Made now, not on the first publish: an idempotent producer spends
        # about half a second getting its producer id, better spent early.
        self._producer_client()

    # -- topics -----------------------------------------------------------

    def topic_name(self, topic: str) -> str:
        return self.prefix + topic

    def _admin_client(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = AdminClient({"bootstrap.servers": self.bootstrap,
                                           "client.id": f"{self._client_id}-admin"})
            return self._admin

    async def _ensure_topic(self, topic: str) -> str:
        name = self.topic_name(topic)
        if name not in self._known_topics:
            await asyncio.to_thread(self.ensure_topic_blocking, name)
        return name

    def ensure_topic_blocking(self, name: str) -> None:
        """Create the topic if it is missing; return once every partition has
        a leader that takes writes (see the module docstring for why)."""
        if name in self._known_topics:
            return
        admin, timeout = self._admin_client(), self._delivery_timeout
        deadline = time.monotonic() + timeout
        try:
            count = self._partition_count(admin, name, timeout)
            if not count:
                created = admin.create_topics(
                    [NewTopic(name, self._partitions, self._replication)],
                    request_timeout=timeout, operation_timeout=timeout)[name]
                try:
                    created.result(timeout=timeout + 1)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                while not (count := self._partition_count(admin, name, timeout)):
                    if time.monotonic() > deadline:
                        raise DependencyUnavailable("kafka", f"topic {name} not visible")
                    time.sleep(0.02)
            self._wait_for_leaders(admin, name, count, deadline)
        except KafkaException as exc:
            raise _unavailable(exc, f"topic {name}") from exc
        except FutureTimeout as exc:
            raise DependencyUnavailable("kafka", f"topic {name} timed out") from exc
        self._known_topics.add(name)

    @staticmethod
    def _partition_count(admin: AdminClient, name: str, timeout: float) -> int:
        metadata = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
        return len(metadata.partitions) if metadata is not None and metadata.error is None else 0

    def _wait_for_leaders(self, admin: AdminClient, name: str, count: int,
                          deadline: float) -> None:
        """Until every partition answers ListOffsets (its leader is online)."""
        while True:
            answers = admin.list_offsets(
                {TopicPartition(name, p): OffsetSpec.latest() for p in range(count)},
                request_timeout=self._delivery_timeout)
            refused = None
            for answer in answers.values():
                try:
                    answer.result(timeout=self._delivery_timeout + 1)
                except KafkaException as exc:
                    refused = exc
            if refused is None:
                return
            if time.monotonic() > deadline:
                raise refused
            time.sleep(0.02)

    # -- producing --------------------------------------------------------

    def _producer_client(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({
                "bootstrap.servers": self.bootstrap,
                "client.id": self._client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": self._linger_ms,
                "partitioner": "murmur2_random",  # what Java producers do
                "message.timeout.ms": int(self._delivery_timeout * 1000),
                "request.timeout.ms": int(self._delivery_timeout * 1000),
                "logger": client_log,
                "error_cb": _log_client_error,
            })
            self._poller = threading.Thread(target=self._serve_delivery_reports,
                                            name="kafka-delivery", daemon=True)
            self._poller.start()
        return self._producer

    def _serve_delivery_reports(self) -> None:
        producer = self._producer
        while not self._stopping.is_set():
            producer.poll(POLL_SLICE)
            self._hand_over_reports()

    def _hand_over_reports(self) -> None:
        """Pass the reports one poll served to their loops, one wake-up per loop."""
        if not self._reports:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Report]] = {}
        while True:
            try:
                report = self._reports.popleft()
            except IndexError:
                break
            by_loop.setdefault(report[0], []).append(report)
        for loop, reports in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, reports)
            except RuntimeError:
                pass  # that loop is closed; nobody is waiting any more

    async def publish(self, topic: str, key: str, value: bytes,
                      headers: Mapping[str, str] | None = None) -> None:
        name = await self._ensure_topic(topic)
        delivered = await self._send(name, key, value, headers)
        await delivered

    async def publish_many(self, topic: str, records: Sequence[OutgoingRecord]) -> None:
        """Publish a batch; return once every record is acknowledged.

        On failure some records of the batch may have been written; each key's
        records still keep their order.
        """
        name = await self._ensure_topic(topic)
        deliveries: list[asyncio.Future] = []
        try:
            for key, value, headers in records:
                deliveries.append(await self._send(name, key, value, headers))
        finally:
            # Even when handing over failed midway: what was handed over is
            # waited for, so no report goes unobserved.
            results = await asyncio.gather(*deliveries, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _send(self, name: str, key: str, value: bytes,
                    headers: Mapping[str, str] | None) -> asyncio.Future:
        """Hand the record to librdkafka; return the future its delivery report settles."""
        if self._closed:
            raise RuntimeError("event log is closed")
        loop = asyncio.get_running_loop()
        delivered = loop.create_future()
        reports = self._reports

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            reports.append((loop, delivered, error, name))

        encoded = [(k, v.encode()) for k, v in headers.items()] if headers else None
        producer = self._producer_client()
        deadline = time.monotonic() + self._delivery_timeout
        while True:
            try:
                producer.produce(name, value, key.encode(), headers=encoded,
                                 on_delivery=on_delivery)
                return delivered
            except BufferError:
                # The local queue is full: the cluster is slow or gone. Give the
                # delivery thread time to drain it, within the timeout.
                if time.monotonic() > deadline:
                    raise DependencyUnavailable("kafka", "producer queue full") from None
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                raise _unavailable(exc, f"publish to {name}") from exc

    # -- consuming --------------------------------------------------------

    def consumer(self, topic: str, group: str,
                 reset: Literal["earliest", "latest"] = "earliest") -> "KafkaLogConsumer":
        if reset not in ("earliest", "latest"):
            raise ValueError("reset must be 'earliest' or 'latest'")
        if self._closed:
            raise RuntimeError("event log is closed")
        consumer = KafkaLogConsumer(self, topic, group, reset)
        self._consumers.add(consumer)
        return consumer

    def _consumer_config(self, group: str, reset: str, on_commit=None) -> dict:
        config = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self._client_id,
            "group.id": self.prefix + group,
            "group.protocol": self._group_protocol,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": reset,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
            "logger": client_log,
            "error_cb": _log_client_error,
        }
        if on_commit is not None:
            config["on_commit"] = on_commit
        if self._group_protocol == "classic":
            # The new protocol keeps these on the broker.
            config.update({"partition.assignment.strategy": "cooperative-sticky",
                           "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000})
        return config

    def _forget(self, consumer: "KafkaLogConsumer") -> None:
        self._consumers.discard(consumer)

    # -- closing ----------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        if self._producer is not None:
            self._stopping.set()
            await asyncio.to_thread(self._poller.join)
            remaining = await asyncio.to_thread(self._producer.flush, FLUSH_TIMEOUT)
            self._hand_over_reports()
            if remaining:
                log.warning("kafka producer closed with records unacknowledged",
                            extra={"records": remaining})

    @property
    def closed(self) -> bool:
        return self._closed


# (loop of the publisher, its future, the error or None, topic)
_Report = tuple[asyncio.AbstractEventLoop, asyncio.Future, "KafkaError | None", str]


def _settle(reports: list[_Report]) -> None:
    """On the publisher's loop: settle each future from its delivery report."""
    for _loop, delivered, error, name in reports:
        if delivered.done():
            continue  # the publisher stopped waiting (cancelled)
        if error is None:
            delivered.set_result(None)
        else:
            delivered.set_exception(_failure(error, f"publish to {name}"))


def _log_client_error(error: KafkaError) -> None:
    client_log.warning("kafka client error %s: %s", error.name(), error.str(),
                       extra={"fatal": error.fatal()})


class _Throttle(logging.Filter):
    """Let one line of a kind through per interval.

    While a broker is down librdkafka reports every failed reconnect, dozens a
    second across clients; one line of each kind (facility or error code) per
    interval says as much.
    """

    def __init__(self, interval: float = 30.0):
        super().__init__()
        self.interval = interval
        self._last: dict[tuple, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        kind = (record.levelno, record.msg, args[0] if args else None)
        now = time.monotonic()
        if now - self._last.get(kind, float("-inf")) < self.interval:
            return False
        self._last[kind] = now
        return True


client_log.addFilter(_Throttle())


class KafkaLogConsumer:
    """ports.LogConsumer: one member of a Kafka consumer group, driven by one
    worker thread of its own (librdkafka consumers are not shared between threads)."""

    def __init__(self, log_: KafkaEventLog, topic: str, group: str, reset: str):
        self._log, self._topic, self._reset = log_, topic, reset
        self._name = log_.topic_name(topic)
        # reset="latest" starts at what is written from now on, not from the join.
        self._created_ms = int(time.time() * 1000)
        self._group = group
        # Made by the worker once the topic exists: a KIP-848 member created
        # before its topic waits a heartbeat interval (5 s) for partitions.
        self._consumer: Consumer | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-{topic}")
        self._subscribed = False
        self._assigned = threading.Event()
        # partition -> its end at assignment, while none of its records came yet
        self._behind: dict[int, int] = {}
        self._behind_until = 0.0
        self._closing = False
        self._closed = False
        # Records a cancelled poll had already taken; the next poll returns them first.
        self._pending: list[LogRecord] = []
        self._committed: dict[int, int] = {}
        # Per partition, the highest offset a commit answer (either way) has
        # come back for: what a waiting commit looks for.
        self._answered: dict[int, int] = {}
        # Join the group now; the first poll finds it (nearly) done.
        self._worker.submit(self._subscribe_quietly)

    # -- joining ----------------------------------------------------------

    def _subscribe_quietly(self) -> None:
        try:
            self._subscribe()
        except Exception as exc:  # noqa: BLE001 - retried by the next poll
            log.warning("kafka consumer cannot subscribe yet",
                        extra={"topic": self._name, "reason": str(exc)})

    def _subscribe(self) -> None:
        if self._subscribed or self._closing:
            return
        self._log.ensure_topic_blocking(self._name)
        if self._consumer is None:
            self._consumer = Consumer(self._log._consumer_config(self._group, self._reset,
                                                                 self._on_commit))
        self._consumer.subscribe([self._name], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self._subscribed = True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at an explicit offset, all resolved at once,
        so the first fetch already covers every partition (see module docstring)."""
        deadline = time.monotonic() + self._log._delivery_timeout
        while True:
            try:
                start, ends = self._start_positions(consumer, partitions)
                break
            except KafkaException as exc:
                # A topic created moments ago may not have its leaders ready.
                error = exc.args[0]
                if (error.retriable() or error.code() in _UNAVAILABLE) \
                        and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                log.warning("kafka consumer falls back to auto.offset.reset: %s", exc,
                            extra={"topic": self._name})
                start, ends = partitions, {}
                break
        consumer.incremental_assign(start)
        # Records that were there at assignment: until the first of a partition
        # arrives, an empty poll would only mean "not fetched yet".
        self._behind.update({tp.partition: ends[tp.partition] for tp in start
                             if 0 <= tp.offset < ends.get(tp.partition, 0)})
        self._behind_until = time.monotonic() + JOIN_WAIT
        self._assigned.set()
        log.debug("kafka consumer assigned", extra={
            "topic": self._name, "partitions": [(tp.partition, tp.offset) for tp in start]})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        for partition in gone:
            self._behind.pop(partition, None)
        # Records kept from a poll made while a commit waited: their
        # partitions now belong to another member, which reads them again.
        self._pending = [r for r in self._pending if r.partition not in gone]

    def _start_positions(self, consumer: Consumer, partitions: list[TopicPartition]
                         ) -> tuple[list[TopicPartition], dict[int, int]]:
        """Where each partition starts, and where each ended at this moment."""
        if not partitions:
            return [], {}
        timeout = self._log._delivery_timeout
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout)}
        # Watermarks before the time lookup: with "latest", a partition that
        # has nothing newer than the consumer starts at the end as it was
        # *before* that lookup, so no record written meanwhile is skipped.
        marks = {tp.partition: consumer.get_watermark_offsets(
            TopicPartition(self._name, tp.partition), timeout, cached=False) for tp in partitions}
        start = {p: o for p, o in committed.items() if o >= 0}
        fresh = [tp.partition for tp in partitions if tp.partition not in start]
        if fresh and self._reset == "earliest":
            start.update({p: marks[p][0] for p in fresh})
        elif fresh:
            # The first record stamped after the millisecond of consumer():
            # one stamped within it may have been written just before.
            found = consumer.offsets_for_times(
                [TopicPartition(self._name, p, self._created_ms + 1) for p in fresh], timeout)
            start.update({tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1]
                          for tp in found})
        return ([TopicPartition(self._name, tp.partition, start.get(tp.partition, OFFSET_INVALID))
                 for tp in partitions],
                {p: high for p, (_low, high) in marks.items()})

    # -- polling ----------------------------------------------------------

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[LogRecord]:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self._closing:
            return []
        job = self._worker.submit(self._poll_blocking, max_records, max(timeout, 0.0))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # Whatever the worker already took would be lost to this consumer
            # (its position moved on): keep it for the next poll.
            job.add_done_callback(self._keep_for_next_poll)
            raise

    def _keep_for_next_poll(self, job: Future) -> None:
        if not job.cancelled() and job.exception() is None:
            self._pending[:0] = job.result()

    def _poll_blocking(self, max_records: int, timeout: float) -> list[LogRecord]:
        if self._pending:
            records, self._pending = self._pending[:max_records], self._pending[max_records:]
            return records
        started = time.monotonic()
        try:
            self._subscribe()
        except DependencyUnavailable as exc:
            log.warning("kafka consumer cannot subscribe yet",
                        extra={"topic": self._name, "reason": str(exc)})
            self._sleep_until(started + timeout)
            return []
        records: list[LogRecord] = []
        join_deadline = started + JOIN_WAIT
        while not self._assigned.is_set() and not self._closing \
                and time.monotonic() < join_deadline and not records:
            self._take(self._consumer.poll(POLL_SLICE), records)
        deadline = time.monotonic() + timeout
        while not records and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not self._still_behind():
                return []
            self._take(self._consumer.poll(min(max(remaining, 0.01), POLL_SLICE)), records)
        # One record arrived: add whatever else is already fetched, no waiting.
        if len(records) < max_records:
            for message in self._consumer.consume(max_records - len(records), 0):
                self._take(message, records)
        return records

    def _still_behind(self) -> bool:
        """Whether records that existed at assignment have yet to start arriving."""
        if self._behind and time.monotonic() > self._behind_until:
            log.warning("kafka consumer gave up waiting for its backlog",
                        extra={"topic": self._name, "partitions": sorted(self._behind)})
            self._behind.clear()
        for partition, end in list(self._behind.items()):
            # Control records (transaction markers) move the position without
            # delivering anything.
            (position,) = self._consumer.position([TopicPartition(self._name, partition)])
            if position.offset >= end:
                del self._behind[partition]
        return bool(self._behind)

    def _sleep_until(self, deadline: float) -> None:
        while not self._closing and time.monotonic() < deadline:
            time.sleep(min(POLL_SLICE, max(deadline - time.monotonic(), 0)))

    def _take(self, message: Message | None, records: list[LogRecord]) -> None:
        if message is None:
            return
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                client_log.warning("kafka consumer error %s: %s", error.name(), error.str(),
                                   extra={"topic": self._name})
            return
        self._behind.pop(message.partition(), None)
        kind, millis = message.timestamp()
        key = message.key()
        records.append(LogRecord(
            self._topic, message.partition(), message.offset(),
            key.decode("utf-8", "replace") if key is not None else "",
            message.value() or b"",
            {k: (v.decode("utf-8", "replace") if v is not None else "")
             for k, v in message.headers() or ()},
            None if kind == TIMESTAMP_NOT_AVAILABLE
            else datetime.fromtimestamp(millis / 1000, timezone.utc)))

    # -- committing -------------------------------------------------------

    async def commit(self, records: Sequence[LogRecord]) -> None:
        next_offsets = offsets_after(records, self._topic)
        # Never move the group back: a late commit of an older batch is a no-op.
        offsets = [TopicPartition(self._name, p, o) for p, o in sorted(next_offsets.items())
                   if o > self._committed.get(p, -1)]
        if offsets and not self._closed:
            await asyncio.wrap_future(self._worker.submit(self._commit_blocking, offsets))

    async def lag(self) -> dict[int, int]:
        """Records not yet read, per assigned partition: the high watermark of
        the latest fetch (cached, no broker request) minus the position."""
        if self._closing or self._consumer is None:
            return {}
        return await asyncio.wrap_future(self._worker.submit(self._lag_blocking))

    def _lag_blocking(self) -> dict[int, int]:
        if self._closing or self._consumer is None:
            return {}
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        lags = {}
        for tp in self._consumer.position(assignment):
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or tp.offset < 0:  # not fetched from yet: ask the broker
                low, high = self._consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
            position = tp.offset
            if position < 0:
                # Nothing read from it yet: it starts at the group's commit, or
                # at the reset point.
                (committed,) = self._consumer.committed([tp], timeout=1.0)
                position = committed.offset if committed.offset >= 0 else (
                    low if self._reset == "earliest" else high)
            lags[tp.partition] = max(high - position, 0)
        return lags

    def _commit_blocking(self, offsets: list[TopicPartition]) -> None:
        """Send the commit, then poll until it is answered or the delivery
        timeout passes (see the module docstring for why not synchronously)."""
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(exc.args[0])
            return
        deadline = time.monotonic() + self._log._delivery_timeout
        while not self._closing and any(self._answered.get(tp.partition, -1) < tp.offset
                                        for tp in offsets):
            if time.monotonic() >= deadline:
                log.warning("kafka commit not answered in time, its records may be delivered "
                            "again", extra={"topic": self._name,
                                            "partitions": [tp.partition for tp in offsets]})
                return
            fetched: list[LogRecord] = []
            self._take(self._consumer.poll(POLL_SLICE), fetched)
            self._pending.extend(fetched)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition] | None) -> None:
        """librdkafka's answer to a commit, served by a poll on the worker thread."""
        for tp in partitions or ():
            self._answered[tp.partition] = max(self._answered.get(tp.partition, -1), tp.offset)
        if error is not None:
            self._commit_failed(error)
            return
        for tp in partitions or ():
            if tp.error is None:
                self._committed[tp.partition] = max(self._committed.get(tp.partition, -1),
                                                    tp.offset)
            else:
                log.warning("kafka commit refused for a partition",
                            extra={"topic": self._name, "partition": tp.partition,
                                   "reason": tp.error.str()})

    def _commit_failed(self, error: KafkaError) -> None:
        # Lost the partitions to a rebalance, or the cluster is down: the
        # records will be delivered again (to this member or another), which
        # at-least-once allows; raising would only stop the consumer.
        if error.code() in _LOST_OWNERSHIP or error.code() in _UNAVAILABLE or error.retriable():
            log.warning("kafka commit failed, its records will be delivered again: %s",
                        error.str(), extra={"topic": self._name})
            return
        raise KafkaException(error)

    # -- closing ----------------------------------------------------------

    def _close_blocking(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    async def close(self) -> None:
        """Leave the group (its partitions go to the other members at once)."""
        if self._closed:
            return
        self._closing = self._closed = True
        try:
            await asyncio.wrap_future(self._worker.submit(self._close_blocking))
        finally:
            self._worker.shutdown(wait=False)
            self._log._forget(self)
