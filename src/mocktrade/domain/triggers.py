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
orders it crosses. Removed orders are skipped lazily when they surface, and
swept out once they outnumber the live ones (an order canceled far from the
price never surfaces).

The book lives as long as its process, so everything it keeps per order is
bounded: market orders are never filed (they never rest), the heaps hold at
most twice the resting orders plus COMPACT_SLACK entries, and of the closed
orders only the newest CLOSED_ORDERS_KEPT ids are remembered (ClosedOrders
says why that is safe).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .lifecycle import ExpireOrder, OrderStatus, TriggerOrder
from .model import Order, OrderType, Side

# How many closed resting orders the book remembers: far more than a replay
# re-emits at once (the owner's uncommitted batch, 500 instructions or so),
# at about 130 bytes each (the id, its set and deque slots): 13 MB at most.
CLOSED_ORDERS_KEPT = 100_000
# Stale heap entries tolerated beyond the live ones before a sweep; a sweep
# is linear in the entries and leaves none stale, so its cost is spread over
# at least this many removals.
COMPACT_SLACK = 1024


def never_rests(order_type: OrderType | str | None) -> bool:
    """A market order never rests, so the book has nothing to learn from its
    updates. Takes the enum or an update payload's "type" (absent: MARKET),
    so a job can skip an update before decoding it."""
    return order_type is None or order_type == OrderType.MARKET.value


class ClosedOrders:
    """The ids of resting orders seen final, the newest `capacity` of them.

    Why remember them: a replay of the owner re-emits every update of an
    order, its old OPEN first. Taken as news, that OPEN files a closed order
    again, the last tick proposes it, the owner replays it once more, and the
    two ping-pong forever. Remembered, the stale OPEN is ignored.

    Why forget the oldest: every closed id kept for good grew the trigger
    job's process for as long as it ran (the 30-minute soak, 300 market
    orders/s: +146 MB/h, docs/benchmarks.md). Stale news only comes from a
    replay, and a replay re-emits the order's final update right after its
    OPEN; so an order forgotten long ago and replayed again is proposed at
    most once more (the owner changes nothing for a closed order), its final
    update files it here again, and the loop ends there.
    """

    __slots__ = ("capacity", "_ids", "_order")

    def __init__(self, capacity: int = CLOSED_ORDERS_KEPT):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()  # oldest first, to forget in that order

    def add(self, order_id: str) -> None:
        if order_id in self._ids:
            return
        self._ids.add(order_id)
        self._order.append(order_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())

    def update(self, order_ids) -> None:
        for order_id in order_ids:
            self.add(order_id)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self):
        return iter(self._order)


@dataclass(slots=True)
class _Resting:
    order: Order
    seq: int
    kind: OrderType  # what it waits as: LIMIT, or STOP (a stop-limit before its trigger)
    entry: int = 0  # the counter of its current heap entries; older ones are stale


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
    def __init__(self, closed_capacity: int = CLOSED_ORDERS_KEPT,
                 compact_slack: int = COMPACT_SLACK) -> None:
        self._orders: dict[str, _Resting] = {}
        self._symbols: dict[str, _SymbolBook] = {}
        self._expiries: list[tuple[datetime, int, str]] = []
        self._counter = 0
        self._entries = 0  # in the price heaps, stale ones included
        self._compact_slack = compact_slack
        # Resting orders seen final: a final order never rests again, so
        # later news of it (an earlier update re-emitted by a replay) is
        # stale (ClosedOrders).
        self._closed = ClosedOrders(closed_capacity)

    @property
    def closed(self) -> ClosedOrders:
        """Resting orders seen final (the newest of them): later news of them
        (a replay re-emitting an old OPEN) is ignored. Mutable so a runner
        can restore it from its state (`update`)."""
        return self._closed

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._orders

    def heap_entries(self) -> int:
        """Entries in the price and expiry heaps, stale ones included."""
        return self._entries + len(self._expiries)

    def apply_update(self, order: Order, status: str, seq: int,
                     stop_triggered: bool) -> list[TriggerOrder]:
        """Learn an order's new status; an OPEN order crossed by the last tick
        already seen of its symbol is proposed at once (no tick is missed
        between the owner's decision and the book learning of it)."""
        if never_rests(order.order_type):
            # Never rests, so never filed, and no news of it can file it:
            # nothing to remember when it closes (the bulk of all orders).
            return []
        known = self._orders.get(order.order_id)
        if (known is not None and seq <= known.seq) or order.order_id in self._closed:
            return []  # older news
        if status != OrderStatus.OPEN.value:
            if status in (OrderStatus.ACCEPTED.value, OrderStatus.PENDING_CANCEL.value):
                return []
            self._orders.pop(order.order_id, None)
            self._closed.add(order.order_id)
            self._compact_if_due()
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
                self._compact_if_due()
                return [TriggerOrder(order.user_id, order.order_id, book.last_price, book.last_time)]
        self._compact_if_due()  # a re-filed order left stale entries
        return []

    def add(self, resting: _Resting) -> None:
        self._orders[resting.order.order_id] = resting
        book = self._symbols.setdefault(resting.order.symbol, _SymbolBook())
        heap, key = _heap_and_key(resting)
        self._counter += 1
        resting.entry = self._counter
        heapq.heappush(book.heaps[heap], (key, self._counter, resting.order.order_id))
        self._entries += 1
        if resting.order.expires_at is not None:
            heapq.heappush(self._expiries,
                           (resting.order.expires_at, self._counter, resting.order.order_id))

    def on_tick(self, symbol: str, price: Decimal, at: datetime) -> list[TriggerOrder]:
        """Orders this tick crosses, each proposed once and taken off the book."""
        book = self._symbols.setdefault(symbol, _SymbolBook())
        book.last_price, book.last_time = price, at
        proposals: list[TriggerOrder] = []
        for name, heap in book.heaps.items():
            while heap:
                key, counter, order_id = heap[0]
                resting = self._orders.get(order_id)
                if resting is None or resting.entry != counter:
                    heapq.heappop(heap)  # removed or re-filed since
                    self._entries -= 1
                    continue
                if not _crossed(name, key, price):
                    break
                heapq.heappop(heap)
                self._entries -= 1
                del self._orders[order_id]
                proposals.append(TriggerOrder(resting.order.user_id, order_id, price, at))
        return proposals

    def due(self, now: datetime) -> list[ExpireOrder]:
        """DAY orders whose session has closed, each proposed once."""
        expired: list[ExpireOrder] = []
        while self._expiries and self._expiries[0][0] <= now:
            _, counter, order_id = heapq.heappop(self._expiries)
            resting = self._orders.get(order_id)
            if resting is None or resting.entry != counter:
                continue
            del self._orders[order_id]
            expired.append(ExpireOrder(resting.order.user_id, order_id, now))
        self._compact_if_due()  # their price-heap entries are stale now
        return expired

    def _compact_if_due(self) -> None:
        """Sweep out the heap entries of orders closed or re-filed since, once
        they outnumber the live ones by COMPACT_SLACK."""
        bound = 2 * len(self._orders) + self._compact_slack
        if self._entries > bound:
            self._entries = 0
            for book in self._symbols.values():
                for name, heap in book.heaps.items():
                    book.heaps[name] = self._live(heap)
                    self._entries += len(book.heaps[name])
        if len(self._expiries) > bound:
            self._expiries = self._live(self._expiries)

    def _live(self, heap: list[tuple]) -> list[tuple]:
        """The entries still current (each ends in (counter, order id)), as a heap."""
        kept = [entry for entry in heap
                if (resting := self._orders.get(entry[2])) is not None
                and resting.entry == entry[1]]
        heapq.heapify(kept)
        return kept
