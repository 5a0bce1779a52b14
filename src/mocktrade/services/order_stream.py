"""A user's own orders, live: the Phoenix channel `orders:{userId}`.

Every market-data replica reads all of order_updates (a group of its own that
never commits, from the end), so any replica can serve any user's channel.
Each update carries the user's gapless sequence number `seq`. A member of a
channel remembers the last seq it was sent; an update that is next in line is
pushed, an older one is dropped (a replay), and one that skips ahead means
something was missed: the member catches up from the portfolio store, which
has every update before it is published. A client that reconnects joins with
`{"since": seq}` and is sent what it missed the same way, in order, with no
gap and no duplicate.

The log is read only while someone is on an orders channel: with nobody to
push to, reading every order's updates cost the HTTP process about 4% of its
CPU under load (bench/orders.py). The reader closes after IDLE_CLOSE seconds
without members; a join opens a new one, from the end of the log, before it
reads the member's seq from the store, so every update published after that
read reaches the reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Callable, Sequence

from ..domain.events import (TOPIC_ORDER_UPDATES, EventDecodeError, decode_envelope,
                             decode_order_update, order_update_payload)
from ..jobs.runner import run_consumer
from ..ports import EventLog, LogConsumer, LogRecord, PortfolioStore
from . import phoenix
from .auth import TokenIssuer, TokenThrottled, Unauthorized
from .ratelimit import RateLimiter

ORDER_TOPIC_PREFIX = "orders:"
EVENT_ORDER_UPDATE = "order_update"
CATCH_UP_PAGE = 500
# Seconds without members before the reader lets go of the log.
IDLE_CLOSE = 30.0

log = logging.getLogger("mocktrade.orderstream")


class JoinRefused(Exception):
    pass


class _Member:
    __slots__ = ("subscriber", "topic", "last_seq", "seen_seq", "catching_up")

    def __init__(self, subscriber: Any, topic: str, last_seq: int):
        self.subscriber, self.topic = subscriber, topic
        self.last_seq = self.seen_seq = last_seq
        self.catching_up: asyncio.Task | None = None


class OrderStream:
    def __init__(self, event_log: EventLog, portfolios: PortfolioStore, tokens: TokenIssuer,
                 offer: Callable[[Any, str, dict[str, Any]], bool]):
        """`offer(subscriber, topic, payload)` queues an order_update push; False
        when the client is too slow (it is then dropped by the caller)."""
        self._log, self._portfolios, self._tokens, self._offer = event_log, portfolios, tokens, offer
        self._members: dict[str, list[_Member]] = {}
        self.pushed = 0
        self.catch_ups = 0
        self._group = f"order-stream-{uuid.uuid4().hex[:12]}"
        self._reader: LogConsumer | None = None
        self._reader_opened = asyncio.Event()
        self._idle_since: float | None = None

    @property
    def reading(self) -> bool:
        return self._reader is not None

    async def consume(self, stop: asyncio.Event | None = None) -> None:
        """Read order_updates into the channels while a reader is open."""
        while stop is None or not stop.is_set():
            if self._reader is None and self._members:
                self._open_reader()  # the last reader failed; members still wait
            reader = self._reader
            if reader is None:
                await self._wait_for_reader(stop)
                continue
            self._idle_since = None
            try:
                await run_consumer(self._log, TOPIC_ORDER_UPDATES, self._group, self._on_records,
                                   consumer=reader, poll_timeout=0.2, stop=stop, commit=False,
                                   until=self._idle_long)
            finally:
                if self._reader is reader:
                    self._reader = None

    def _open_reader(self) -> None:
        if self._reader is None:
            self._reader = self._log.consumer(TOPIC_ORDER_UPDATES, self._group, reset="latest")
            self._reader_opened.set()

    def _idle_long(self) -> bool:
        """Whether the reader has had no members for IDLE_CLOSE seconds; if so
        it is let go now, in the same step, so a join from here on opens a new one."""
        if self._members:
            self._idle_since = None
            return False
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < IDLE_CLOSE:
            return False
        self._reader = None
        return True

    async def _wait_for_reader(self, stop: asyncio.Event | None) -> None:
        self._reader_opened.clear()
        waits = [asyncio.ensure_future(self._reader_opened.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def join(self, subscriber: Any, topic: str, params: Any) -> dict[str, Any]:
        """Admit the subscriber to `orders:{userId}` or raise JoinRefused."""
        user_id = topic.removeprefix(ORDER_TOPIC_PREFIX)
        params = params if isinstance(params, dict) else {}
        token = params.get("token")
        address = getattr(subscriber, "address", None)
        try:
            if not isinstance(token, str) or self._tokens.user_of(f"Bearer {token}", address) != user_id:
                raise JoinRefused("unauthorized")
        except Unauthorized:
            raise JoinRefused("unauthorized") from None
        except TokenThrottled as exc:
            raise JoinRefused(f"too many invalid tokens from this address; retry after "
                              f"{RateLimiter.retry_after(exc.wait)} s") from None
        since = params.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            raise JoinRefused("since must be a non-negative integer")
        self._open_reader()  # before the seq is read: see the module docstring
        portfolio = await self._portfolios.get(user_id)
        if portfolio is None:
            raise JoinRefused("unknown user")
        current = portfolio.order_seq
        member = _Member(subscriber, topic, current if since is None else min(since, current))
        member.seen_seq = current
        self._members.setdefault(user_id, []).append(member)
        if member.last_seq < current:
            self._catch_up(user_id, member)
        return {"seq": current}

    def leave(self, subscriber: Any, topic: str) -> None:
        user_id = topic.removeprefix(ORDER_TOPIC_PREFIX)
        members = self._members.get(user_id, [])
        for member in [m for m in members if m.subscriber is subscriber and m.topic == topic]:
            members.remove(member)
            if member.catching_up is not None:
                member.catching_up.cancel()
        if not members:
            self._members.pop(user_id, None)

    def remove(self, subscriber: Any) -> None:
        for topic in [t for t in list(subscriber.topics) if t.startswith(ORDER_TOPIC_PREFIX)]:
            self.leave(subscriber, topic)

    async def _on_records(self, records: Sequence[LogRecord]) -> None:
        for record in records:
            members = self._members.get(record.key)
            if not members:
                continue
            try:
                update = decode_order_update(decode_envelope(record.value).payload)
            except EventDecodeError:
                continue  # the trigger job dead-letters these
            for member in list(members):
                self._deliver(update.user_id, member, update.seq, dict(update.payload))

    def _deliver(self, user_id: str, member: _Member, seq: int, payload: dict[str, Any]) -> None:
        member.seen_seq = max(member.seen_seq, seq)
        if member.catching_up is not None or seq <= member.last_seq:
            return
        if seq == member.last_seq + 1:
            self._push(member, seq, payload)
        else:
            self._catch_up(user_id, member)

    def _push(self, member: _Member, seq: int, payload: dict[str, Any]) -> None:
        if self._offer(member.subscriber, member.topic, payload):
            member.last_seq = seq
            self.pushed += 1

    def _catch_up(self, user_id: str, member: _Member) -> None:
        self.catch_ups += 1
        member.catching_up = asyncio.create_task(self._catch_up_from_store(user_id, member))

    async def _catch_up_from_store(self, user_id: str, member: _Member) -> None:
        try:
            while member.last_seq < member.seen_seq:
                start = member.last_seq
                updates = await self._portfolios.order_updates(user_id, member.last_seq, CATCH_UP_PAGE)
                for state, transition in updates:
                    if transition.seq != member.last_seq + 1:
                        break  # never skip: try again from the store
                    self._push(member, transition.seq, order_update_payload(state, transition))
                    if member.last_seq != transition.seq:
                        return  # the client was dropped as too slow
                if member.last_seq == start:
                    break  # the store has nothing newer yet; the next update retries
        except Exception as exc:  # a store hiccup must not kill the socket; the next update retries
            log.warning("order stream catch-up failed", extra={"userId": user_id, "reason": repr(exc)})
        finally:
            member.catching_up = None


def order_push(topic: str, payload: dict[str, Any]) -> phoenix.PhoenixMessage:
    return phoenix.broadcast(topic, EVENT_ORDER_UPDATE, payload)
