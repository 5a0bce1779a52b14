"""Order service: validate a market order against the latest price and the
portfolio, then publish it to trade_orders. Nothing is published unless the
order is accepted, and an accepted order is published before we answer 202."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Callable, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..domain import rules
from ..domain.events import TOPIC_TRADE_ORDERS, encode, trade_order_payload
from ..domain.model import Order, Side, utc_now
from ..domain.money import AmountError, fmt, parse_quantity
from ..ports import DependencyUnavailable, EventLog, IdempotencyStore, PortfolioStore, PriceCache

log = logging.getLogger("mocktrade.orders")

SOURCE = "order-service"


def _quantity(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError("must be a decimal number or a string holding one")
    try:
        return parse_quantity(value)
    except AmountError as exc:
        raise ValueError(str(exc)) from None


def _symbol(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip().upper()


class OrderRequest(BaseModel):
    """Body of POST /v1/orders. The user comes from the token, never from here."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"symbol": "MOCKAAPL", "quantity": "10", "side": "BUY"}]})

    symbol: Annotated[str, BeforeValidator(_symbol), Field(min_length=1, max_length=16)]
    quantity: Annotated[Decimal, BeforeValidator(_quantity),
                        Field(description="Shares, up to 6 decimal places; a string keeps it exact")]
    side: Literal["BUY", "SELL"]

    def fingerprint(self) -> str:
        canonical = f"{self.symbol}|{fmt(self.quantity)}|{self.side}"
        return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different order."""


class UnknownAccount(Exception):
    pass


class PriceUnavailable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class AcceptedOrder:
    order_id: str
    replayed: bool  # answered from an earlier request with the same idempotency key


class OrderService:
    def __init__(self, event_log: EventLog, prices: PriceCache, portfolios: PortfolioStore,
                 idempotency: IdempotencyStore, symbols: frozenset[str],
                 clock: Callable = utc_now):
        self._log, self._prices, self._portfolios = event_log, prices, portfolios
        self._idempotency, self._symbols, self._clock = idempotency, symbols, clock
        # Serialises requests that share an idempotency key within this replica;
        # across replicas the execution ledger makes a duplicate publish harmless.
        self._key_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def place(self, user_id: str, request: OrderRequest, idempotency_key: str | None = None,
                    trace_context: Mapping[str, str] | None = None) -> AcceptedOrder:
        if idempotency_key is None:
            order_id = str(uuid.uuid4())
            await self._validate_and_publish(order_id, user_id, request, trace_context)
            return AcceptedOrder(order_id, replayed=False)
        lock_key = (user_id, idempotency_key)
        lock = self._key_locks.setdefault(lock_key, asyncio.Lock())
        try:
            async with lock:
                return await self._place_once(user_id, request, idempotency_key, trace_context)
        finally:
            if not lock.locked() and self._key_locks.get(lock_key) is lock:
                del self._key_locks[lock_key]

    async def _place_once(self, user_id: str, request: OrderRequest, key: str,
                          trace_context: Mapping[str, str] | None) -> AcceptedOrder:
        fingerprint = request.fingerprint()
        # A retry of an accepted order is answered from the record, not
        # re-validated: the first attempt may have spent the cash it checked.
        earlier = await self._idempotency.lookup(user_id, key)
        if earlier is None or not earlier.published:
            self._check_fingerprint(earlier, fingerprint)
            # Validate before claiming the key, so a rejected order leaves no trace.
            await self._validate(user_id, request)
            earlier = await self._idempotency.reserve(user_id, key, fingerprint, str(uuid.uuid4()))
        self._check_fingerprint(earlier, fingerprint)
        if earlier.published:
            return AcceptedOrder(earlier.order_id, replayed=True)
        # Either our fresh claim, or a claim whose publish may not have
        # completed (crash): publishing the same orderId again is safe because
        # execution is idempotent per orderId.
        await self._publish(earlier.order_id, user_id, request, trace_context)
        await self._idempotency.mark_published(user_id, key)
        return AcceptedOrder(earlier.order_id, replayed=False)

    @staticmethod
    def _check_fingerprint(record, fingerprint: str) -> None:
        if record is not None and record.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "X-Idempotency-Key was already used with a different order body")

    async def _validate_and_publish(self, order_id: str, user_id: str, request: OrderRequest,
                                    trace_context: Mapping[str, str] | None) -> None:
        await self._validate(user_id, request)
        await self._publish(order_id, user_id, request, trace_context)

    async def _validate(self, user_id: str, request: OrderRequest) -> None:
        rules.check_symbol(request.symbol, self._symbols)
        rules.check_quantity(request.quantity)
        tick = await self._prices.get_price(request.symbol)
        if tick is None:
            raise PriceUnavailable(f"no market price for {request.symbol} yet")
        portfolio = await self._portfolios.get(user_id)
        if portfolio is None:
            raise UnknownAccount(f"user {user_id} has no account")
        draft = Order("validation", user_id, request.symbol, request.quantity,
                      Side(request.side), self._clock())
        rules.validate(draft, portfolio, tick.price, self._symbols)

    async def _publish(self, order_id: str, user_id: str, request: OrderRequest,
                       trace_context: Mapping[str, str] | None) -> None:
        order = Order(order_id, user_id, request.symbol, request.quantity, Side(request.side),
                      self._clock())
        value = encode(SOURCE, trade_order_payload(order), trace_context=trace_context)
        await self._log.publish(TOPIC_TRADE_ORDERS, user_id, value, dict(trace_context or {}))
        log.debug("order accepted", extra={"orderId": order_id, "userId": user_id,
                                          "traceId": (trace_context or {}).get("traceparent")})


__all__ = ["OrderService", "OrderRequest", "AcceptedOrder", "IdempotencyConflict",
           "UnknownAccount", "PriceUnavailable", "DependencyUnavailable"]
