"""The trigger book: every resting order of some symbols, and which of them a
tick crosses.

Pure and synchronous; the trigger job feeds it order updates and ticks and
sends what it returns to the portfolio owner, which decides. The book only
proposes: a proposal that no longer applies (the order was canceled
meanwhile) is ignored by the owner, so the book may be stale, never wrong.

Per symbol, four heaps ordered so that the orders a tick crosses are always
on top: buy limits by highest limit (a price at or below it fills), sell
limits by lowest limit, buy stops by lowest stop (a price at or above it
triggers), sell stops by highest stop. A tick costs O(k log n) for the k
orders it crosses. Removed orders are skipped lazily when they surface.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .lifecycle import ExpireOrder, OrderStatus, TriggerOrder
from .model import Order, OrderType, Side


@dataclass(slots=True)
class _Resting:
    order: Order
    seq: int
    kind: OrderType  # what it waits as: LIMIT, or STOP (a stop-limit before its trigger)


@dataclass(slots=True)
class _SymbolBook:
    heaps: dict[str, list[tuple[Decimal, int, str]]] = field(
        default_factory=lambda: {"buy_limit": [], "sell_limit": [], "buy_stop": [], "sell_stop": []})
    last_price: Decimal | None = None
    last_time: datetime | None = None


def _heap_and_key(r: _Resting) -> tuple[str, Decimal]:
    o = r.order
    if r.kind is OrderType.LIMIT:
        assert o.limit_price is not None
        return ("buy_limit", -o.limit_price) if o.side is Side.BUY else ("sell_limit", o.limit_price)
    assert o.stop_price is not None
    return ("buy_stop", o.stop_price) if o.side is Side.BUY else ("sell_stop", -o.stop_price)


def _crossed(heap: str, key: Decimal, price: Decimal) -> bool:
    if heap == "buy_limit":
        return price <= -key
    if heap == "sell_limit":
        return price >= key
    if heap == "buy_stop":
        return price >= key
    return price <= -key


class TriggerBook:
    def __init__(self) -> None:
        self._orders: dict[str, _Resting] = {}
        self._symbols: dict[str, _SymbolBook] = {}
        self._expiries: list[tuple[datetime, str]] = []
        self._counter = 0
        # Orders seen final: a final order never rests again, so any later
        # news of it (an earlier update re-emitted by a replay) is stale.
        # Without this, a re-emitted OPEN re-adds a closed order, the last
        # tick proposes it, the owner replays it (re-emitting its updates)
        # and the two ping-pong forever.
        self._closed: set[str] = set()

    @property
    def closed(self) -> set[str]:
        """Orders seen final: later news of them (a replay re-emitting an old
        OPEN) is ignored. Mutable so a runner can restore it from its state."""
        return self._closed

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._orders

    def apply_update(self, order: Order, status: str, seq: int,
                     stop_triggered: bool) -> list[TriggerOrder]:
        """Learn an order's new status; an OPEN order crossed by the last tick
        already seen of its symbol is proposed at once (no tick is missed
        between the owner's decision and the book learning of it)."""
        known = self._orders.get(order.order_id)
        if (known is not None and seq <= known.seq) or order.order_id in self._closed:
            return []  # older news
        if status != OrderStatus.OPEN.value:
            if status in (OrderStatus.ACCEPTED.value, OrderStatus.PENDING_CANCEL.value):
                return []
            self._orders.pop(order.order_id, None)
            self._closed.add(order.order_id)
            return []
        if order.order_type is OrderType.MARKET:
            return []
        kind = OrderType.LIMIT if (order.order_type is OrderType.LIMIT or
                                   (order.order_type is OrderType.STOP_LIMIT and stop_triggered)) \
            else OrderType.STOP
        self.add(_Resting(order, seq, kind))
        book = self._symbols[order.symbol]
        if book.last_price is not None and book.last_time is not None:
            heap, key = _heap_and_key(self._orders[order.order_id])
            if _crossed(heap, key, book.last_price):
                del self._orders[order.order_id]
                return [TriggerOrder(order.user_id, order.order_id, book.last_price, book.last_time)]
        return []

    def add(self, resting: _Resting) -> None:
        self._orders[resting.order.order_id] = resting
        book = self._symbols.setdefault(resting.order.symbol, _SymbolBook())
        heap, key = _heap_and_key(resting)
        self._counter += 1
        heapq.heappush(book.heaps[heap], (key, self._counter, resting.order.order_id))
        if resting.order.expires_at is not None:
            heapq.heappush(self._expiries, (resting.order.expires_at, resting.order.order_id))

    def on_tick(self, symbol: str, price: Decimal, at: datetime) -> list[TriggerOrder]:
        """Orders this tick crosses, each proposed once and taken off the book."""
        book = self._symbols.setdefault(symbol, _SymbolBook())
        book.last_price, book.last_time = price, at
        proposals: list[TriggerOrder] = []
        for name, heap in book.heaps.items():
            while heap:
                key, counter, order_id = heap[0]
                resting = self._orders.get(order_id)
                if resting is None or _heap_and_key(resting) != (name, key):
                    heapq.heappop(heap)  # removed or re-filed since
                    continue
                if not _crossed(name, key, price):
                    break
                heapq.heappop(heap)
                del self._orders[order_id]
                proposals.append(TriggerOrder(resting.order.user_id, order_id, price, at))
        return proposals

    def due(self, now: datetime) -> list[ExpireOrder]:
        """DAY orders whose session has closed, each proposed once."""
        expired: list[ExpireOrder] = []
        while self._expiries and self._expiries[0][0] <= now:
            at, order_id = heapq.heappop(self._expiries)
            resting = self._orders.get(order_id)
            if resting is None or resting.order.expires_at != at:
                continue
            del self._orders[order_id]
            expired.append(ExpireOrder(resting.order.user_id, order_id, now))
        return expired
