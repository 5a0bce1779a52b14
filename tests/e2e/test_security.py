"""What a public deployment needs, against a real `mocktrade up`: per-address
throttling of bad tokens and failed sign-ins (HTTP and the socket's join),
X-Forwarded-For believed only from a trusted proxy, key rotation picked up
by the running server, security headers, the console's CSP, and CORS only
for configured origins."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import orjson
import pytest
import websockets

from tests.e2e.conftest import RunningPlatform, wait_for

ALLOWED = "https://app.example.com"
# The buckets' sizes as shipped, refilled slowly enough that a loaded test
# machine cannot refill them between two requests.
BAD_TOKEN_BURST, FAILURE_BURST = 20, 10
SLOW_REFILL = {"MOCKTRADE_BAD_TOKEN_RATE": "0.001", "MOCKTRADE_SIGNIN_FAILURE_RATE": "0.001"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Behind a proxy (this machine) and open to one other origin."""
    env = {"MOCKTRADE_CORS_ORIGINS": ALLOWED, "MOCKTRADE_TRUSTED_PROXIES": "127.0.0.1", **SLOW_REFILL}
    running = RunningPlatform(tmp_path_factory.mktemp("secured") / "data", env=env).start(300)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The defaults: no CORS origin, no trusted proxy."""
    running = RunningPlatform(tmp_path_factory.mktemp("plain") / "data", env=SLOW_REFILL).start(300)
    yield running
    running.stop()


def get(platform: RunningPlatform, path: str, token: str | None = None,
        client: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if client is not None:
        headers["X-Forwarded-For"] = client
    return httpx.get(platform.base + path, headers=headers, timeout=10)


def until_throttled(send, burst: int) -> httpx.Response:
    """`burst` bad requests get 401, the next 429."""
    for _ in range(burst):
        answer = send()
        assert answer.status_code == 401, answer.text
    return send()


def assert_throttled(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.json()["error"]["code"] == "rate_limited"


def test_bad_tokens_from_one_address_get_429_and_good_clients_go_on(secured):
    good = secured.token("alice")
    assert get(secured, "/v1/portfolio/alice", good, "198.51.100.7").status_code == 200
    assert_throttled(until_throttled(
        lambda: get(secured, "/v1/portfolio/alice", "forged", "198.51.100.7"), BAD_TOKEN_BURST))
    post = httpx.post(secured.base + "/v1/orders", timeout=10, json={
        "symbol": "MOCKAAPL", "quantity": "1", "side": "BUY"},
        headers={"Authorization": "Bearer forged", "X-Forwarded-For": "198.51.100.7"})
    assert_throttled(post)  # the thin order route too
    # The good client at that address (its token verified before), and other
    # addresses, are not slowed.
    assert get(secured, "/v1/portfolio/alice", good, "198.51.100.7").status_code == 200
    assert get(secured, "/v1/portfolio/alice", "forged", "198.51.100.8").status_code == 401


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(plain):
    # Each request claims a new address: without the setting they all count
    # against the socket peer, so the limit still bites.
    claimed = iter(range(1_000))
    assert_throttled(until_throttled(
        lambda: get(plain, "/v1/portfolio/alice", "forged", f"203.0.113.{next(claimed) % 250}"),
        BAD_TOKEN_BURST))


def test_failed_sign_ins_from_one_address_get_429(secured):
    def sign_in(password: str, client: str, user: str = "nobody-here") -> httpx.Response:
        return httpx.post(secured.base + "/v1/auth/token", timeout=30,
                          data={"username": user, "password": password},
                          headers={"X-Forwarded-For": client})
    assert_throttled(until_throttled(lambda: sign_in("wrong password", "198.51.100.20"),
                                     FAILURE_BURST))
    # Another address (and user: failures count per user too) is not limited.
    assert sign_in("wrong password", "198.51.100.21", "nobody-else").status_code == 401


def test_socket_joins_with_bad_tokens_get_an_error_reply_then_throttled(secured):
    async def run() -> list[str]:
        reasons = []
        async with websockets.connect(secured.ws_url + "?vsn=2.0.0",
                                      additional_headers={"X-Forwarded-For": "198.51.100.30"}) as ws:
            for n in range(BAD_TOKEN_BURST + 1):
                await ws.send(orjson.dumps([str(n), str(n), "orders:alice", "phx_join",
                                            {"token": "forged"}]).decode())
                async with asyncio.timeout(10):
                    while True:
                        reply = orjson.loads(await ws.recv())
                        if reply[1] == str(n):
                            assert reply[4]["status"] == "error", reply
                            reasons.append(reply[4]["response"]["reason"])
                            break
                if reasons[-1] != "unauthorized":
                    break
        return reasons
    reasons = asyncio.run(run())
    assert reasons[:-1] == ["unauthorized"] * BAD_TOKEN_BURST
    assert reasons[-1].startswith("too many invalid tokens"), reasons[-1]


def test_a_rotation_reaches_the_running_server(secured):
    old = secured.token("bob")
    old_kid = jwt.get_unverified_header(old)["kid"]
    assert get(secured, "/v1/portfolio/bob", old).status_code == 200
    secured.cli("token", "rotate", "--retire-after", "3600")
    new = secured.token("bob")
    assert jwt.get_unverified_header(new)["kid"] != old_kid
    assert get(secured, "/v1/portfolio/bob", new).status_code == 200
    assert get(secured, "/v1/portfolio/bob", old).status_code == 200  # until retired
    secured.cli("token", "retire", old_kid)
    wait_for(lambda: get(secured, "/v1/portfolio/bob", old).status_code == 401, timeout=10)
    answer = get(secured, "/v1/portfolio/bob", old)
    assert "retired" in answer.json()["error"]["message"]
    assert get(secured, "/v1/portfolio/bob", new).status_code == 200
    unknown = jwt.encode({"sub": "bob", "iss": "mocktrade", "exp": int(time.time()) + 60},
                         "x" * 40, algorithm="HS256", headers={"kid": "k-unknown"})
    assert get(secured, "/v1/portfolio/bob", unknown).status_code == 401


def test_every_answer_carries_the_security_headers(plain):
    for path in ("/v1/prices", "/v1/openapi.json", "/no/such/route", "/console/js/main.js"):
        answer = get(plain, path)
        assert answer.headers["X-Content-Type-Options"] == "nosniff", path
        assert answer.headers["Referrer-Policy"] == "no-referrer", path
        assert answer.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
    console = get(plain, "/")
    policy = console.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    for docs in ("/v1/docs", "/v1/redoc"):
        policy = get(plain, docs).headers["Content-Security-Policy"]
        script = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
        assert "'sha256-" in script and "unsafe-inline" not in script, docs


def test_no_cross_origin_access_unless_configured(plain, secured):
    preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    for answer in (httpx.options(plain.base + "/v1/orders", headers=preflight, timeout=10),
                   get(plain, "/v1/prices", Origin=ALLOWED)):
        assert not any(h.lower().startswith("access-control-") for h in answer.headers), answer.headers

    answer = httpx.options(secured.base + "/v1/orders", headers=preflight, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert "authorization" in answer.headers["Access-Control-Allow-Headers"].lower()
    assert get(secured, "/v1/prices", Origin=ALLOWED).headers["Access-Control-Allow-Origin"] == ALLOWED
    refused = httpx.options(secured.base + "/v1/orders", timeout=10,
                            headers={**preflight, "Origin": "https://evil.example.com"})
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Origin" not in get(secured, "/v1/prices",
                                                    Origin="https://evil.example.com").headers
