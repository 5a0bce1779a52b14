"""Simulated exchange prices: geometric Brownian motion per symbol.

`run()` is the exchange's clock: while it runs, ticks are generated at the
configured total rate and handed to every listener (the feed server is one),
whether or not anyone is connected, as a real market keeps moving.

Prices are exact decimals at the price scale; the randomness is floating
point only inside the step factor, which is turned into a decimal before it
touches a price. The same seed gives the same start prices and the same
sequence of prices, whatever the wall clock does.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import datetime
from decimal import Decimal
from typing import AsyncIterator, Callable, Sequence

from ..domain.model import PriceTick, utc_now
from ..domain.money import PRICE_QUANTUM, round_price

TickListener = Callable[[list[PriceTick]], None]

# Volatility is quoted per year of trading time, as exchanges and option
# desks quote it: 252 sessions of 6.5 hours.
TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600

START_PRICE_RANGE = (20.0, 500.0)

# A consumer that fell this far behind gets the ticks from now on rather than
# a burst of stale ones, as a real feed would do after a stall.
MAX_CATCH_UP_SECONDS = 1.0


class PriceSimulator:
    def __init__(self, symbols: Sequence[str], ticks_per_second: float, volatility: float,
                 seed: int | None = None, *, drift: float = 0.0,
                 clock: Callable[[], datetime] = utc_now):
        if not symbols:
            raise ValueError("the simulator needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must be unique")
        if not ticks_per_second > 0:
            raise ValueError("ticks_per_second must be positive")
        if volatility < 0:
            raise ValueError("volatility must not be negative")
        self._symbols = tuple(symbols)
        self._ticks_per_second = float(ticks_per_second)
        self._rng = random.Random(seed)
        self._clock = clock
        self._prices = {s: round_price(Decimal(repr(self._rng.uniform(*START_PRICE_RANGE))))
                        for s in self._symbols}
        # Round-robin gives every symbol the same tick interval, so one step
        # of the motion always spans the same stretch of (trading) time.
        step_years = len(self._symbols) / self._ticks_per_second / TRADING_SECONDS_PER_YEAR
        self._step_drift = (drift - volatility ** 2 / 2) * step_years
        self._step_sigma = volatility * math.sqrt(step_years)
        self._next = 0
        self._listeners: list[TickListener] = []

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def ticks_per_second(self) -> float:
        return self._ticks_per_second

    def prices(self) -> dict[str, Decimal]:
        return dict(self._prices)

    def next_tick(self) -> PriceTick:
        symbol = self._symbols[self._next]
        self._next = (self._next + 1) % len(self._symbols)
        factor = math.exp(self._step_drift + self._step_sigma * self._rng.gauss(0.0, 1.0))
        # A price never rounds down to zero: the motion is multiplicative.
        price = max(round_price(self._prices[symbol] * Decimal(repr(factor))), PRICE_QUANTUM)
        self._prices[symbol] = price
        return PriceTick(symbol, price, self._clock())

    async def stream(self, max_batch: int = 1000) -> AsyncIterator[list[PriceTick]]:
        """Batches of ticks at the configured total rate, paced on the monotonic clock.

        Pacing is against an absolute schedule, so sleep overshoot does not
        accumulate into a lower rate; ticks that fell due together come as one
        batch.
        """
        loop = asyncio.get_running_loop()
        start, emitted = loop.time(), 0
        while True:
            elapsed = loop.time() - start
            if elapsed - emitted / self._ticks_per_second > MAX_CATCH_UP_SECONDS:
                start, emitted = loop.time(), 0
                elapsed = 0.0
            due = int(elapsed * self._ticks_per_second) + 1 - emitted
            if due > 0:
                batch = [self.next_tick() for _ in range(min(due, max_batch))]
                emitted += len(batch)
                yield batch
            else:
                await asyncio.sleep(emitted / self._ticks_per_second - elapsed)

    def add_listener(self, listener: TickListener) -> None:
        """Call `listener` with every batch from `run()`; it must not block."""
        self._listeners.append(listener)

    def remove_listener(self, listener: TickListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def run(self) -> None:
        """Generate ticks for the listeners until cancelled."""
        async for batch in self.stream():
            for listener in tuple(self._listeners):
                listener(batch)
