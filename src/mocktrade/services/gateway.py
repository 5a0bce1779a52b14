"""API gateway: one ASGI app composing the routes of whichever services this
process runs, with bearer-token auth, per-user rate limiting, the OpenAPI
document and health endpoints."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from time import perf_counter
from typing import Annotated, Any, Awaitable, Callable, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Route

from .. import metrics, tracing
from ..console import docs_routes
from ..domain import rules
from ..domain.model import ExecutionStatus, Side
from ..domain.events import order_view
from ..ports import DependencyUnavailable, InvalidPageToken, OrderQuery
from .auth import TokenIssuer, TokenThrottled, Unauthorized
from .client_address import ClientAddress
from .edge import Edge
from . import schemas
from .ids import new_traceparent
from .http import ApiError, JsonResponse, parse_body, parse_optional_body, validation_error
from .limits import MAX_BODY_BYTES, RequestLimits
from . import metrics_http
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
    # Who a request comes from, for the per-address limits (bad tokens, sign-ins).
    client_address: ClientAddress = field(default_factory=ClientAddress)
    # Origins allowed cross-origin (MOCKTRADE_CORS_ORIGINS); empty: same-origin only.
    cors_origins: tuple[str, ...] = ()
    orders: OrderService | None = None
    portfolio: PortfolioService | None = None
    query: QueryService | None = None
    accounts: Any = None  # services.accounts.AccountService: sign-up and sign-in
    extra_routes: list[Any] = field(default_factory=list)
    readiness: ReadinessCheck | None = None
    lifespan: Any = None
    # process label -> /metrics URL of another process this one's /metrics covers
    metrics_peers: dict[str, str] = field(default_factory=dict)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path
            # only; /v1/orders is three routes.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                        headers=headers).response()

    @app.exception_handler(DependencyUnavailable)
    async def dependency_down(_: Request, exc: DependencyUnavailable):
        return ApiError(503, "dependency_unavailable", str(exc),
                        headers={"Retry-After": "1"}).response()


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route.methods)
    return sorted(methods)


def _trace_context(traceparent: str | None) -> dict[str, str]:
    """W3C trace context: keep the caller's, or start a trace here."""
    if traceparent:
        return {"traceparent": traceparent}
    return {"traceparent": new_traceparent()}


class _BearerHeader(HTTPBearer):
    """The HTTP bearer scheme in the document; the raw header to current_user
    (which answers every problem with it in the error envelope)."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("authorization")


_bearer = _BearerHeader(scheme_name="bearerAuth", bearerFormat="JWT",
                        description="`mocktrade token USER` prints one", auto_error=False)


async def current_user(request: Request,
                       authorization: Annotated[str | None, Security(_bearer)] = None) -> str:
    """The authenticated caller, after their rate limit allows the request.

    `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
    pool, a thread hop per request that cost more than everything else here
    (and would let two threads update the rate limiter's buckets at once).
    Nothing in here blocks: a JWT check and an in-memory token bucket.
    """
    return authenticate(request.app.state.parts, authorization, request.scope)


def authenticate(parts: GatewayParts, authorization: str | None, scope: Any) -> str:
    try:
        user_id = parts.tokens.user_of(authorization, parts.client_address.of(scope))
    except Unauthorized as exc:
        raise ApiError(401, "unauthorized", str(exc),
                       headers={"WWW-Authenticate": "Bearer"}) from None
    except TokenThrottled as exc:  # this address sent too many bad tokens
        raise ApiError(429, "rate_limited", str(exc),
                       headers={"Retry-After": RateLimiter.retry_after(exc.wait)}) from None
    wait = parts.limiter.acquire(user_id)
    if wait:
        raise ApiError(429, "rate_limited", "too many requests; slow down",
                       headers={"Retry-After": RateLimiter.retry_after(wait)})
    return user_id


User = Annotated[str, Depends(current_user)]


# FastAPI's own OpenTelemetry layer stays off: our spans are made by
# mocktrade.tracing (which never registers global providers, so FastAPI's
# would find none and make nothing), and with it on FastAPI asks the three
# global providers on every request whether they are configured yet, which
# cost about as much as all our middleware together (bench/middleware.py).
_NO_FASTAPI_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False,
                              "operation_spans": False, "auto_configure": False}


def create_app(parts: GatewayParts) -> FastAPI:
    app = FastAPI(title="mocktrade", version="0.1.0", openapi_url="/v1/openapi.json",
                  docs_url=None, redoc_url=None, lifespan=parts.lifespan,
                  default_response_class=JsonResponse, redirect_slashes=False,
                  telemetry=_NO_FASTAPI_TELEMETRY,
                  description="Mock stock trading: orders, portfolios, trade history, "
                              "volume analytics and live prices (WebSocket /v1/marketdata).")
    _error_handlers(app)
    # Swagger UI (/v1/docs) and Redoc (/v1/redoc) from vendored assets: offline.
    app.router.routes.extend(docs_routes(app.openapi_url, app.title))
    app.state.parts = parts
    metrics_http.install(app, parts.metrics_peers, middleware=False)  # GET /metrics
    _edge(app, parts)

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
    if parts.accounts is not None:
        from .account_routes import account_routes
        account_routes(app, parts.accounts)
    for route in parts.extra_routes:
        app.router.routes.append(route)
    app.openapi = lambda: _openapi(app, parts)  # type: ignore[method-assign]
    return app


def _edge(app: FastAPI, parts: GatewayParts) -> None:
    """One layer around the routes (services.edge): bodies over 64 KiB get 413,
    paths and query strings not UTF-8 400 (services.limits); the security
    headers on every answer (services.security_headers); request durations
    (metrics_http). With CORS origins configured, Starlette's CORS sits inside
    it and the limits inside that, so preflights are answered first."""
    durations = metrics_http.RequestDurations() if metrics.AVAILABLE else None
    if not parts.cors_origins:
        app.add_middleware(Edge, limits=True, durations=durations)
        return
    app.add_middleware(RequestLimits)
    # Exact origins only; bearer tokens, never cookies, so no credentials.
    app.add_middleware(CORSMiddleware, allow_origins=list(parts.cors_origins),
                       allow_methods=["GET", "POST", "DELETE"],
                       allow_headers=["Authorization", "Content-Type", "X-Idempotency-Key",
                                      "traceparent"],
                       expose_headers=["Retry-After", "Idempotent-Replayed", "Allow"],
                       max_age=600)
    app.add_middleware(Edge, limits=False, durations=durations)


def _openapi(app: FastAPI, parts: GatewayParts) -> dict[str, Any]:
    """FastAPI's document, made exact: no 422 validation answers (the server
    answers 400), the request schemas with every constraint the server
    enforces, and the error envelope for unknown routes and wrong methods."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
    components = document.setdefault("components", {})
    found = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        found.pop(name, None)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            answers = operation.get("responses", {})
            if "HTTPValidationError" in str(answers.get("422", {})):
                del answers["422"]
                answers.setdefault("400", {"description": "Invalid request: a parameter or "
                                                          "the body breaks the contract"})
            if "requestBody" in operation:
                answers.setdefault("400", {"description": "Invalid request: the body breaks "
                                                          "the contract"})
                answers.setdefault("413", {"description": f"The body is larger than "
                                                          f"{MAX_BODY_BYTES} bytes; nothing "
                                                          f"was read or changed"})
            for status, answer in answers.items():
                if status[:1] in ("4", "5") and "content" not in answer:
                    # Every error is an ApiError: the envelope.
                    answer["content"] = {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ErrorResponse"}}}
    symbols = sorted(getattr(parts.orders or parts.query, "_symbols", None) or ())
    found.update(schemas.order_request_schemas(symbols))
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "symbol" and symbols:
                    parameter["schema"]["examples"] = symbols[:3]
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    components["responses"] = {
        "UnknownRoute": {"description": "Any path not in this document: 404 with the error "
                                        "envelope, code not_found", "content": envelope},
        "MethodNotAllowed": {"description": "A method not documented for a path: 405 with the "
                                            "error envelope, code method_not_allowed, and Allow",
                             "headers": {"Allow": {"required": True, "schema": {"type": "string"}}},
                             "content": envelope},
        **_limit_responses(envelope)}
    app.openapi_schema = document
    return document


def _limit_responses(envelope: dict[str, Any]) -> dict[str, Any]:
    """What any request may get before it reaches a route (services.limits)."""
    from . import limits
    return {
        "InvalidEncoding": {"description": "A path or query string that is not UTF-8 once "
                                           "percent-decoded: 400 with the error envelope, code "
                                           "invalid_encoding", "content": envelope},
        "UriTooLong": {"description": f"A request target (path and query) longer than "
                                      f"{limits.MAX_TARGET_BYTES} bytes: 414 with the error "
                                      f"envelope, code uri_too_long", "content": envelope},
        "HeadersTooLarge": {"description": f"Headers larger than {limits.MAX_HEADER_BYTES} "
                                           f"bytes in all, or more than {limits.MAX_HEADERS} "
                                           f"of them: 431 with the error envelope, code "
                                           f"headers_too_large", "content": envelope}}


async def _place(orders: OrderService, request: Request, user_id: str,
                 idempotency_key: str | None, traceparent: str | None) -> JsonResponse:
    """An order in, its answer out, counted by outcome (mocktrade_orders_total)
    and, with tracing on, its trace's server span."""
    started = perf_counter()
    span = _server_span(request, "POST /v1/orders", user_id) if tracing.enabled() else None
    trace_context = tracing.carrier(span) if span is not None else _trace_context(traceparent)
    try:
        answer = await _place_order(orders, request, user_id, idempotency_key, trace_context)
    except ApiError as exc:
        metrics.order_rejected(exc.code)
        _end_server_span(span, exc.status)
        raise
    except DependencyUnavailable as exc:
        metrics.order_rejected("dependency_unavailable")
        _end_server_span(span, 503, exc)
        raise
    except BaseException as exc:
        _end_server_span(span, 500, exc)
        raise
    metrics.order_accepted(perf_counter() - started)
    _end_server_span(span, answer.status_code)
    return answer


def _server_span(request: Request, route: str, user_id: str) -> Any:
    """The request's server span, child of the caller's traceparent if any."""
    return tracing.start(route, tracing.SERVER, tracing.carrier_of_headers(request.headers),
                         {"http.request.method": request.method, "http.route": route,
                          "url.path": request.url.path, "mocktrade.user_id": user_id})


def _end_server_span(span: Any, status: int, error: BaseException | None = None) -> None:
    if span is not None:
        span.set_attribute("http.response.status_code", status)
        tracing.end(span, error if status >= 500 else None)


async def _place_order(orders: OrderService, request: Request, user_id: str,
                       idempotency_key: str | None, trace_context: dict[str, str]) -> JsonResponse:
    body = await parse_body(request, OrderRequest, schemas.check_order_body)
    try:
        accepted = await orders.place(user_id, body, idempotency_key, trace_context)
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


def _order_routes(app: FastAPI, orders: OrderService) -> None:
    @app.post("/v1/orders", status_code=202, tags=["orders"], response_model=schemas.OrderAccepted,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/OrderRequest"}}}}},
              responses={202: {"description": "Accepted and published; it executes (or rests) "
                                              "asynchronously",
                               "headers": {"Idempotent-Replayed": {
                                   "description": "true: answered from an earlier request with "
                                                  "the same X-Idempotency-Key",
                                   "schema": {"type": "string", "enum": ["true"]}}}},
                         **schemas.errors(400, 401, 402, 403, 409, 422, 429, 503,
                                          e400="Malformed order, or unknown symbol",
                                          e403="The user has no account",
                                          e409="X-Idempotency-Key reused with another body, or "
                                               "clientOrderId already used",
                                          e422="Insufficient shares available to sell",
                                          e503="A dependency is down, or no price for the symbol "
                                               "yet; nothing was published")})
    async def place_order(request: Request, user_id: User,
                          x_idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
                          traceparent: Annotated[str | None, Header()] = None):
        return await _place(orders, request, user_id, x_idempotency_key, traceparent)

    async def place_order_thin(request: Request) -> JsonResponse:
        """What serves POST /v1/orders: the route above, without FastAPI's
        per-request dependency solving (the hottest route's largest fixed
        cost). The route above stays for the OpenAPI document; this one is
        matched first. Same checks, same answers."""
        try:
            user_id = authenticate(request.app.state.parts, request.headers.get("authorization"),
                                   request.scope)
        except ApiError as exc:  # 401, 429: orders turned away too
            metrics.order_rejected(exc.code)
            raise
        key = request.headers.get("x-idempotency-key")
        if key is not None and len(key) > 128:
            metrics.order_rejected("invalid_request")
            raise ApiError(400, "invalid_request",
                           "x-idempotency-key: String should have at most 128 characters",
                           "x-idempotency-key")
        return await _place(orders, request, user_id, key, request.headers.get("traceparent"))

    app.router.routes.insert(0, Route("/v1/orders", place_order_thin, methods=["POST"],
                                      include_in_schema=False))

    @app.get("/v1/orders", tags=["orders"], response_model=schemas.OrderPage,
             responses=schemas.errors(*schemas.AUTHENTICATED,
                                      e400="Invalid parameter, or a pageToken not issued here"))
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

    @app.get("/v1/orders/{orderId}", tags=["orders"], response_model=schemas.OrderDetail,
             responses=schemas.errors(400, 401, 404, 429, 503, e404="No such order of yours"))
    async def get_order(user_id: User,
                        order_id: Annotated[str, Path(alias="orderId", min_length=1, max_length=64)]):
        try:
            return JsonResponse(order_detail(await orders.order(user_id, order_id)))
        except OrderNotFound as exc:
            raise ApiError(404, "not_found", str(exc), "orderId") from None

    @app.delete("/v1/orders/{orderId}", status_code=202, tags=["orders"],
                response_model=schemas.Order,
                responses={202: {"description": "Cancel requested: the order as it reads until "
                                               "the cancel is decided (status PENDING_CANCEL); "
                                               "the order stays readable"},
                           **schemas.errors(400, 401, 404, 422, 429, 503,
                                            e404="No such order of yours",
                                            e422="The order is final and cannot be canceled")})
    async def cancel_order(request: Request, user_id: User,
                           order_id: Annotated[str, Path(alias="orderId", min_length=1,
                                                         max_length=64)]):
        span = _server_span(request, "DELETE /v1/orders/{orderId}", user_id) \
            if tracing.enabled() else None
        tracing.set_attribute(span, "mocktrade.order_id", order_id)
        trace_context = tracing.carrier(span) if span is not None \
            else _trace_context(request.headers.get("traceparent"))
        try:
            answer = JsonResponse(await orders.cancel(user_id, order_id, trace_context),
                                  status_code=202)
        except OrderNotFound as exc:
            _end_server_span(span, 404)
            raise ApiError(404, "not_found", str(exc), "orderId") from None
        except OrderNotCancelable as exc:
            _end_server_span(span, 422)
            raise ApiError(422, "order_not_cancelable", str(exc), "status",
                           extra={"status": exc.status}) from None
        except BaseException as exc:
            _end_server_span(span, 503 if isinstance(exc, DependencyUnavailable) else 500, exc)
            raise
        _end_server_span(span, 202)
        return answer

    @app.delete("/v1/orders", status_code=202, tags=["orders"], response_model=schemas.CancelAll,
                responses=schemas.errors(401, 429, 503))
    async def cancel_all_orders(user_id: User):
        return JsonResponse({"orders": await orders.cancel_all(user_id)}, status_code=202)

    @app.post("/v1/account/reset", status_code=202, tags=["account"],
              response_model=schemas.ResetAccepted,
              openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ResetRequest"}}}}},
              responses=schemas.errors(400, 401, 403, 429, 503, e403="The user has no account"))
    async def reset_account(request: Request, user_id: User):
        body = await parse_optional_body(request, ResetRequest, schemas.check_reset_body)
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
    @app.get("/v1/portfolio/{userId}", tags=["portfolio"], response_model=schemas.Portfolio,
             responses=schemas.errors(401, 403, 404, 429, 503, e403="Another user's portfolio",
                                      e404="No portfolio for this user"))
    async def get_portfolio(user_id: User, owner: Annotated[str, Path(alias="userId")]):
        if owner != user_id:
            raise ApiError(403, "forbidden", "a portfolio is visible to its owner only", "userId")
        try:
            return JsonResponse(await portfolio.view(owner))
        except PortfolioNotFound as exc:
            raise ApiError(404, "not_found", str(exc), "userId") from None


def _query_routes(app: FastAPI, query: QueryService) -> None:
    from .bars_routes import add_bars_route
    add_bars_route(app, query, User)

    @app.get("/v1/trades/search", tags=["trades"], response_model=schemas.TradePage,
             responses=schemas.errors(*schemas.AUTHENTICATED,
                                      e400="Invalid parameter, startDate not before endDate, or a "
                                           "pageToken not issued here"))
    async def search_trades(
        user_id: User,
        symbol: Annotated[str | None, Query(max_length=16)] = None,
        status: ExecutionStatus | None = None,
        side: Side | None = None,
        start_date: Annotated[str | None, Query(
            alias="startDate", pattern=schemas.DATE_TIME_PATTERN,
            description="RFC 3339 with an offset, e.g. 2026-01-02T15:04:05Z")] = None,
        end_date: Annotated[str | None, Query(
            alias="endDate", pattern=schemas.DATE_TIME_PATTERN,
            description="RFC 3339 with an offset; after startDate")] = None,
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

    @app.get("/v1/analytics/volume", tags=["analytics"], response_model=schemas.Volume,
             responses=schemas.errors(*schemas.AUTHENTICATED))
    async def volume(user_id: User,
                     time_window: Annotated[Literal["1h", "24h", "7d"], Query(alias="timeWindow")] = "24h",
                     symbol: Annotated[str | None, Query(max_length=16)] = None):
        return JsonResponse(await query.volume(time_window, symbol.upper() if symbol else None))

    @app.get("/v1/prices", tags=["prices"], response_model=schemas.Prices,
             responses=schemas.errors(503))
    async def prices():
        return JsonResponse(await query.prices())

    @app.get("/v1/prices/{symbol}", tags=["prices"], response_model=schemas.Price,
             responses=schemas.errors(404, 503, e404="No price for this symbol"))
    async def price(symbol: str):
        try:
            return JsonResponse(await query.price(symbol.upper()))
        except UnknownSymbolPrice as exc:
            raise ApiError(404, "not_found", str(exc), "symbol") from None


def _replayed(exc: Exception) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if getattr(exc, "replayed", False) else None


def _utc(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name}: not a valid date and time", name) from None
    if moment.tzinfo is None:
        raise ApiError(400, "invalid_request", f"{name} must include a UTC offset, e.g. Z", name)
    return moment
