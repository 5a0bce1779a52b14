"""The trigger book (domain.triggers) against a brute-force scan of the same
orders: every tick proposes exactly the resting orders it crosses, each once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocktrade.domain.lifecycle import ExpireOrder, OrderStatus, TriggerOrder
from mocktrade.domain.model import Order, OrderType, Side, TimeInForce
from mocktrade.domain.triggers import COMPACT_SLACK, TriggerBook

T0 = datetime(2026, 1, 5, 19, 0, tzinfo=timezone.utc)
SYMBOLS = ["AAA", "BBB"]
GRID = [Decimal(p) for p in ("90", "95", "99.99", "100", "100.01", "105", "110")]
prices = st.one_of(st.sampled_from(GRID),
                   st.decimals(min_value=Decimal("85"), max_value=Decimal("115"), places=4))
FINAL = [s for s in OrderStatus if s.final]


def order(oid="o1", side=Side.BUY, kind=OrderType.LIMIT, limit="100", stop=None, symbol="AAA",
          expires_at=None) -> Order:
    return Order(oid, "u1", symbol, Decimal("1"), side, T0, kind,
                 TimeInForce.DAY if expires_at else TimeInForce.GTC,
                 Decimal(limit) if limit else None, Decimal(stop) if stop else None,
                 expires_at=expires_at)


@st.composite
def orders(draw, oid):
    kind = draw(st.sampled_from(list(OrderType)))
    minutes = draw(st.one_of(st.none(), st.integers(0, 120)))
    return Order(oid, draw(st.sampled_from(["u1", "u2"])), draw(st.sampled_from(SYMBOLS)),
                 Decimal("1"), draw(st.sampled_from(list(Side))), T0, kind,
                 TimeInForce.GTC if minutes is None else TimeInForce.DAY,
                 draw(prices) if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
                 draw(prices) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
                 expires_at=None if minutes is None else T0 + timedelta(minutes=minutes))


def crossed(o: Order, waits_as: OrderType, price: Decimal) -> bool:
    buy = o.side is Side.BUY
    if waits_as is OrderType.LIMIT:
        return price <= o.limit_price if buy else price >= o.limit_price
    return price >= o.stop_price if buy else price <= o.stop_price


class Scan:
    """The book's contract, one dict and linear scans."""

    def __init__(self):
        self.resting: dict[str, tuple[Order, int, OrderType]] = {}
        self.closed: set[str] = set()
        self.last: dict[str, tuple[Decimal, datetime]] = {}

    def update(self, o: Order, status: OrderStatus, seq: int, stop_triggered: bool):
        known = self.resting.get(o.order_id)
        if (known and seq <= known[1]) or o.order_id in self.closed:
            return []
        if status.final:
            self.resting.pop(o.order_id, None)
            self.closed.add(o.order_id)
            return []
        if status is not OrderStatus.OPEN or o.order_type is OrderType.MARKET:
            return []
        waits_as = OrderType.LIMIT if (o.order_type is OrderType.LIMIT or stop_triggered) \
            else OrderType.STOP
        if o.order_type is OrderType.STOP:
            waits_as = OrderType.STOP
        self.resting[o.order_id] = (o, seq, waits_as)
        if o.symbol in self.last and crossed(o, waits_as, self.last[o.symbol][0]):
            del self.resting[o.order_id]
            return [TriggerOrder(o.user_id, o.order_id, *self.last[o.symbol])]
        return []

    def tick(self, symbol: str, price: Decimal, at: datetime):
        self.last[symbol] = (price, at)
        hit = [o for o, _, w in self.resting.values() if o.symbol == symbol and crossed(o, w, price)]
        for o in hit:
            del self.resting[o.order_id]
        return [TriggerOrder(o.user_id, o.order_id, price, at) for o in hit]

    def due(self, now: datetime):
        hit = [o for o, _, _ in self.resting.values()
               if o.expires_at is not None and o.expires_at <= now]
        for o in hit:
            del self.resting[o.order_id]
        return [ExpireOrder(o.user_id, o.order_id, now) for o in hit]


def by_id(instructions):
    return sorted(instructions, key=lambda i: i.order_id)


statuses = st.sampled_from([OrderStatus.OPEN] * 4 + list(OrderStatus))
ops = st.one_of(
    st.tuples(st.just("update"), st.integers(0, 7), statuses, st.integers(1, 12), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), prices),
    st.tuples(st.just("due"), st.integers(0, 30)),
)


@settings(max_examples=250)
@given(universe=st.tuples(*[orders(f"o{i}") for i in range(8)]),
       script=st.lists(ops, min_size=1, max_size=50),
       slack=st.sampled_from([0, 1, 1024]), closed_capacity=st.sampled_from([8, 100_000]))
def test_the_book_proposes_exactly_what_a_scan_finds(universe, script, slack, closed_capacity):
    """Also with sweeps of stale heap entries at every chance (slack 0), and
    a closed memory as large as the universe (nothing forgotten either way)."""
    book, scan = TriggerBook(closed_capacity, compact_slack=slack), Scan()
    now = T0
    for op in script:
        now += timedelta(minutes=1)
        if op[0] == "update":
            _, i, status, seq, stop_triggered = op
            got = book.apply_update(universe[i], status.value, seq, stop_triggered)
            want = scan.update(universe[i], status, seq, stop_triggered)
        elif op[0] == "tick":
            got, want = book.on_tick(op[1], op[2], now), scan.tick(op[1], op[2], now)
        else:
            now += timedelta(minutes=op[1])
            got, want = book.due(now), scan.due(now)
        ids = [i.order_id for i in got]
        assert len(ids) == len(set(ids))  # each order proposed at most once
        assert by_id(got) == by_id(want)
        assert len(book) == len(scan.resting)
        assert all(oid in book for oid in scan.resting)


def test_older_updates_are_ignored():
    book = TriggerBook()
    assert book.apply_update(order(), "OPEN", 5, False) == []
    book.apply_update(order(), "CANCELED", 4, False)  # older than what the book holds
    book.apply_update(order(limit="120"), "OPEN", 5, False)
    assert "o1" in book
    # Still resting at its limit of 100 (the seq-5 record), not 120.
    assert book.on_tick("AAA", Decimal("110"), T0) == []
    assert [t.order_id for t in book.on_tick("AAA", Decimal("100"), T0)] == ["o1"]


def test_a_final_status_removes_the_order_for_good():
    for status in FINAL:
        book = TriggerBook()
        book.apply_update(order(), "OPEN", 2, False)
        book.apply_update(order(), status.value, 3, False)
        assert "o1" not in book and len(book) == 0
        assert book.on_tick("AAA", Decimal("1"), T0) == []
        # An earlier update re-emitted by a replay does not bring it back.
        assert book.apply_update(order(), "OPEN", 2, False) == []
        assert "o1" not in book


def test_pending_cancel_and_accepted_leave_the_order_resting():
    book = TriggerBook()
    book.apply_update(order(), "OPEN", 2, False)
    book.apply_update(order(), "PENDING_CANCEL", 3, False)
    assert "o1" in book


def test_an_order_crossed_by_the_last_tick_is_proposed_when_it_opens():
    book = TriggerBook()
    assert book.on_tick("AAA", Decimal("99"), T0) == []
    got = book.apply_update(order(), "OPEN", 2, False)
    assert got == [TriggerOrder("u1", "o1", Decimal("99"), T0)]
    assert "o1" not in book
    assert book.on_tick("AAA", Decimal("98"), T0) == []  # proposed once


def test_a_triggered_stop_limit_waits_as_a_limit():
    book = TriggerBook()
    sl = order(kind=OrderType.STOP_LIMIT, limit="105", stop="100")
    book.apply_update(sl, "OPEN", 2, False)
    assert [t.order_id for t in book.on_tick("AAA", Decimal("110"), T0)] == ["o1"]
    assert book.apply_update(sl, "OPEN", 3, True) == []  # 110 is above its limit
    assert book.on_tick("AAA", Decimal("106"), T0) == []
    assert [t.price for t in book.on_tick("AAA", Decimal("99"), T0)] == [Decimal("99")]


def test_due_returns_day_orders_at_their_close_once():
    close = T0 + timedelta(hours=1)
    book = TriggerBook()
    book.apply_update(order("d1", expires_at=close), "OPEN", 2, False)
    book.apply_update(order("d1", expires_at=close), "OPEN", 3, False)  # re-filed
    book.apply_update(order("g1"), "OPEN", 2, False)
    assert book.due(close - timedelta(microseconds=1)) == []
    assert book.due(close) == [ExpireOrder("u1", "d1", close)]
    assert book.due(close + timedelta(days=1)) == []
    assert "d1" not in book and "g1" in book


# -- what the book keeps is bounded (it lives as long as the trigger job) -------

def test_market_orders_leave_nothing_behind():
    """The soak's +146 MB/h: every market order's final update was remembered."""
    book = TriggerBook()
    book.on_tick("AAA", Decimal("100"), T0)
    for i in range(10_000):
        market = order(f"m{i}", kind=OrderType.MARKET, limit=None)
        for seq, status in enumerate(("ACCEPTED", "OPEN", "EXECUTED"), 1):
            assert book.apply_update(market, status, seq, False) == []
    assert len(book) == 0 and len(book.closed) == 0


def test_only_the_newest_closed_orders_are_remembered():
    book = TriggerBook(closed_capacity=100)
    for i in range(1_000):
        book.apply_update(order(f"o{i}"), "OPEN", 2, False)
        book.apply_update(order(f"o{i}"), "CANCELED", 3, False)
    assert len(book) == 0 and len(book.closed) == 100
    assert list(book.closed) == [f"o{i}" for i in range(900, 1_000)]
    # A replay of a remembered one is still ignored.
    assert book.apply_update(order("o999"), "OPEN", 2, False) == []
    book.closed.update(["o999", "x1"])  # restoring from a runner's state keeps the bound
    assert len(book.closed) == 100 and "x1" in book.closed and "o900" not in book.closed


def test_a_forgotten_closed_order_replayed_is_proposed_once_then_remembered_again():
    """Why forgetting the oldest is safe: a replay re-emits the order's final
    update right after its OPEN, so the loop the memory prevents ends after
    one proposal (which the owner ignores: the order is closed)."""
    book = TriggerBook(closed_capacity=1)
    book.on_tick("AAA", Decimal("101"), T0)
    for oid in ("old", "new"):  # "new" pushes "old" out
        book.apply_update(order(oid), "OPEN", 2, False)
        book.apply_update(order(oid), "EXECUTED", 3, False)
    assert "old" not in book.closed
    book.on_tick("AAA", Decimal("99"), T0)
    replay = [("OPEN", 2), ("EXECUTED", 3)]
    proposed = [p for status, seq in replay for p in book.apply_update(order("old"), status, seq, False)]
    assert [p.order_id for p in proposed] == ["old"]
    assert "old" in book.closed
    # The owner's answer to that proposal replays it again: nothing more.
    assert [p for status, seq in replay for p in book.apply_update(order("old"), status, seq, False)] == []
    assert len(book) == 0


def test_closed_orders_capacity_must_be_positive():
    with pytest.raises(ValueError):
        TriggerBook(closed_capacity=0)


def test_orders_canceled_far_from_the_price_do_not_pile_up_in_the_heaps():
    """Removed orders leave their heap entries behind until they surface; one
    canceled far from the price never does, so sweeps keep the heaps within
    twice the resting orders plus COMPACT_SLACK."""
    book = TriggerBook()
    book.on_tick("AAA", Decimal("100"), T0)
    for i in range(20):  # resting for good
        book.apply_update(order(f"keep{i}", limit="50"), "OPEN", 2, False)
    close = T0 + timedelta(hours=6)
    most = 0
    for i in range(20_000):
        day = order(f"o{i}", limit="50", expires_at=close)
        book.apply_update(day, "OPEN", 2, False)
        book.apply_update(day, "OPEN", 3, False)  # re-filed: its first entries are stale
        book.apply_update(day, "CANCELED", 4, False)
        most = max(most, book.heap_entries())
    assert len(book) == 20
    assert most <= 2 * (2 * 21 + COMPACT_SLACK)  # 21 resting at most, two heaps
    # The live ones are all still there and proposed exactly once.
    assert sorted(t.order_id for t in book.on_tick("AAA", Decimal("50"), T0)) == \
        sorted(f"keep{i}" for i in range(20))
    assert book.on_tick("AAA", Decimal("40"), T0) == [] and book.due(close) == []
