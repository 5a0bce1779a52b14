"""Hostile input never gets a 500 or changes anything (README, "Limits").

Against one running embedded platform: hypothesis throws generated hostile
bodies, headers, query strings and paths at every route of the OpenAPI
document (and the undocumented ones), over raw sockets so that nothing is
normalised on the way, and generated frames at the WebSocket; then targeted
cases for each limit. Every answer must be a 4xx with the error envelope (or
a Phoenix error reply), and afterwards alice's portfolio and orders are as
they were and the platform still serves.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings, strategies as st

from mocktrade.services import limits

from .conftest import RunningPlatform

pytestmark = pytest.mark.e2e

EXAMPLES = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    # A rate limit hypothesis does not reach, so requests get to the handlers.
    running = RunningPlatform(tmp_path_factory.mktemp("hostile") / "data",
                              env={"MOCKTRADE_RATE_LIMIT_PER_SECOND": "100000",
                                   "MOCKTRADE_RATE_LIMIT_BURST": "100000"}).start()
    running.alice = running.token("alice")
    document = httpx.get(f"{running.base}/v1/openapi.json").json()
    running.routes = sorted({(method.upper(), path) for path, operations in document["paths"].items()
                             for method in operations})
    running.routes += [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/v1/docs"),
                       ("GET", "/v1/openapi.json")]
    yield running
    running.stop()


def state(platform: RunningPlatform) -> tuple:
    """What hostile input must not change: alice's portfolio and orders."""
    with httpx.Client(base_url=platform.base, timeout=10,
                      headers={"Authorization": f"Bearer {platform.alice}"}) as client:
        portfolio = client.get("/v1/portfolio/alice").json()
        orders = client.get("/v1/orders", params={"limit": 200}).json()
    # Prices move; what alice owns and has asked for must not.
    return (portfolio["cashBalance"], portfolio["reservedCash"], portfolio["holdings"],
            portfolio["version"], orders)


@pytest.fixture
def unchanged(hostile):
    before = state(hostile)
    yield
    assert httpx.get(f"{hostile.base}/healthz", timeout=5).status_code == 200
    assert state(hostile) == before


# -- raw HTTP ---------------------------------------------------------------------------

def raw_request(platform: RunningPlatform, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                body: bytes | None = None) -> tuple[int, bytes]:
    """One request over its own connection, bytes exactly as given; (status, body)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    request = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", platform.port), timeout=15) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # refused mid-request: the answer is already waiting
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer, f"no answer to {method} {target[:80]!r}"
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content


def assert_refused(status: int, content: bytes, allowed=range(400, 500)) -> dict:
    assert status in allowed, (status, content[:300])
    error = json.loads(content)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    return error


def bearer(platform: RunningPlatform) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Bearer " + platform.alice.encode())]


def fill(path: str, value: str = "alice") -> str:
    for name in ("{orderId}", "{userId}", "{symbol}"):
        path = path.replace(name, value)
    return path


# -- generated hostile requests --------------------------------------------------------------

BODY_ROUTES = [("POST", "/v1/orders"), ("POST", "/v1/account/reset"), ("POST", "/v1/accounts"),
               ("POST", "/v1/auth/token")]
FIELDS = ["quantity", "limitPrice", "stopPrice", "cash", "symbol", "clientOrderId", "side", "type",
          "username", "password"]
HUGE_NUMBERS = [b"1e400", b"-1e400", b"1e999999999999999999999", b"1e-999999999999999999999",
                b"9" * 5000, b"-" + b"9" * 5000, b"1" + b"0" * 400 + b".5", b"NaN", b"Infinity",
                b"-Infinity", b"1E+1000000"]


GOOD_BODIES = [{}, {"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"},
               {"username": "mallory", "password": "long enough password"}]


def _with_number(base: dict, field: str, number: bytes) -> bytes:
    """`base` with `field` (and no other value for it) a number that fits nothing."""
    pairs = [orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in base.items() if k != field]
    return b"{" + b",".join([*pairs, orjson.dumps(field) + b":" + number]) + b"}"


def _deep(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = b"[" if opener == b"[" else b'{"a":'
    return inner * depth + b"1" + closer * depth


def _is_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except Exception:
        return False


hostile_bodies = st.one_of(
    # not JSON, or not UTF-8, or JSON but not an object
    st.binary(min_size=1, max_size=300).filter(lambda b: not _is_object(b)),
    st.binary(min_size=1, max_size=50).map(lambda b: b'{"symbol":"\xff' + b + b'"}'),
    # nested past the limit
    st.builds(_deep, st.integers(limits.MAX_JSON_DEPTH + 1, 20000), st.sampled_from([b"[", b"{"])),
    # numbers that fit no field, alone or in an otherwise good body
    st.builds(lambda field, number, base: _with_number(base, field, number),
              st.sampled_from(FIELDS), st.sampled_from(HUGE_NUMBERS), st.sampled_from(GOOD_BODIES)),
    # over the size limit
    st.integers(limits.MAX_BODY_BYTES + 1, 4 * limits.MAX_BODY_BYTES).map(
        lambda n: b'{"symbol":"' + b"A" * n + b'"}'),
)

header_names = st.from_regex(rb"\AX-[A-Za-z0-9-]{1,30}\Z")
header_values = st.binary(max_size=200).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\0").strip() or b"x")
hostile_headers = st.one_of(
    # too many
    st.integers(limits.MAX_HEADERS + 1, 400).map(lambda n: [(b"X-H%d" % i, b"v") for i in range(n)]),
    # too large in all
    st.integers(limits.MAX_HEADER_BYTES + 1, 200_000).map(lambda n: [(b"X-Big", b"a" * n)]),
    st.lists(st.tuples(header_names, header_values), min_size=1, max_size=10).map(
        lambda h: h + [(b"X-Big", b"b" * (limits.MAX_HEADER_BYTES + 1))]),
)
# a percent-encoded query that is not UTF-8, or a target that is too long
invalid_utf8 = st.binary(min_size=1, max_size=20).filter(
    lambda b: not _decodes(b)).map(lambda b: "".join(f"%{c:02X}" for c in b).encode())
hostile_queries = st.one_of(
    st.tuples(st.from_regex(rb"\A[a-zA-Z]{1,12}\Z"), invalid_utf8).map(lambda t: t[0] + b"=" + t[1]),
    st.integers(limits.MAX_TARGET_BYTES + 1, 100_000).map(lambda n: b"symbol=" + b"A" * n),
)


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@EXAMPLES
@given(route=st.sampled_from(BODY_ROUTES), body=hostile_bodies,
       content_type=st.sampled_from([b"application/json", b"application/x-www-form-urlencoded",
                                     b"text/plain", b"application/json; charset=latin-1"]))
def test_hostile_bodies_get_a_4xx(hostile, unchanged, route, body, content_type):
    method, path = route
    if path == "/v1/auth/token":
        # the form route reads forms; a form field for every JSON one
        body = body if content_type != b"application/x-www-form-urlencoded" else b"username=" + body
    status, content = raw_request(hostile, method, path.encode(),
                                  bearer(hostile) + [(b"Content-Type", content_type)], body)
    assert_refused(status, content)


@EXAMPLES
@given(data=st.data(), headers=hostile_headers)
def test_hostile_headers_get_431_on_every_route(hostile, unchanged, data, headers):
    method, path = data.draw(st.sampled_from(hostile.routes))
    status, content = raw_request(hostile, method, fill(path).encode(), bearer(hostile) + headers)
    # 400 invalid_http: a header httptools cannot parse (control characters) comes first
    assert assert_refused(status, content, allowed=[400, 431])["code"] in (
        "headers_too_large", "invalid_http")


@EXAMPLES
@given(data=st.data(), query=hostile_queries)
def test_hostile_query_strings_get_400_or_414_on_every_route(hostile, unchanged, data, query):
    method, path = data.draw(st.sampled_from(hostile.routes))
    status, content = raw_request(hostile, method, fill(path).encode() + b"?" + query, bearer(hostile))
    assert_refused(status, content, allowed=[400, 414])


@EXAMPLES
@given(data=st.data(), segment=st.one_of(invalid_utf8, st.binary(min_size=1, max_size=100).map(
    lambda b: "".join(f"%{c:02X}" for c in b).encode())))
def test_hostile_path_segments_never_get_a_5xx(hostile, unchanged, data, segment):
    method, path = data.draw(st.sampled_from([r for r in hostile.routes if "{" in r[1]]))
    target = fill(path, "\0").encode().replace(b"\0", segment)
    status, content = raw_request(hostile, method, target, bearer(hostile))
    if _decodes(segment):
        assert status < 500, (status, content[:300])  # a well-formed id or symbol may be found
    else:
        assert assert_refused(status, content, allowed=[400])["code"] == "invalid_encoding"


# -- targeted HTTP cases ------------------------------------------------------------------------

def test_a_body_nested_100000_arrays_deep_gets_413_and_one_under_the_size_limit_400(hostile, unchanged):
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile), _deep(100_000, b"["))
    assert assert_refused(status, content, [413])["code"] == "body_too_large"
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile), _deep(10_000, b"["))
    error = assert_refused(status, content, [400])
    assert error["code"] == "invalid_json" and error["field"] == "body" and "32" in error["message"]
    # at the limit it is only the wrong shape
    nested = b'{"symbol":' + _deep(limits.MAX_JSON_DEPTH - 1, b"[") + b"}"
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile), nested)
    assert assert_refused(status, content, [400])["field"] == "symbol"


@pytest.mark.parametrize("number", [b"1e400", b"9" * 5000, b"1e999999999999999999999", b"-1e400"])
@pytest.mark.parametrize("field", ["quantity", "limitPrice"])
def test_numbers_that_do_not_fit_get_400_naming_the_field(hostile, unchanged, field, number):
    body = {"symbol": "MOCKAAPL", "quantity": "1", "side": "BUY", "type": "LIMIT", "limitPrice": "1"}
    raw = orjson.dumps(body).replace(b'"' + field.encode() + b'":"1"', b'"' + field.encode() + b'":' + number)
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile), raw)
    assert assert_refused(status, content, [400])["field"] == field
    status, content = raw_request(hostile, "POST", b"/v1/account/reset", bearer(hostile),
                                  b'{"cash":' + number + b"}")
    assert assert_refused(status, content, [400])["field"] == "cash"


def test_a_20_mb_body_gets_413_unread(hostile, unchanged):
    with httpx.Client(base_url=hostile.base, timeout=30,
                      headers={"Authorization": f"Bearer {hostile.alice}"}) as client:
        answer = client.post("/v1/orders", content=b'{"symbol":"' + b"A" * 20_000_000 + b'"}',
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"] == {"code": "body_too_large", "field": "body",
                                      "message": "the body is larger than 65536 bytes"}


def test_a_chunked_body_over_the_limit_gets_413(hostile, unchanged):
    chunk = b"[" * 0x8000
    body = (b"8000\r\n" + chunk + b"\r\n") * 3 + b"0\r\n\r\n"
    request = bearer(hostile) + [(b"Transfer-Encoding", b"chunked")]
    lines = b"\r\n".join([b"POST /v1/orders HTTP/1.1", b"Host: x", b"Connection: close",
                          *[n + b": " + v for n, v in request]])
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=15) as sock:
        sock.sendall(lines + b"\r\n\r\n" + body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_body_just_under_the_limit_is_read(hostile, unchanged):
    body = b'{"symbol":"MOCKAAPL","quantity":"1","side":"BUY","clientOrderId":"x' + b" " * 100 + b'"}'
    body += b" " * (limits.MAX_BODY_BYTES - len(body))
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile), body)
    assert assert_refused(status, content, [400])["field"] == "clientOrderId"


def test_oversized_target_and_headers_get_414_and_431(hostile, unchanged):
    status, content = raw_request(hostile, "GET", b"/v1/trades/search?symbol=" + b"A" * 9000,
                                  bearer(hostile))
    assert assert_refused(status, content, [414])["code"] == "uri_too_long"
    status, content = raw_request(hostile, "GET", b"/v1/orders",
                                  bearer(hostile) + [(b"X-Big", b"a" * 20_000)])
    assert assert_refused(status, content, [431])["code"] == "headers_too_large"
    status, content = raw_request(hostile, "GET", b"/v1/orders",
                                  bearer(hostile) + [(b"X-H%d" % i, b"v") for i in range(150)])
    assert assert_refused(status, content, [431])["code"] == "headers_too_large"
    # just under both: served
    status, _ = raw_request(hostile, "GET", b"/v1/orders?symbol=" + b"A" * 16,
                            bearer(hostile) + [(b"X-Pad", b"a" * 8000)])
    assert status == 200


def test_invalid_utf8_in_query_path_body_and_form_gets_400(hostile, unchanged):
    status, content = raw_request(hostile, "GET", b"/v1/trades/search?symbol=%FF%FE", bearer(hostile))
    assert assert_refused(status, content, [400]) == {
        "code": "invalid_encoding", "field": "query",
        "message": "the query is not UTF-8 once percent-decoded"}
    status, content = raw_request(hostile, "GET", b"/v1/orders/%C3%28", bearer(hostile))
    assert assert_refused(status, content, [400])["field"] == "path"
    status, content = raw_request(hostile, "POST", b"/v1/orders", bearer(hostile),
                                  b'{"symbol":"MOCK\xff","quantity":"1","side":"BUY"}')
    assert assert_refused(status, content, [400])["code"] == "invalid_json"
    status, content = raw_request(hostile, "POST", b"/v1/auth/token",
                                  [(b"Content-Type", b"application/x-www-form-urlencoded")],
                                  b"username=alice&password=%ED%A0%80")
    assert assert_refused(status, content, [400])["code"] == "invalid_encoding"
    # a lone surrogate escaped in JSON is valid JSON but no field's text
    status, content = raw_request(hostile, "POST", b"/v1/accounts", [],
                                  b'{"username":"mallory","password":"\\ud800 long enough"}')
    assert assert_refused(status, content, [400])["field"] == "password"


def test_unparseable_http_gets_400_with_the_envelope(hostile, unchanged):
    status, content = raw_request(hostile, "GET", b"/v1/orders?x=\xff\xfe", bearer(hostile))
    assert assert_refused(status, content, [400])["code"] == "invalid_http"


def test_the_limits_are_in_the_openapi_document(hostile):
    document = httpx.get(f"{hostile.base}/v1/openapi.json").json()
    for path, method in (("/v1/orders", "post"), ("/v1/account/reset", "post"), ("/v1/accounts", "post")):
        answer = document["paths"][path][method]["responses"]["413"]
        assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    responses = document["components"]["responses"]
    assert {"UriTooLong", "HeadersTooLarge", "InvalidEncoding"} <= set(responses)


# -- the WebSocket --------------------------------------------------------------------------

def _v1(topic: str, event: str, ref: str, payload=None) -> str:
    return orjson.dumps({"topic": topic, "event": event, "payload": payload or {}, "ref": ref,
                         "join_ref": ref}).decode()


async def _reply_to(ws, ref: str, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = orjson.loads(await ws.recv())
            if isinstance(message, dict) and message.get("ref") == ref and message["event"] == "phx_reply":
                return message["payload"]


async def _still_serves(ws) -> None:
    await ws.send(_v1("phoenix", "heartbeat", "alive"))
    assert (await _reply_to(ws, "alive"))["status"] == "ok"


garbage_frames = st.one_of(
    st.binary(max_size=300), st.text(max_size=300),
    st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(1, 20_000)),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=8).map(
        lambda items: json.dumps(items)).filter(lambda t: len(json.loads(t)) != 5),
    st.sampled_from(['{"topic":1,"event":"phx_join"}', '{"topic":"","event":""}',
                     '[null,null,"prices:MOCKAAPL",7,{}]', '{"ref":1.5,"topic":"a","event":"b"}',
                     '[' + "9" * 100 + ',null,"a","b",{}]']),
)
phoenix_events = st.text(min_size=1, max_size=40).filter(
    lambda e: e not in ("phx_join", "phx_leave", "heartbeat"))
phoenix_topics = st.one_of(st.text(min_size=1, max_size=40),
                           st.text(max_size=20).map(lambda t: "prices:" + t),
                           st.text(max_size=20).map(lambda t: "orders:" + t))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(garbage=st.lists(garbage_frames, min_size=1, max_size=10),
       unknown=st.lists(st.tuples(phoenix_topics, phoenix_events), min_size=1, max_size=10),
       joins=st.lists(phoenix_topics, min_size=1, max_size=10),
       v2=st.booleans())
def test_hostile_frames_get_error_replies_or_are_ignored(hostile, unchanged, garbage, unknown, joins, v2):
    def message(topic: str, event: str, ref: str, payload=None) -> str:
        if v2:
            return orjson.dumps([ref, ref, topic, event, payload or {}]).decode()
        return _v1(topic, event, ref, payload)

    async def run() -> None:
        async with websockets.connect(hostile.ws_url + ("?vsn=2.0.0" if v2 else ""),
                                      max_queue=None, max_size=None) as ws:
            for frame in garbage:
                await ws.send(frame)
            await _still_serves(ws)
            for n, (topic, event) in enumerate(unknown):
                await ws.send(message(topic, event, f"u{n}"))
            for n, topic in enumerate(joins):
                if topic.startswith("prices:MOCK"):
                    continue
                await ws.send(message(topic, "phx_join", f"j{n}", {"token": "not a token"}))
            async with asyncio.timeout(10):
                expected = {f"u{n}" for n in range(len(unknown))} | {
                    f"j{n}" for n, t in enumerate(joins) if not t.startswith("prices:MOCK")}
                while expected:
                    reply = orjson.loads(await ws.recv())
                    ref = reply[1] if isinstance(reply, list) else reply["ref"]
                    payload = reply[4] if isinstance(reply, list) else reply["payload"]
                    if ref in expected:
                        assert payload["status"] == "error", reply
                        expected.discard(ref)
            await _still_serves(ws)

    asyncio.run(run())


def test_an_oversized_frame_closes_with_1009(hostile, unchanged):
    async def run() -> int:
        async with websockets.connect(hostile.ws_url, max_size=None) as ws:
            await _still_serves(ws)
            await ws.send("x" * (limits.WS_MAX_MESSAGE_BYTES + 1))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            return closed.value.rcvd.code

    assert asyncio.run(run()) == 1009


def test_joins_by_the_thousand_are_answered_and_the_socket_lives_on(hostile, unchanged):
    async def run() -> list[dict]:
        async with websockets.connect(hostile.ws_url, max_queue=None) as ws:
            for n in range(1000):
                await ws.send(_v1(f"prices:MOCKNOPE{n}" if n % 2 else "prices:MOCKAAPL", "phx_join", str(n)))
            replies = [await _reply_to(ws, str(n)) for n in range(1000)]
            await asyncio.sleep(0.5)
            await _still_serves(ws)
            return replies

    replies = asyncio.run(run())
    assert all(r["status"] == "ok" for r in replies[::2])
    assert all(r == {"status": "error", "response": {"reason": "unknown symbol"}} for r in replies[1::2])


def test_a_flood_of_messages_is_rate_limited_then_served_again(hostile, unchanged):
    async def run() -> list[str]:
        async with websockets.connect(hostile.ws_url, max_queue=None) as ws:
            count = limits.WS_MESSAGE_BURST + 500
            for n in range(count):
                await ws.send(_v1("phoenix", "heartbeat", str(n)))
            statuses = [(await _reply_to(ws, str(n)))["status"] for n in range(count)]
            await asyncio.sleep(0.5)
            await _still_serves(ws)
            return statuses

    statuses = asyncio.run(run())
    assert statuses[0] == "ok" and "error" in statuses
