"""API gateway: one ASGI app composing the routes of whichever services this
process runs, with bearer-token auth, per-user rate limiting, the OpenAPI
document and health endpoints."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Awaitable, Callable, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..domain import rules
from ..domain.model import ExecutionStatus, Side
from ..domain.events import order_view
from ..ports import DependencyUnavailable, InvalidPageToken, OrderQuery
from .auth import TokenIssuer, Unauthorized
from .http import ApiError, JsonResponse, parse_body, parse_optional_body, validation_error
from .orders import (ClientOrderIdTaken, IdempotencyConflict, OrderNotCancelable, OrderNotFound,
                     OrderRequest, OrderService, PriceUnavailable, ResetRequest, UnknownAccount,
                     order_detail)
from .portfolio import PortfolioNotFound, PortfolioService
from .query import MAX_PAGE_SIZE, QueryService, UnknownSymbolPrice
from .ratelimit import RateLimiter

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]


@dataclass
class GatewayParts:
    """What this process serves; absent services simply have no routes here."""

    tokens: TokenIssuer
    limiter: RateLimiter
    orders: OrderService | None = None
    portfolio: PortfolioService | None = None
    query: QueryService | None = None
    extra_routes: list[Any] = field(default_factory=list)
    readiness: ReadinessCheck | None = None
    lifespan: Any = None


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail))
        return ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                        headers=dict(exc.headers or {})).response()

    @app.exception_handler(DependencyUnavailable)
    async def dependency_down(_: Request, exc: DependencyUnavailable):
        return ApiError(503, "dependency_unavailable", str(exc),
                        headers={"Retry-After": "1"}).response()


def _trace_context(traceparent: str | None) -> dict[str, str]:
    """W3C trace context: keep the caller's, or start a trace here."""
    if traceparent:
        return {"traceparent": traceparent}
    return {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}


async def current_user(request: Request,
                       authorization: Annotated[str | None, Header()] = None) -> str:
    """The authenticated caller, after their rate limit allows the request.

    `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
    pool, a thread hop per request that cost more than everything else here
    (and would let two threads update the rate limiter's buckets at once).
    Nothing in here blocks: a JWT check and an in-memory token bucket.
    """
    parts: GatewayParts = request.app.state.parts
    try:
        user_id = parts.tokens.user_of(authorization)
    except Unauthorized as exc:
        raise ApiError(401, "unauthorized", str(exc),
                       headers={"WWW-Authenticate": "Bearer"}) from None
    wait = parts.limiter.acquire(user_id)
    if wait:
        raise ApiError(429, "rate_limited", "too many requests; slow down",
                       headers={"Retry-After": RateLimiter.retry_after(wait)})
    return user_id


User = Annotated[str, Depends(current_user)]


def create_app(parts: GatewayParts) -> FastAPI:
    app = FastAPI(title="mocktrade", version="0.1.0", openapi_url="/v1/openapi.json",
                  docs_url="/v1/docs", redoc_url=None, lifespan=parts.lifespan,
                  default_response_class=JsonResponse,
                  description="Mock stock trading: orders, portfolios, trade history, "
                              "volume analytics and live prices (WebSocket /v1/marketdata).")
    _error_handlers(app)

    app.state.parts = parts

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        checks = await parts.readiness() if parts.readiness else {}
        ready = all(v == "ok" for v in checks.values())
        return JsonResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                              status_code=200 if ready else 503)

    if parts.orders is not None:
        _order_routes(app, parts.orders)
    if parts.portfolio is not None:
        _portfolio_routes(app, parts.portfolio)
    if parts.query is not None:
        _query_routes(app, parts.query)
    for route in parts.extra_routes:
        app.router.routes.append(route)
    return app


def _order_routes(app: FastAPI, orders: OrderService) -> None:
    @app.post("/v1/orders", status_code=202, tags=["orders"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": OrderRequest.model_json_schema()}}}},
              responses={400: {"description": "malformed order"}, 401: {"description": "no or bad token"},
                         402: {"description": "insufficient buying power at the latest price"},
                         409: {"description": "idempotency key reused with another body, or "
                                              "clientOrderId already used"},
                         422: {"description": "insufficient shares available to sell"},
                         429: {"description": "rate limited"},
                         503: {"description": "a dependency is down; nothing was published"}})
    async def place_order(request: Request, user_id: User,
                          x_idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
                          traceparent: Annotated[str | None, Header()] = None):
        body = await parse_body(request, OrderRequest)
        try:
            accepted = await orders.place(user_id, body, x_idempotency_key,
                                          _trace_context(traceparent))
        except rules.InsufficientFunds as exc:
            raise ApiError(402, "insufficient_funds", str(exc), exc.field,
                           headers=_replayed(exc)) from None
        except rules.InsufficientShares as exc:
            raise ApiError(422, "insufficient_shares", str(exc), exc.field,
                           headers=_replayed(exc)) from None
        except rules.OrderRejected as exc:
            raise ApiError(400, "invalid_order", str(exc), exc.field) from None
        except IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc), "X-Idempotency-Key") from None
        except ClientOrderIdTaken as exc:
            raise ApiError(409, "client_order_id_taken", str(exc), "clientOrderId",
                           extra={"orderId": exc.order_id}) from None
        except UnknownAccount as exc:
            raise ApiError(403, "no_account", str(exc)) from None
        except PriceUnavailable as exc:
            raise ApiError(503, "price_unavailable", str(exc), "symbol",
                           headers={"Retry-After": "1"}) from None
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
        answer = {"orderId": accepted.order_id, "status": "ACCEPTED"}
        if body.clientOrderId is not None:
            answer["clientOrderId"] = body.clientOrderId
        return JsonResponse(answer, status_code=202, headers=headers)

    @app.get("/v1/orders", tags=["orders"])
    async def list_orders(
        user_id: User,
        status: Literal["open", "closed", "all"] = "all",
        symbol: Annotated[str | None, Query(max_length=16)] = None,
        client_order_id: Annotated[str | None, Query(alias="clientOrderId", min_length=1,
                                                     max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
        page_token: Annotated[str | None, Query(alias="pageToken", max_length=512)] = None,
    ):
        if client_order_id is not None:
            try:
                state = await orders.order_by_client_id(user_id, client_order_id)
            except OrderNotFound:
                return JsonResponse({"orders": [], "nextPageToken": None})
            return JsonResponse({"orders": [order_view(state)], "nextPageToken": None})
        query = OrderQuery(user_id, open={"open": True, "closed": False, "all": None}[status],
                           symbol=symbol.upper() if symbol else None, limit=limit,
                           page_token=page_token)
        try:
            return JsonResponse(await orders.orders(query))
        except InvalidPageToken as exc:
            raise ApiError(400, "invalid_request", str(exc), "pageToken") from None

    @app.get("/v1/orders/{orderId}", tags=["orders"])
    async def get_order(user_id: User, order_id: Annotated[str, Path(alias="orderId", max_length=64)]):
        try:
            return JsonResponse(order_detail(await orders.order(user_id, order_id)))
        except OrderNotFound as exc:
            raise ApiError(404, "not_found", str(exc), "orderId") from None

    @app.delete("/v1/orders/{orderId}", status_code=202, tags=["orders"])
    async def cancel_order(user_id: User,
                           order_id: Annotated[str, Path(alias="orderId", max_length=64)]):
        try:
            return JsonResponse(await orders.cancel(user_id, order_id), status_code=202)
        except OrderNotFound as exc:
            raise ApiError(404, "not_found", str(exc), "orderId") from None
        except OrderNotCancelable as exc:
            raise ApiError(422, "order_not_cancelable", str(exc), "status",
                           extra={"status": exc.status}) from None

    @app.delete("/v1/orders", status_code=202, tags=["orders"])
    async def cancel_all_orders(user_id: User):
        return JsonResponse({"orders": await orders.cancel_all(user_id)}, status_code=202)

    @app.post("/v1/account/reset", status_code=202, tags=["account"])
    async def reset_account(request: Request, user_id: User):
        body = await parse_optional_body(request, ResetRequest)
        try:
            return JsonResponse(await orders.reset(user_id, body.cash), status_code=202)
        except rules.OrderRejected as exc:
            raise ApiError(400, "invalid_request", str(exc), exc.field) from None
        except UnknownAccount as exc:
            raise ApiError(403, "no_account", str(exc)) from None


# The read endpoints answer with a JsonResponse of what the services built
# (strings, ints, booleans, None only), so FastAPI does not walk it with
# jsonable_encoder first: that walk cost 1-2 ms per page of 50 trades, more
# than the query itself (see docs/benchmarks.md).


def _portfolio_routes(app: FastAPI, portfolio: PortfolioService) -> None:
    @app.get("/v1/portfolio/{userId}", tags=["portfolio"],
             responses={403: {"description": "another user's portfolio"},
                        404: {"description": "unknown user"}})
    async def get_portfolio(user_id: User, owner: Annotated[str, Path(alias="userId")]):
        if owner != user_id:
            raise ApiError(403, "forbidden", "a portfolio is visible to its owner only", "userId")
        try:
            return JsonResponse(await portfolio.view(owner))
        except PortfolioNotFound as exc:
            raise ApiError(404, "not_found", str(exc), "userId") from None


def _query_routes(app: FastAPI, query: QueryService) -> None:
    @app.get("/v1/trades/search", tags=["trades"])
    async def search_trades(
        user_id: User,
        symbol: Annotated[str | None, Query(max_length=16)] = None,
        status: ExecutionStatus | None = None,
        side: Side | None = None,
        start_date: Annotated[datetime | None, Query(alias="startDate")] = None,
        end_date: Annotated[datetime | None, Query(alias="endDate")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
        page_token: Annotated[str | None, Query(alias="pageToken", max_length=512)] = None,
    ):
        start, end = _utc(start_date, "startDate"), _utc(end_date, "endDate")
        if start and end and start >= end:
            raise ApiError(400, "invalid_request", "startDate must be before endDate", "startDate")
        try:
            return JsonResponse(await query.search_trades(
                user_id, symbol=symbol.upper() if symbol else None, status=status, side=side,
                start=start, end=end, limit=limit, page_token=page_token))
        except InvalidPageToken as exc:
            raise ApiError(400, "invalid_request", str(exc), "pageToken") from None

    @app.get("/v1/analytics/volume", tags=["analytics"])
    async def volume(user_id: User,
                     time_window: Annotated[Literal["1h", "24h", "7d"], Query(alias="timeWindow")] = "24h",
                     symbol: Annotated[str | None, Query(max_length=16)] = None):
        return JsonResponse(await query.volume(time_window, symbol.upper() if symbol else None))

    @app.get("/v1/prices", tags=["prices"])
    async def prices():
        return JsonResponse(await query.prices())

    @app.get("/v1/prices/{symbol}", tags=["prices"])
    async def price(symbol: str):
        try:
            return JsonResponse(await query.price(symbol.upper()))
        except UnknownSymbolPrice as exc:
            raise ApiError(404, "not_found", str(exc), "symbol") from None


def _replayed(exc: Exception) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if getattr(exc, "replayed", False) else None


def _utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ApiError(400, "invalid_request", f"{name} must include a UTC offset, e.g. Z", name)
    return moment
