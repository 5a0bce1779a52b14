"""The gateway's one ASGI layer in front of the routes: request limits, the
security headers and the request-duration metrics, in one pass.

They used to be three middlewares, each wrapping `send` (or `receive`) in a
closure of its own for every request; together with Starlette's error layers
that was a fifth of the HTTP process's CPU under an order load
(docs/benchmarks.md, "Stop 8"). Here one `send` wrapper does both jobs that
need one: it notes the status for the metrics and adds the security headers
(services.security_headers) to the response start. `receive` is wrapped only
when a body must be read here (services.limits). WebSocket and lifespan
scopes pass through untouched.

What a client sees is what the three layers gave: every HTTP answer,
including the limits' own 400/413 and the router's 404/405, carries the
security headers, and is counted under the same metric names and labels.
That includes the 500 of a route that raises: Starlette's outermost error
layer would answer it past this one, bare, so this layer answers it (the
API's JSON error shape, secured) and lets the exception go on to be logged.
With CORS configured (MOCKTRADE_CORS_ORIGINS) Starlette's CORSMiddleware
sits inside this layer and the limits inside it, as before, so preflights
are answered before the limits and the limits' answers carry the CORS
headers.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Awaitable, Callable, MutableMapping

from .http import ApiError
from .limits import RequestLimits
from .metrics_http import RequestDurations
from .security_headers import secured

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Edge:
    """`limits`: apply services.limits here (False when CORS sits between);
    `durations`: record request durations (None with metrics off)."""

    def __init__(self, app: App, limits: bool = True, durations: RequestDurations | None = None):
        self.app = app
        # The limits hand the request on to `app` themselves.
        self._inner: App = RequestLimits(app).admit if limits else app
        self._durations = durations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        durations = self._durations
        answer = _SecuredSend(send)
        started = perf_counter()
        try:
            await self._inner(scope, receive, answer)
        except Exception:
            if not answer.started:
                await _INTERNAL_ERROR(scope, receive, answer)
            raise
        finally:
            if durations is not None:
                durations.observe(scope, answer.status, perf_counter() - started)


_INTERNAL_ERROR = ApiError(500, "internal_error",
                           "the server failed to answer this request; the error is logged").response()


class _SecuredSend:
    """`send` with the security headers on the response start, noting its
    status (500 until then: what the client sees if the app raises before
    answering). One small object per request, in place of a closure per layer."""

    __slots__ = ("_send", "status", "started")

    def __init__(self, send: Send):
        self._send = send
        self.status = 500
        self.started = False

    def __call__(self, message: MutableMapping[str, Any]) -> Awaitable[None]:
        # Not a coroutine itself: the server's `send` is awaited by the caller,
        # one frame fewer per message.
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            message["headers"] = secured(message.get("headers", ()))
        return self._send(message)
