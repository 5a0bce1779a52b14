"""Reconciliation: does every portfolio equal its starting cash (or its last
reset) plus its executed trades, do its reservations equal the sum over its
open orders, does every accepted order have exactly one final outcome (or
still rest), and does the trade history agree with the ledger? Used by
`mocktrade verify`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..domain import rules
from ..domain.events import (TOPIC_TRADE_EXECUTED, TOPIC_TRADE_ORDERS, EventDecodeError,
                             decode_envelope, decode_trade_executed, decode_trade_order)
from ..domain.lifecycle import OrderState, reserved_totals, status_of
from ..domain.model import ZERO, Execution
from ..ports import EventLog, OrderQuery, PortfolioStore, TradeHistory, TradeQuery


@dataclass
class Report:
    accounts: int = 0
    orders: int = 0
    outcomes: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


async def reconcile(portfolios: PortfolioStore, history: TradeHistory,
                    event_log: EventLog | None = None, drain_idle: float = 0.2) -> Report:
    """`drain_idle`: how long the log must stay silent to count as read to its
    end (a Kafka group join alone takes seconds)."""
    report = Report()
    ledger_by_order: dict[str, Execution] = {}
    open_orders: set[str] = set()
    for account in await portfolios.accounts():
        report.accounts += 1
        ledger = await portfolios.ledger(account.user_id)
        ledger_by_order.update((e.order_id, e) for e in ledger)
        orders = await _all_orders(portfolios, account.user_id)
        open_orders.update(s.order_id for s in orders if s.is_open)
        await _check_portfolio(portfolios, account.user_id, account.starting_cash, ledger, orders,
                               report)
        _check_orders(account.user_id, ledger, orders, report)
        await _check_history(history, account.user_id, ledger, report)
    if event_log is not None:
        await _check_log(portfolios, event_log, ledger_by_order, open_orders, report, drain_idle)
    return report


async def _all_orders(portfolios: PortfolioStore, user_id: str) -> list[OrderState]:
    states, token = [], None
    while True:
        page = await portfolios.orders(OrderQuery(user_id, limit=500, page_token=token))
        states += page.orders
        token = page.next_page_token
        if not token:
            return states


async def _check_portfolio(portfolios: PortfolioStore, user_id: str, starting_cash, ledger,
                           orders: list[OrderState], report: Report) -> None:
    portfolio = await portfolios.get(user_id)
    if portfolio is None:
        report.violations.append(f"{user_id}: account has no portfolio")
        return
    resets = await portfolios.resets(user_id)
    since = ledger
    if resets:
        starting_cash, since = resets[-1].cash, ledger[resets[-1].ledger_length:]
    cash, holdings = rules.replay_cash(starting_cash, since)
    origin = "its last reset" if resets else "starting cash"
    if portfolio.cash != cash:
        report.violations.append(
            f"{user_id}: cash {portfolio.cash} but {origin} plus trades gives {cash}")
    if dict(portfolio.holdings) != holdings:
        report.violations.append(
            f"{user_id}: holdings {dict(portfolio.holdings)} but trades give {holdings}")
    if portfolio.cash < ZERO or any(q < ZERO for q in portfolio.holdings.values()):
        report.violations.append(f"{user_id}: negative cash or holding")
    if portfolio.buying_power < ZERO or any(
            portfolio.available_shares(s) < ZERO for s in portfolio.reserved_shares):
        report.violations.append(f"{user_id}: negative buying power or shares available to sell")
    reserved_cash, reserved_shares = reserved_totals(orders)
    if portfolio.reserved_cash != reserved_cash or dict(portfolio.reserved_shares) != reserved_shares:
        report.violations.append(
            f"{user_id}: reserved {portfolio.reserved_cash} cash and {dict(portfolio.reserved_shares)} "
            f"shares, but open orders reserve {reserved_cash} and {reserved_shares}")
    seqs = sorted(t.seq for s in orders for t in s.transitions)
    if seqs != list(range(1, portfolio.order_seq + 1)):
        report.violations.append(f"{user_id}: order updates are not numbered 1..{portfolio.order_seq}")


def _check_orders(user_id: str, ledger: list[Execution], orders: list[OrderState],
                  report: Report) -> None:
    """One final status per order, the ledger's, and nothing after it."""
    outcomes = {e.order_id: e for e in ledger}
    for state in orders:
        finals = [t for t in state.transitions if t.status.final]
        entry = outcomes.get(state.order_id)
        if len(finals) > 1 or (finals and finals[-1] is not state.transitions[-1]):
            report.violations.append(f"{user_id}: order {state.order_id} changed after it ended")
        if state.status.final != (entry is not None):
            report.violations.append(
                f"{user_id}: order {state.order_id} is {state.status.value} but its ledger entry "
                f"is {'present' if entry else 'absent'}")
        elif entry is not None and status_of(entry.status) is not state.status:
            report.violations.append(
                f"{user_id}: order {state.order_id} is {state.status.value}, the ledger says "
                f"{entry.status.value}")


async def _check_history(history: TradeHistory, user_id: str, ledger: list[Execution],
                         report: Report) -> None:
    stored: dict[str, Execution] = {}
    token = None
    while True:
        page = await history.search(TradeQuery(user_id=user_id, limit=500, page_token=token))
        for trade in page.trades:
            if trade.order_id in stored:
                report.violations.append(f"{user_id}: order {trade.order_id} twice in history")
            stored[trade.order_id] = trade
        token = page.next_page_token
        if not token:
            break
    for entry in ledger:
        trade = stored.pop(entry.order_id, None)
        if trade is None:
            report.violations.append(f"{user_id}: order {entry.order_id} missing from history")
        elif (trade.status, trade.execution_price, trade.quantity) != (
                entry.status, entry.execution_price, entry.quantity):
            report.violations.append(f"{user_id}: order {entry.order_id} differs in history")
    for order_id in stored:
        report.violations.append(f"{user_id}: history has order {order_id} with no ledger entry")


async def _check_log(portfolios: PortfolioStore, event_log: EventLog, ledger: dict[str, Execution],
                     resting: set[str], report: Report, drain_idle: float) -> None:
    """Read both topics from the start without committing anything.

    The store was read before the log, so an order that rested then may have
    filled (or been canceled) since: its outcome is in the log but not in the
    ledger read earlier. Such an order is read again and judged by what the
    store holds now."""
    accepted = {o.order_id for o in await _read_all(event_log, TOPIC_TRADE_ORDERS, decode_trade_order,
                                                    drain_idle)}
    outcomes: dict[str, set[tuple]] = {}
    for e in await _read_all(event_log, TOPIC_TRADE_EXECUTED, decode_trade_executed, drain_idle):
        outcomes.setdefault(e.order_id, set()).add((e.status, e.execution_price, e.execution_timestamp))
    report.orders, report.outcomes = len(accepted), len(outcomes)
    for order_id in sorted(accepted):
        count = len(outcomes.get(order_id, ()))
        if count > 1:
            report.violations.append(f"order {order_id} has {count} different outcomes")
        settled = order_id in ledger and order_id not in resting
        if settled and count == 1 or order_id in resting and count == 0:
            continue
        # What the store said no longer matches the log: read the order again.
        now = await portfolios.order(order_id)
        if now is not None and now.is_open:
            if count:
                report.violations.append(f"order {order_id} rests but has a trade_executed event")
        elif now is None or now.outcome is None:
            report.violations.append(f"order {order_id} was accepted but never ended")
        elif not count:
            report.violations.append(f"order {order_id} has no trade_executed event")
    for order_id in sorted(set(outcomes) - accepted):
        report.violations.append(f"trade_executed for {order_id} with no accepted order")


async def _read_all(event_log: EventLog, topic: str, decode, drain_idle: float) -> list:
    consumer = event_log.consumer(topic, f"verify-{uuid.uuid4()}", reset="earliest")
    items = []
    try:
        while True:
            records = await consumer.poll(5000, drain_idle)
            if not records:
                return items
            for record in records:
                try:
                    items.append(decode(decode_envelope(record.value).payload))
                except EventDecodeError:
                    pass  # dead-lettered by the jobs; not an accepted order
    finally:
        await consumer.close()
