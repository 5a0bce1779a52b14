"""GET /metrics (Prometheus text) and the HTTP request durations.

Every process serves its own registry. The embedded platform's HTTP process
also names its job process as a peer: a scrape fetches the peer's /metrics
over the loopback, and the answer is both registries merged family by family
with a `process` label on every sample (`platform`, `jobs`), so one target
covers every job. A peer that does not answer leaves its series out for that
scrape and sets `mocktrade_metrics_source_up{process=...}` to 0.

Why not prometheus_client's multiprocess mode: it needs its environment
variable before the first import in every process, a directory wiped at start
and per-pid files retired whenever the supervised child restarts, an
aggregation mode chosen per gauge, and it drops the process and GC
collectors. Fetching the peer's text costs one loopback request per scrape and
nothing on any hot path; a restarted child simply starts its counters at 0,
which Prometheus' rate() treats as the counter reset it is.

/metrics needs no token (operators scrape it; the platform binds 127.0.0.1
unless told otherwise) and is left out of the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Awaitable, Callable, Iterable, Mapping, MutableMapping

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from .. import metrics

log = logging.getLogger("mocktrade.metrics")

METRICS_PATH = "/metrics"
LOCAL_PROCESS = "platform"
PEER_TIMEOUT = 2.0
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestDurations:
    """Observes each HTTP request's duration once it has been answered, labelled
    by method, the route's template (`/v1/orders/{orderId}`, never the raw
    path; `unmatched` when no route took it) and status. One histogram child
    per (method, route, status), made on first use and kept. Shared by the
    gateway's edge layer (services.edge) and HttpMetricsMiddleware."""

    __slots__ = ("_children",)

    def __init__(self) -> None:
        # Keyed by the id of what served the request (routes define __eq__, so
        # are unhashable); ids are stable, the routes live as long as the app.
        self._children: dict[tuple[str, int, int], Any] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        # FastAPI's router names the route for its own routes only; for a
        # plain Starlette Route or Mount there is the endpoint it ran.
        served = scope.get("route") or scope.get("endpoint")
        child = self._children.get((method, id(served), status))
        if child is None:
            child = self._child(scope, method, served, status)
        child.observe(seconds)

    def _child(self, scope: Scope, method: str, served: Any, status: int) -> Any:
        label_method = method if method in _METHODS else "OTHER"
        child = metrics.HTTP_SECONDS.labels(label_method, route_label(scope), str(status))
        if method in _METHODS:  # an unknown method is not worth a cache entry of its own
            self._children[(method, id(served), status)] = child
        return child


class HttpMetricsMiddleware:
    """ASGI middleware recording RequestDurations, for an app without the
    gateway's edge layer (which records them itself)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app
        self._durations = RequestDurations()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._durations.observe(scope, status, perf_counter() - started)


def route_label(scope: Scope) -> str:
    """The template of the route that served a request (a Mount's prefix for
    the files under it); `unmatched` when none did. Called once per route."""
    route = scope.get("route")
    if route is None:
        endpoint = scope.get("endpoint")
        router = scope.get("router") or getattr(scope.get("app"), "router", None)
        if endpoint is None or router is None:
            return UNMATCHED
        found = [r for r in router.routes
                 if getattr(r, "endpoint", None) is endpoint or getattr(r, "app", None) is endpoint]
        if len(found) > 1:
            found = [r for r in found if r.matches(scope)[0] is not Match.NONE] or found
        if not found:
            return UNMATCHED
        route = found[0]
    return getattr(route, "path", None) or UNMATCHED


def install(app: Any, peers: Mapping[str, str] | None = None, middleware: bool = True) -> None:
    """The middleware and GET /metrics on `app`; `peers`: process label -> the
    /metrics URL of another process whose series this one serves too.
    `middleware=False`: the route only (the gateway's edge layer records the
    request durations itself)."""
    if middleware and metrics.AVAILABLE:  # with metrics off, requests pay nothing for them
        app.add_middleware(HttpMetricsMiddleware)
    app.router.routes.append(metrics_route(dict(peers or {})))


def metrics_route(peers: Mapping[str, str]) -> Route:
    async def serve(_: Request) -> Response:
        if not metrics.AVAILABLE:
            reason = "metrics are off (MOCKTRADE_METRICS=off)" if metrics.SWITCHED_OFF \
                else "prometheus_client is not installed"
            return Response(reason + "\n", status_code=503,
                            media_type="text/plain")
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        if not peers:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
        texts = await fetch_peers(peers)
        return Response(merged_exposition(REGISTRY, texts), media_type=CONTENT_TYPE_LATEST)

    return Route(METRICS_PATH, serve, methods=["GET"], name="metrics", include_in_schema=False)


async def fetch_peers(peers: Mapping[str, str]) -> dict[str, str | None]:
    """Each peer's exposition text, or None where it did not answer in time."""
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT) as client:
        async def one(url: str) -> str | None:
            try:
                answer = await client.get(url)
                answer.raise_for_status()
                return answer.text
            except httpx.HTTPError as exc:
                log.info("metrics peer not answering", extra={"url": url, "reason": repr(exc)})
                return None
        texts = await asyncio.gather(*(one(url) for url in peers.values()))
    return dict(zip(peers, texts))


def merged_exposition(registry: Any, peer_texts: Mapping[str, str | None],
                      local: str = LOCAL_PROCESS) -> bytes:
    """This process's families and the peers', one family per name (the text
    format allows a family's HELP and TYPE once), each sample labelled with
    the process it came from."""
    from prometheus_client import generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}

    def add(found: Iterable[Metric], process: str) -> None:
        for family in found:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            elif merged.type != family.type:
                continue  # never two types under one name
            merged.samples.extend(sample._replace(labels={**sample.labels, "process": process})
                                  for sample in family.samples)

    add(registry.collect(), local)
    up = Metric("mocktrade_metrics_source_up",
                "1 when the process's series are in this answer, 0 when it did not answer",
                "gauge")
    up.add_sample("mocktrade_metrics_source_up", {"process": local}, 1.0)
    for process, text in peer_texts.items():
        ok = text is not None
        if ok:
            try:
                add(list(text_string_to_metric_families(text)), process)
            except ValueError as exc:
                log.warning("metrics peer sent unparsable text",
                            extra={"process": process, "reason": str(exc)})
                ok = False
        up.add_sample("mocktrade_metrics_source_up", {"process": process}, 1.0 if ok else 0.0)
    families[up.name] = up
    return generate_latest(_Families(list(families.values())))


class _Families:
    """What generate_latest needs of a registry: collect()."""

    def __init__(self, families: list):
        self._families = families

    def collect(self) -> list:
        return self._families
