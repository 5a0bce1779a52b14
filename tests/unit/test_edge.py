"""The gateway's one edge layer (services.edge), in-process against the app
create_app builds: every HTTP answer carries the security headers (the
limits' 400/413, the router's 404/405, pages with their own CSP kept), the
request limits hold whichever way a body arrives, durations are counted
under the same names and labels, and WebSocket scopes pass untouched; with
CORS origins, preflights are answered before the limits and the limits'
answers carry the CORS headers."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from mocktrade.services.auth import TokenIssuer
from mocktrade.services.edge import Edge
from mocktrade.services.gateway import GatewayParts, create_app
from mocktrade.services.limits import MAX_BODY_BYTES
from mocktrade.services.ratelimit import RateLimiter
from mocktrade.services.security_headers import API_CSP

ORIGIN = "https://app.example.com"
SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "x-frame-options": "DENY"}


async def _echo(request):
    body = await request.body()
    return PlainTextResponse(f"{len(body)} bytes", status_code=202)


async def _broken(request):
    raise RuntimeError("a bug in a route")


async def _socket(websocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def _app(cors: tuple[str, ...] = ()):
    parts = GatewayParts(tokens=TokenIssuer("edge-test-secret-of-at-least-32-bytes", 3600),
                         limiter=RateLimiter(1000, 1000), cors_origins=cors,
                         extra_routes=[Route("/echo/{n}", _echo, methods=["POST"]),
                                       Route("/broken", _broken),
                                       WebSocketRoute("/socket", _socket)])
    return create_app(parts)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _secured(answer: httpx.Response, csp: str = API_CSP.decode()) -> None:
    for name, value in SECURITY.items():
        assert answer.headers.get_list(name) == [value], (answer.request.url, name)
    assert answer.headers.get_list("content-security-policy") == [csp], answer.request.url


def _count(method: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value("mocktrade_http_request_duration_seconds_count",
                                     {"method": method, "route": route, "status": status}) or 0.0


def _layers(app) -> list[str]:
    names, layer = [], app.build_middleware_stack()
    while layer is not app.router:
        names.append(type(layer).__name__)
        layer = layer.app
    return names


def test_one_edge_layer_without_cors_and_cors_between_edge_and_limits_with_it():
    assert [n for n in _layers(_app()) if n not in ("ServerErrorMiddleware",
                                                     "ExceptionTelemetryMiddleware",
                                                     "ExceptionMiddleware",
                                                     "AsyncExitStackMiddleware")] == ["Edge"]
    assert [n for n in _layers(_app((ORIGIN,))) if n in ("Edge", "CORSMiddleware",
                                                          "RequestLimits")] == \
        ["Edge", "CORSMiddleware", "RequestLimits"]


async def test_every_answer_carries_the_security_headers_once():
    async with _client(_app()) as client:
        _secured(await client.get("/healthz"))
        _secured(await client.get("/v1/openapi.json"))
        _secured(await client.post("/echo/1", content=b"x" * 100))
        missing = await client.get("/no/such/route")
        assert missing.status_code == 404
        _secured(missing)
        wrong = await client.delete("/healthz")
        assert wrong.status_code == 405
        _secured(wrong)
        big = await client.post("/echo/1", content=b"x" * (MAX_BODY_BYTES + 1))
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        _secured(big)
        bad = await client.get("/healthz?q=%ff")
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "query"
        _secured(bad)
        form = await client.post("/echo/1", content=b"a=%ff",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 400 and form.json()["error"]["field"] == "body"
        _secured(form)
        docs = await client.get("/v1/docs")
        own = docs.headers.get_list("content-security-policy")
        assert len(own) == 1 and "'sha256-" in own[0] and own[0] != API_CSP.decode()
        for name, value in SECURITY.items():
            assert docs.headers.get_list(name) == [value]


async def test_a_streamed_body_is_limited_whether_announced_or_chunked():
    async def parts(size: int, piece: int = 4096):
        for start in range(0, size, piece):
            yield b"[" * min(piece, size - start)

    async with _client(_app()) as client:
        # No Content-Length: chunked, read by the edge within the limit.
        over = await client.post("/echo/1", content=parts(MAX_BODY_BYTES + 1))
        assert over.status_code == 413
        _secured(over)
        under = await client.post("/echo/1", content=parts(MAX_BODY_BYTES))
        assert (under.status_code, under.text) == (202, f"{MAX_BODY_BYTES} bytes")
        # Announced: handed on as it arrives, in several messages.
        announced = await client.post("/echo/1", content=parts(MAX_BODY_BYTES),
                                      headers={"Content-Length": str(MAX_BODY_BYTES)})
        assert (announced.status_code, announced.text) == (202, f"{MAX_BODY_BYTES} bytes")
        _secured(announced)


async def test_durations_are_counted_by_route_template_and_status():
    keys = [("POST", "/echo/{n}", "202"), ("POST", "unmatched", "413"),
            ("GET", "unmatched", "404"), ("GET", "/healthz", "200")]
    before = {key: _count(*key) for key in keys}
    async with _client(_app()) as client:
        await client.post("/echo/1", content=b"{}")
        await client.post("/echo/2", content=b"{}")
        await client.post("/echo/1", content=b"x" * (MAX_BODY_BYTES + 1))
        await client.get("/nothing/here")
        await client.get("/healthz")
    assert {key: _count(*key) - before[key] for key in keys} == {
        ("POST", "/echo/{n}", "202"): 2, ("POST", "unmatched", "413"): 1,
        ("GET", "unmatched", "404"): 1, ("GET", "/healthz", "200"): 1}


async def test_a_route_that_raises_answers_a_secured_json_500_and_the_error_goes_on():
    before = _count("GET", "/broken", "500")
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/broken")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    _secured(answer)
    assert _count("GET", "/broken", "500") - before == 1
    # The exception still reaches the server, which logs it.
    async with _client(_app()) as client:
        with pytest.raises(RuntimeError, match="a bug in a route"):
            await client.get("/broken")


async def test_websocket_scopes_pass_untouched():
    app = _app()
    sent: list[dict] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive():
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message):
        sent.append(message)

    await app({"type": "websocket", "path": "/socket", "raw_path": b"/socket",
               "query_string": b"", "headers": [], "scheme": "ws", "root_path": "",
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
               "subprotocols": [], "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert "headers" not in sent[0] or not sent[0]["headers"]


async def test_with_cors_preflights_come_first_and_limit_answers_carry_cors():
    async with _client(_app((ORIGIN,))) as client:
        preflight = await client.options("/v1/orders", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Content-Length": str(MAX_BODY_BYTES + 1)})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        _secured(preflight)
        big = await client.post("/echo/1", content=b"x" * (MAX_BODY_BYTES + 1),
                                headers={"Origin": ORIGIN})
        assert big.status_code == 413
        assert big.headers["access-control-allow-origin"] == ORIGIN
        _secured(big)


@pytest.mark.parametrize("headers, expected", [
    ([], [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
          (b"x-frame-options", b"DENY"), (b"content-security-policy", API_CSP)]),
    ([(b"Content-Security-Policy", b"default-src 'self'")],
     [(b"Content-Security-Policy", b"default-src 'self'"),
      (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
      (b"x-frame-options", b"DENY")]),
    ([(b"x-frame-options", b"SAMEORIGIN")],
     [(b"x-frame-options", b"SAMEORIGIN"), (b"x-content-type-options", b"nosniff"),
      (b"referrer-policy", b"no-referrer"), (b"content-security-policy", API_CSP)]),
])
async def test_headers_a_response_sets_itself_are_kept(headers, expected):
    answered: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        answered.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    await Edge(app)({"type": "http", "method": "GET", "path": "/", "raw_path": b"/",
                     "query_string": b"", "headers": []}, receive, send)
    assert answered[0]["headers"] == expected
