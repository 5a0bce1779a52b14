"""TradeHistory contract: a user's trades, filtered, newest first, paged by cursor."""

from __future__ import annotations

import base64
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from mocktrade.domain.model import Execution, ExecutionStatus, Side
from mocktrade.ports import InvalidPageToken, TradeQuery

T0 = datetime(2025, 5, 5, 15, 0, 0, tzinfo=timezone.utc)
SYMBOLS = ("MOCKAAPL", "MOCKKO", "MOCKV")


def make_trades(user: str, count: int, seed: int) -> list[Execution]:
    """Trades over a few minutes; every third shares its timestamp with its
    neighbours, so the orderId tie-break matters."""
    rng = random.Random(seed)
    trades = []
    for i in range(count):
        status = rng.choice(list(ExecutionStatus))
        executed = status is ExecutionStatus.EXECUTED
        at = T0 + timedelta(seconds=i // 3, microseconds=rng.choice((0, 0, 1)) * 7)
        trades.append(Execution(
            f"{rng.getrandbits(64):016x}", user, rng.choice(SYMBOLS),
            Decimal(rng.randint(1, 10_000)) / 100, rng.choice(list(Side)), status,
            Decimal(rng.randint(10_000, 900_000)) / 10_000 if executed else None, at,
            None if executed else f"{status.value.lower()} because reasons",
            at - timedelta(milliseconds=rng.randint(1, 500)) if rng.random() < 0.9 else None))
    return trades


def newest_first(trades: list[Execution]) -> list[Execution]:
    return sorted(trades, key=lambda t: (t.execution_timestamp, t.order_id), reverse=True)


async def all_pages(history, query: TradeQuery) -> tuple[list[Execution], set[int]]:
    trades, totals, token = [], set(), None
    for _ in range(1000):
        page = await history.search(TradeQuery(**{**_fields(query), "page_token": token}))
        assert len(page.trades) <= query.limit
        trades.extend(page.trades)
        totals.add(page.total_count)
        token = page.next_page_token
        if token is None:
            return trades, totals
        assert page.trades, "a token is only given when more trades follow"
    raise AssertionError("pagination does not end")


def _fields(query: TradeQuery) -> dict:
    return {name: getattr(query, name) for name in TradeQuery.__slots__}


@pytest.fixture
async def loaded(trade_history):
    alice, bob = make_trades("alice", 150, seed=1), make_trades("bob", 60, seed=2)
    await trade_history.index(alice[:100])
    await trade_history.index(bob)
    await trade_history.index(alice[100:])
    return trade_history, alice


async def test_trades_come_back_newest_first_and_unchanged(loaded):
    history, alice = loaded
    page = await history.search(TradeQuery("alice", limit=500))
    assert page.trades == newest_first(alice)
    assert page.total_count == 150 and page.next_page_token is None


async def test_pages_walk_every_trade_once(loaded):
    history, alice = loaded
    trades, totals = await all_pages(history, TradeQuery("alice", limit=7))
    assert trades == newest_first(alice)
    assert totals == {150}, "totalCount ignores the cursor"


@pytest.mark.parametrize("criteria", [
    {"symbol": "MOCKKO"},
    {"status": ExecutionStatus.EXECUTED},
    {"status": ExecutionStatus.FAILED_INSUFFICIENT_FUNDS},
    {"side": Side.SELL},
    {"symbol": "MOCKV", "side": Side.BUY, "status": ExecutionStatus.EXECUTED},
    {"start": T0 + timedelta(seconds=10)},
    {"end": T0 + timedelta(seconds=20)},
    {"start": T0 + timedelta(seconds=5), "end": T0 + timedelta(seconds=30), "symbol": "MOCKAAPL"},
    {"symbol": "MOCKNONE"},
], ids=lambda c: "+".join(sorted(c)))
async def test_filters_select_the_matching_trades(loaded, criteria):
    history, alice = loaded

    def matches(t: Execution) -> bool:
        return (criteria.get("symbol") in (None, t.symbol)
                and criteria.get("status") in (None, t.status)
                and criteria.get("side") in (None, t.side)
                and ("start" not in criteria or t.execution_timestamp >= criteria["start"])
                and ("end" not in criteria or t.execution_timestamp < criteria["end"]))

    expected = newest_first([t for t in alice if matches(t)])
    trades, totals = await all_pages(history, TradeQuery("alice", limit=11, **criteria))
    assert trades == expected
    assert totals == {len(expected)}


async def test_start_is_inclusive_and_end_exclusive(loaded):
    history, alice = loaded
    moment = T0 + timedelta(seconds=12)
    at_moment = [t for t in alice if t.execution_timestamp == moment]
    assert at_moment, "the data set has trades exactly at the boundary"
    page = await history.search(TradeQuery("alice", start=moment, end=moment + timedelta(microseconds=1)))
    assert page.trades == newest_first(at_moment)
    assert (await history.search(TradeQuery("alice", start=moment, end=moment))).total_count == 0


async def test_users_see_only_their_own_trades(loaded):
    history, _ = loaded
    page = await history.search(TradeQuery("bob", limit=500))
    assert page.total_count == 60 and {t.user_id for t in page.trades} == {"bob"}
    nobody = await history.search(TradeQuery("carol"))
    assert (nobody.trades, nobody.total_count, nobody.next_page_token) == ([], 0, None)


async def test_reindexing_is_harmless(loaded):
    history, alice = loaded
    await history.index(alice[40:90])
    await history.index(alice)
    page = await history.search(TradeQuery("alice", limit=500))
    assert page.trades == newest_first(alice) and page.total_count == 150


async def test_trades_indexed_between_pages_do_not_shift_the_next_page(loaded):
    history, alice = loaded
    first = await history.search(TradeQuery("alice", limit=20))
    newer = [Execution(f"new-{i}", "alice", "MOCKKO", Decimal(1), Side.BUY, ExecutionStatus.EXECUTED,
                       Decimal("1.0000"), T0 + timedelta(days=1, seconds=i)) for i in range(5)]
    await history.index(newer)
    second = await history.search(TradeQuery("alice", limit=20, page_token=first.next_page_token))
    assert second.trades == newest_first(alice)[20:40]
    assert second.total_count == 155


@pytest.mark.parametrize("token", [
    "not a token!",
    "%%%",
    base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b'{"a": 1}').decode(),
    base64.urlsafe_b64encode(b"[1]").decode(),
    base64.urlsafe_b64encode(b'["x", 1]').decode(),
])
async def test_a_foreign_page_token_is_rejected(trade_history, token):
    with pytest.raises(InvalidPageToken):
        await trade_history.search(TradeQuery("alice", page_token=token))


async def test_page_tokens_are_url_safe(loaded):
    history, _ = loaded
    token = (await history.search(TradeQuery("alice", limit=3))).next_page_token
    assert token and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


async def test_history_survives_reopening(open_trade_history):
    history = await open_trade_history()
    alice = make_trades("alice", 30, seed=3)
    await history.index(alice)
    await history.close()

    reopened = await open_trade_history()
    page = await reopened.search(TradeQuery("alice", limit=100))
    assert page.trades == newest_first(alice) and page.total_count == 30
