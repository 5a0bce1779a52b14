"""Order service: accept orders, and ask the portfolio owner to cancel them or
reset an account.

An order is validated against the latest price and the portfolio's buying
power, then published to trade_orders; nothing is published unless the order
is accepted, and an accepted order is published before we answer 202. Cancels
and resets are instructions to the owner on order_commands (keyed by user,
like every change to a user's money); the owner decides them in log order.
Reads of orders come from the owner's store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Callable, Literal, Mapping

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .. import tracing
from ..domain import rules
from ..domain.events import (TOPIC_ORDER_COMMANDS, TOPIC_TRADE_ORDERS, encode,
                             encode_order_command, format_time, order_view, trade_order_payload)
from ..domain.lifecycle import CancelOrder, OrderState, ResetAccount
from ..domain.model import Order, OrderType, Side, TimeInForce, utc_now
from ..domain.money import MAX_CASH, AmountError, fmt, parse_cash, parse_price, parse_quantity
from ..ports import (DependencyUnavailable, EventLog, IdempotencyStore, OrderQuery,
                     PortfolioStore, PriceCache)
from .ids import new_event_id, new_order_id

log = logging.getLogger("mocktrade.orders")

SOURCE = "order-service"
MAX_ORDERS_PAGE = 500


def _decimal(parse: Callable[[object, str], Decimal], what: str) -> Callable[[object], Decimal]:
    def check(value: object) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
            raise ValueError("must be a decimal number or a string holding one")
        try:
            return parse(value, what)
        except AmountError as exc:
            raise ValueError(str(exc)) from None
    return check


def _symbol(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip().upper()


Price = Annotated[Decimal, BeforeValidator(_decimal(parse_price, "price")),
                  Field(description="Up to 4 decimal places, greater than 0; a string keeps it exact",
                        json_schema_extra={"type": "string", "pattern": r"^\d{1,8}(\.\d{1,4})?$"})]


class OrderRequest(BaseModel):
    """Body of POST /v1/orders. The user comes from the token, never from here."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"symbol": "MOCKAAPL", "quantity": "10", "side": "BUY"},
                     {"symbol": "MOCKAAPL", "quantity": "5", "side": "SELL", "type": "LIMIT",
                      "limitPrice": "250.00", "timeInForce": "GTC", "clientOrderId": "take-profit-1"}]})

    symbol: Annotated[str, BeforeValidator(_symbol), Field(min_length=1, max_length=16)]
    quantity: Annotated[Decimal, BeforeValidator(_decimal(parse_quantity, "quantity")),
                        Field(description="Shares, up to 6 decimal places; a string keeps it exact",
                              json_schema_extra={"type": "string",
                                                 "pattern": r"^\d{1,7}(\.\d{1,6})?$"})]
    side: Literal["BUY", "SELL"]
    type: Literal["MARKET", "LIMIT", "STOP", "STOP_LIMIT"] = "MARKET"
    timeInForce: Literal["DAY", "GTC", "IOC", "FOK"] = Field(
        "DAY", description="Market orders behave as IOC whatever is given")
    limitPrice: Price | None = Field(None, description="Required for LIMIT and STOP_LIMIT, else absent")
    stopPrice: Price | None = Field(None, description="Required for STOP and STOP_LIMIT, else absent")
    clientOrderId: str | None = Field(None, min_length=1, max_length=64,
                                      pattern=r"^[\x20-\x7e]{1,64}$",
                                      description="Your own id, unique among your orders")

    def fingerprint(self) -> str:
        parts = [self.symbol, fmt(self.quantity), self.side]
        if (self.type, self.timeInForce, self.limitPrice, self.stopPrice, self.clientOrderId) != (
                "MARKET", "DAY", None, None, None):
            parts += [self.type, self.timeInForce, _text(self.limitPrice), _text(self.stopPrice),
                      self.clientOrderId or ""]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _text(value: Decimal | None) -> str:
    return "" if value is None else fmt(value)


class ResetRequest(BaseModel):
    """Body of POST /v1/account/reset (optional)."""

    model_config = ConfigDict(extra="forbid")
    cash: Annotated[Decimal, BeforeValidator(_decimal(parse_cash, "cash")),
                    Field(description="Cash to restart with; default: the account's starting cash",
                          json_schema_extra={"type": "string", "pattern": r"^\d{1,15}(\.\d{1,2})?$"})] | None = None


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different order."""


class ClientOrderIdTaken(Exception):
    def __init__(self, client_order_id: str, order_id: str):
        super().__init__(f"clientOrderId {client_order_id!r} is already used by order {order_id}")
        self.order_id = order_id


class UnknownAccount(Exception):
    pass


class PriceUnavailable(Exception):
    pass


class OrderNotFound(Exception):
    pass


class OrderNotCancelable(Exception):
    def __init__(self, state: OrderState):
        super().__init__(f"order {state.order_id} is {state.status.value} and cannot be canceled")
        self.status = state.status.value


@dataclass(frozen=True, slots=True)
class Declined:
    """A business decline (402/422) remembered for its idempotency key."""

    kind: str  # "funds" or "shares"
    message: str
    field: str

    def raise_again(self) -> None:
        error = (rules.InsufficientFunds if self.kind == "funds" else rules.InsufficientShares)(
            self.message, self.field)
        error.replayed = True  # answered from the key's record, as an accepted retry is
        raise error

    def dumps(self) -> str:
        return orjson.dumps({"kind": self.kind, "message": self.message, "field": self.field}).decode()

    @classmethod
    def loads(cls, text: str) -> "Declined":
        data = orjson.loads(text)
        return cls(data["kind"], data["message"], data["field"])


@dataclass(frozen=True, slots=True)
class AcceptedOrder:
    order_id: str
    replayed: bool  # answered from an earlier request with the same idempotency key


class OrderService:
    def __init__(self, event_log: EventLog, prices: PriceCache, portfolios: PortfolioStore,
                 idempotency: IdempotencyStore, symbols: frozenset[str],
                 clock: Callable = utc_now, session_close: time = time(20, 0)):
        self._log, self._prices, self._portfolios = event_log, prices, portfolios
        self._idempotency, self._symbols, self._clock = idempotency, symbols, clock
        self._session_close = session_close
        # Serialises requests that share an idempotency key within this replica;
        # across replicas the execution ledger makes a duplicate publish harmless.
        self._key_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- placing -------------------------------------------------------------

    async def place(self, user_id: str, request: OrderRequest, idempotency_key: str | None = None,
                    trace_context: Mapping[str, str] | None = None) -> AcceptedOrder:
        if idempotency_key is None:
            return await self._place_new(user_id, request, trace_context)
        lock_key = (user_id, idempotency_key)
        lock = self._key_locks.setdefault(lock_key, asyncio.Lock())
        try:
            async with lock:
                return await self._place_once(user_id, request, idempotency_key, trace_context)
        finally:
            if not lock.locked() and self._key_locks.get(lock_key) is lock:
                del self._key_locks[lock_key]

    async def _place_new(self, user_id: str, request: OrderRequest,
                         trace_context: Mapping[str, str] | None, order_id: str | None = None
                         ) -> AcceptedOrder:
        order = self._order(order_id or new_order_id(), user_id, request)
        await self._validate(order)
        if order.client_order_id is not None:
            order = await self._claim_client_order_id(order, request.fingerprint())
        await self._publish(order, trace_context)
        await self._mark_published(user_id, None, order)
        return AcceptedOrder(order.order_id, replayed=False)

    async def _place_once(self, user_id: str, request: OrderRequest, key: str,
                          trace_context: Mapping[str, str] | None) -> AcceptedOrder:
        fingerprint = request.fingerprint()
        # A retry of an answered request is answered from the record, not
        # re-validated: the first attempt may have spent the cash it checked,
        # and a declined one must stay declined.
        earlier = await self._idempotency.lookup(user_id, key)
        self._check_fingerprint(earlier, fingerprint)
        if earlier is not None and earlier.decline is not None:
            Declined.loads(earlier.decline).raise_again()
        if earlier is not None and earlier.published:
            return AcceptedOrder(earlier.order_id, replayed=True)
        order = self._order(earlier.order_id if earlier else new_order_id(), user_id, request)
        try:
            await self._validate(order)
        except (rules.InsufficientFunds, rules.InsufficientShares) as exc:
            record = await self._idempotency.reserve(user_id, key, fingerprint, order.order_id)
            self._check_fingerprint(record, fingerprint)
            if record.order_id == order.order_id and not record.published:
                kind = "funds" if isinstance(exc, rules.InsufficientFunds) else "shares"
                await self._idempotency.remember_decline(user_id, key,
                                                         Declined(kind, str(exc), exc.field).dumps())
            raise
        record = await self._idempotency.reserve(user_id, key, fingerprint, order.order_id)
        self._check_fingerprint(record, fingerprint)
        if record.decline is not None:
            Declined.loads(record.decline).raise_again()
        if record.published:
            return AcceptedOrder(record.order_id, replayed=True)
        # Either our fresh claim, or a claim whose publish may not have
        # completed (crash): publishing the same orderId again is safe because
        # execution is idempotent per orderId.
        order = self._order(record.order_id, user_id, request, order.order_timestamp)
        if order.client_order_id is not None:
            order = await self._claim_client_order_id(order, fingerprint)
        await self._publish(order, trace_context)
        await self._mark_published(user_id, key, order)
        return AcceptedOrder(record.order_id, replayed=False)

    async def _mark_published(self, user_id: str, key: str | None, order: Order) -> None:
        """The order is in the log (durable) once published, so it is accepted
        whatever happens here. If the mark cannot be written (a full disk), a
        retry with the same key publishes the same orderId again, which
        execution ignores as a replay: the mark only saves that round trip."""
        try:
            if key is not None:
                await self._idempotency.mark_published(user_id, key)
            if order.client_order_id is not None:
                await self._idempotency.mark_published(user_id, _client_key(order.client_order_id))
        except DependencyUnavailable as exc:
            log.warning("order published but not marked so; a retry republishes it",
                        extra={"orderId": order.order_id, "userId": user_id, "reason": str(exc)})

    @staticmethod
    def _check_fingerprint(record, fingerprint: str) -> None:
        if record is not None and record.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "X-Idempotency-Key was already used with a different order body")

    async def _claim_client_order_id(self, order: Order, fingerprint: str) -> Order:
        """clientOrderId is unique per user: the store knows processed orders,
        the claim covers orders still in flight (and a retry after a crash)."""
        assert order.client_order_id is not None
        existing = await self._portfolios.order_by_client_id(order.user_id, order.client_order_id)
        if existing is not None and existing.order_id != order.order_id:
            raise ClientOrderIdTaken(order.client_order_id, existing.order_id)
        claim = await self._idempotency.reserve(order.user_id, _client_key(order.client_order_id),
                                                fingerprint, order.order_id)
        if claim.order_id == order.order_id:
            return order
        if claim.published or claim.fingerprint != fingerprint:
            raise ClientOrderIdTaken(order.client_order_id, claim.order_id)
        # The same order, claimed by an attempt that never published: finish it.
        return replace(order, order_id=claim.order_id)

    def _order(self, order_id: str, user_id: str, request: OrderRequest,
               at=None) -> Order:
        now = at or self._clock()
        kind, tif = OrderType(request.type), TimeInForce(request.timeInForce)
        order = Order(order_id, user_id, request.symbol, request.quantity, Side(request.side), now,
                      kind, tif, request.limitPrice, request.stopPrice, request.clientOrderId)
        if order.rests and tif is TimeInForce.DAY:
            order = replace(order, expires_at=rules.next_session_close(now, self._session_close))
        return order

    async def _validate(self, order: Order) -> None:
        rules.check_symbol(order.symbol, self._symbols)
        rules.check_quantity(order.quantity)
        rules.check_order_shape(order)
        tick = await self._prices.get_price(order.symbol)
        if tick is None:
            raise PriceUnavailable(f"no market price for {order.symbol} yet")
        portfolio = await self._portfolios.get(order.user_id)
        if portfolio is None:
            raise UnknownAccount(f"user {order.user_id} has no account")
        rules.validate(order, portfolio, tick.price, self._symbols)

    async def _publish(self, order: Order, trace_context: Mapping[str, str] | None) -> None:
        """To trade_orders, the trace context in the headers and the envelope."""
        with tracing.span(f"publish {TOPIC_TRADE_ORDERS}", tracing.PRODUCER, trace_context,
                          lambda: tracing.publish_attributes(
                              TOPIC_TRADE_ORDERS, order.user_id,
                              **tracing.order_attributes(order.order_id, order.user_id))) as span:
            context = tracing.carrier(span, trace_context)
            value = encode(SOURCE, trade_order_payload(order), event_id=new_event_id(),
                           trace_context=context)
            await self._log.publish(TOPIC_TRADE_ORDERS, order.user_id, value, context)
        log.debug("order accepted", extra={"orderId": order.order_id, "userId": order.user_id,
                                          "traceId": context.get("traceparent")})

    # -- canceling and resetting -------------------------------------------------

    async def cancel(self, user_id: str, order_id: str,
                     trace_context: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Ask the owner to cancel; the order as it will read until decided."""
        state = await self.order(user_id, order_id)
        if state.status.final:
            raise OrderNotCancelable(state)
        await self._send(CancelOrder(user_id, order_id, self._clock()), trace_context)
        return {**order_view(state), "status": "PENDING_CANCEL"}

    async def cancel_all(self, user_id: str) -> list[dict[str, Any]]:
        results = []
        for state in await self._all_open(user_id):
            await self._send(CancelOrder(user_id, state.order_id, self._clock()))
            results.append({"orderId": state.order_id, "status": "PENDING_CANCEL"})
        return results

    async def reset(self, user_id: str, cash: Decimal | None) -> dict[str, Any]:
        if cash is not None and not (Decimal(0) <= cash <= MAX_CASH):
            raise rules.InvalidOrder(f"cash must be between 0 and {MAX_CASH}", "cash")
        if await self._portfolios.get(user_id) is None:
            raise UnknownAccount(f"user {user_id} has no account")
        reset_id = str(uuid.uuid4())
        await self._send(ResetAccount(user_id, reset_id, cash, self._clock()))
        return {"resetId": reset_id, "status": "ACCEPTED",
                "cash": fmt(cash) if cash is not None else None}

    async def _send(self, instruction, trace_context: Mapping[str, str] | None = None) -> None:
        with tracing.span(f"publish {TOPIC_ORDER_COMMANDS}", tracing.PRODUCER, trace_context,
                          lambda: tracing.publish_attributes(
                              TOPIC_ORDER_COMMANDS, instruction.user_id,
                              **tracing.order_attributes(getattr(instruction, "order_id", None),
                                                         instruction.user_id))) as span:
            context = tracing.carrier(span, trace_context)
            await self._log.publish(TOPIC_ORDER_COMMANDS, instruction.user_id,
                                    encode_order_command(instruction, SOURCE, context), context)

    async def _all_open(self, user_id: str) -> list[OrderState]:
        states, token = [], None
        while True:
            page = await self._portfolios.orders(OrderQuery(user_id, open=True, limit=MAX_ORDERS_PAGE,
                                                            page_token=token))
            states += page.orders
            token = page.next_page_token
            if not token:
                return states

    # -- reading ---------------------------------------------------------------

    async def order(self, user_id: str, order_id: str) -> OrderState:
        state = await self._portfolios.order(order_id)
        if state is None or state.user_id != user_id:
            raise OrderNotFound(f"no order {order_id}")  # another user's is not yours to know of
        return state

    async def order_by_client_id(self, user_id: str, client_order_id: str) -> OrderState:
        state = await self._portfolios.order_by_client_id(user_id, client_order_id)
        if state is None:
            raise OrderNotFound(f"no order with clientOrderId {client_order_id!r}")
        return state

    async def orders(self, query: OrderQuery) -> dict[str, Any]:
        page = await self._portfolios.orders(query)
        return {"orders": [order_view(s) for s in page.orders],
                "nextPageToken": page.next_page_token}


def _client_key(client_order_id: str) -> str:
    return f"clientOrderId:{client_order_id}"


def order_detail(state: OrderState) -> dict[str, Any]:
    """An order with the time of every transition (GET /v1/orders/{orderId})."""
    return {**order_view(state),
            "transitions": [{"status": t.status.value, "time": format_time(t.at), "seq": t.seq}
                            for t in state.transitions]}


__all__ = ["OrderService", "OrderRequest", "ResetRequest", "AcceptedOrder", "IdempotencyConflict",
           "ClientOrderIdTaken", "UnknownAccount", "PriceUnavailable", "OrderNotFound",
           "OrderNotCancelable", "DependencyUnavailable", "order_detail"]
