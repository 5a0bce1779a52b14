"""The checker itself, on hand-made observations: a clean run passes, and each
kind of violation it exists to catch is caught (a checker that never fails
proves nothing)."""

from __future__ import annotations

import copy
from decimal import Decimal

from .checker import Checker, Observed
from .workload import History, Intent

USER = "u1"
CASH = Decimal("1000.00")


def clean() -> tuple[History, Observed]:
    history = History()
    history.intents.append(Intent(USER, "k1", {"symbol": "MOCKAAPL", "quantity": "1.000001", "side": "BUY"},
                                  0.0, attempts=2, status=202, order_id="o1"))
    outcome = {"orderId": "o1", "userId": USER, "symbol": "MOCKAAPL", "quantity": "1.000001", "side": "BUY",
               "status": "EXECUTED", "executionPrice": "100.0050", "executionTimestamp": "t",
               "failureReason": None}
    order = {"orderId": "o1", "userId": USER, "symbol": "MOCKAAPL", "side": "BUY", "type": "MARKET",
             "quantity": "1.000001", "status": "EXECUTED", "outcome": "EXECUTED", "executionPrice": "100.0050",
             "limitPrice": None, "stopPrice": None, "reservedCash": "0.00"}
    record = {"order": order, "status": "EXECUTED", "transitions": [["ACCEPTED", "t", 1], ["EXECUTED", "t", 2]]}
    seen = Observed(
        executed=[{"eventId": "e1", "payload": outcome}],
        updates=[{"payload": {"orderId": "o1", "userId": USER, "status": "EXECUTED", "seq": 2}}],
        orders={"o1": order},
        portfolios={USER: {"cashBalance": "899.99", "reservedCash": "0.00", "holdings": {"MOCKAAPL": "1.000001"}}},
        stored_portfolios={USER: {"userId": USER, "cashBalance": Decimal("899.99"),
                                  "holdings": {"MOCKAAPL": Decimal("1.000001")}}},
        stored_orders={"o1": {"orderId": "o1", "userId": USER, "record": record}},
        history_docs=[{"orderId": "o1", "status": "EXECUTED", "executionPrice": "100.0050"}],
        history_totals={USER: 1}, volume={"MOCKAAPL": Decimal("1.000001")})
    return history, seen


def problems(history: History, seen: Observed) -> list[str]:
    checker = Checker("http://unused", {USER: "token"}, {}, CASH)
    return checker.check(history, seen).problems


def test_a_clean_run_passes():
    assert problems(*clean()) == []


def test_two_outcomes_for_one_order():
    history, seen = clean()
    second = copy.deepcopy(seen.executed[0])
    second["eventId"], second["payload"]["executionPrice"] = "e2", "101.0000"
    seen.executed.append(second)
    assert any("different outcomes" in p for p in problems(history, seen))


def test_a_replayed_identical_event_is_harmless():
    history, seen = clean()
    seen.executed.append(copy.deepcopy(seen.executed[0]))
    assert problems(history, seen) == []


def test_an_order_no_request_made():
    history, seen = clean()
    stranger = {**seen.orders["o1"], "orderId": "o2", "quantity": "7.000000"}
    seen.orders["o2"] = stranger
    assert any("matches no request" in p for p in problems(history, seen))


def test_a_declined_request_that_made_an_order():
    history, seen = clean()
    history.intents[0].status, history.intents[0].order_id = 402, None
    assert any("declined" in p for p in problems(history, seen))


def test_a_sell_beyond_holdings_is_negative():
    history, seen = clean()
    sell = copy.deepcopy(seen.executed[0])
    sell["eventId"] = "e3"
    sell["payload"] |= {"orderId": "o3", "side": "SELL", "quantity": "2.000000"}
    seen.executed.append(sell)
    assert any("negative" in p for p in problems(history, seen))


def test_portfolio_off_by_a_cent():
    history, seen = clean()
    seen.portfolios[USER]["cashBalance"] = "899.98"
    assert any("replay of outcomes" in p for p in problems(history, seen))


def test_history_duplicate_and_missing_volume():
    history, seen = clean()
    seen.history_docs.append(dict(seen.history_docs[0]))
    seen.volume = {}
    found = problems(history, seen)
    assert any("2 times" in p for p in found)
    assert any("analytics volume" in p for p in found)


def test_an_acknowledged_order_left_undecided():
    history, seen = clean()
    seen.orders["o1"] = {**seen.orders["o1"], "status": "ACCEPTED", "outcome": None}
    assert any("never decided" in p for p in problems(history, seen))
