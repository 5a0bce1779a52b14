"""Per-user token buckets for the gateway."""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class RateLimiter:
    """`rate` requests per second sustained, `burst` at once, per user.

    Buckets live in memory (a replica limits its own traffic); the least
    recently seen users are forgotten past `max_users` to bound memory.
    """

    def __init__(self, rate: float, burst: int, max_users: int = 100_000, clock=time.monotonic):
        self._rate, self._burst, self._max = rate, burst, max_users
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, user_id: str, now: float) -> float:
        tokens, stamp = self._buckets.get(user_id, (float(self._burst), now))
        return min(float(self._burst), tokens + (now - stamp) * self._rate)

    def peek(self, user_id: str) -> float:
        """What acquire() would answer, without taking a token."""
        if self._rate <= 0:
            return 0.0
        tokens = self._tokens(user_id, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def acquire(self, user_id: str) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        tokens = self._tokens(user_id, now)
        self._buckets.pop(user_id, None)
        if tokens >= 1.0:
            self._buckets[user_id] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[user_id] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
