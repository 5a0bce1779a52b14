"""The random ids an accepted order needs: its order id, the envelope's
event id, and a trace context when the caller sent none.

Order ids are UUIDs of version 7 (RFC 9562), time-ordered. A version 7 UUID
starts with the Unix time in milliseconds and ends with random bits, so ids
made one after another sort after one another. The embedded stores key
orders by id in SQLite B-trees, where a random (version 4) key lands on a
random page of an ever larger index; a time-ordered one lands on the
rightmost page, which stays in the cache. The execution job's CPU per order
fell about 11% with them (docs/benchmarks.md, "Execution job CPU per order"),
more as the table grows. 74 random bits keep them unguessable to another
user; they reveal the millisecond the order was accepted, which its
acceptance time shows anyway.

The random bits come from the operating system's CSPRNG (os.urandom) a few
kilobytes at a time, not one system call per id: an order took four of them
(order id, event id, trace id, span id), several percent of the HTTP
process's CPU at 2,700 orders/s. Bytes are never handed out twice, and a
forked child starts with a pool of its own.
"""

from __future__ import annotations

import os
import threading
import time

from ..domain.events import uuid_text

_RAND_A_BITS, _RAND_B_BITS = 12, 62
_POOL_BYTES = 4096


class _RandomPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pool, self._used = b"", 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._used + count > len(self._pool):
                self._pool, self._used = os.urandom(max(_POOL_BYTES, count)), 0
            start = self._used
            self._used += count
            return self._pool[start:self._used]


_random = _RandomPool()
os.register_at_fork(after_in_child=_random._reset)


def random_bytes(count: int) -> bytes:
    return _random.take(count)


def new_order_id(now_ns: int | None = None) -> str:
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(_random.take(10), "big")  # 80 bits, 74 of them used
    value = ((millis & 0xFFFF_FFFF_FFFF) << 80
             | 0x7 << 76                                   # version 7
             | (rand >> 68) << 64                          # rand_a, 12 bits
             | 0b10 << 62                                  # the RFC 4122/9562 variant
             | rand & ((1 << _RAND_B_BITS) - 1))           # rand_b, 62 bits
    return uuid_text(f"{value:032x}")


def new_event_id() -> str:
    """A version 4 UUID, as str(uuid.uuid4()) gives."""
    raw = bytearray(_random.take(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return uuid_text(raw.hex())


def new_traceparent() -> str:
    """A W3C traceparent starting a trace here: random trace and span ids, sampled."""
    raw = _random.take(24).hex()
    return f"00-{raw[:32]}-{raw[32:]}-01"
