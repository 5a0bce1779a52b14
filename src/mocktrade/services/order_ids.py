"""Order ids: UUIDs of version 7 (RFC 9562), time-ordered.

A version 7 UUID starts with the Unix time in milliseconds and ends with
random bits, so ids made one after another sort after one another. The
embedded stores key orders by id in SQLite B-trees, where a random (version
4) key lands on a random page of an ever larger index; a time-ordered one
lands on the rightmost page, which stays in the cache. The execution job's
CPU per order fell about 11% with them (docs/benchmarks.md, "Execution job
CPU per order"), more as the table grows. 74 random bits keep them
unguessable to another user; they reveal the millisecond the order was
accepted, which its acceptance time shows anyway.
"""

from __future__ import annotations

import os
import time

from ..domain.events import uuid_text

_RAND_A_BITS, _RAND_B_BITS = 12, 62


def new_order_id(now_ns: int | None = None) -> str:
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = ((millis & 0xFFFF_FFFF_FFFF) << 80
             | 0x7 << 76                                   # version 7
             | (rand >> 68) << 64                          # rand_a, 12 bits
             | 0b10 << 62                                  # the RFC 4122/9562 variant
             | rand & ((1 << _RAND_B_BITS) - 1))           # rand_b, 62 bits
    return uuid_text(f"{value:032x}")
