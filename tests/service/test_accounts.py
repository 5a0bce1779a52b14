"""Sign-up and sign-in over the embedded portfolio store, through the gateway."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from mocktrade.services.accounts import AccountService, SignupPolicy
from mocktrade.services.gateway import GatewayParts, create_app
from mocktrade.services.portfolio import PortfolioService
from mocktrade.services.ratelimit import RateLimiter


def _api(backends, tokens, signup: bool) -> httpx.AsyncClient:
    # Failures refill once an hour here, so the slow hashing cannot refill a bucket mid-test.
    accounts = AccountService(backends.portfolios, tokens,
                              SignupPolicy(signup, Decimal("50000.00"), Decimal("10000.00")),
                              failures_per_second=1 / 3600)
    parts = GatewayParts(tokens=tokens, limiter=RateLimiter(1000, 1000), accounts=accounts,
                         portfolio=PortfolioService(backends.portfolios, backends.prices))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(parts)),
                             base_url="http://test")


async def test_sign_up_then_sign_in_gives_the_bearer_token_the_api_takes(backends, tokens):
    async with _api(backends, tokens, signup=True) as api:
        assert (await api.get("/v1/auth/options")).json() == {
            "signup": True, "maxStartingCash": "50000.00", "defaultStartingCash": "10000.00"}
        created = await api.post("/v1/accounts", json={"username": "carol",
                                                        "password": "long enough pw"})
        assert created.status_code == 201
        assert created.json() == {"userId": "carol", "cashBalance": "10000.00"}
        answer = await api.post("/v1/auth/token", data={"username": "carol",
                                                         "password": "long enough pw"})
        assert answer.status_code == 200 and answer.json()["token_type"] == "bearer"
        token = answer.json()["access_token"]
        assert tokens.user_of(f"Bearer {token}") == "carol"
        portfolio = await api.get("/v1/portfolio/carol", headers={"Authorization": f"Bearer {token}"})
        assert portfolio.json()["cashBalance"] == "10000.00"
        stored = await backends.portfolios.password_hash("carol")
        assert stored.startswith("$argon2id$") and "long enough pw" not in stored


@pytest.mark.parametrize("body, field", [
    ({"username": "bad name", "password": "long enough pw"}, "username"),
    ({"username": "mocktrade-internal", "password": "long enough pw"}, "username"),
    ({"username": "carol", "password": "short"}, "password"),
    ({"username": "carol", "password": "long enough pw", "cash": "50000.01"}, "cash"),
    ({"username": "carol", "password": "long enough pw", "cash": "1.001"}, "cash"),
])
async def test_bad_sign_up_names_the_field_and_creates_nothing(backends, tokens, body, field):
    async with _api(backends, tokens, signup=True) as api:
        answer = await api.post("/v1/accounts", json=body)
        assert answer.status_code == 400 and answer.json()["error"]["field"] == field
    assert await backends.portfolios.get("carol") is None


async def test_sign_up_when_closed_and_for_a_taken_name(backends, tokens):
    async with _api(backends, tokens, signup=False) as api:
        closed = await api.post("/v1/accounts", json={"username": "carol", "password": "long enough pw"})
        assert closed.status_code == 403 and closed.json()["error"]["code"] == "signup_closed"
    async with _api(backends, tokens, signup=True) as api:
        taken = await api.post("/v1/accounts", json={"username": "alice", "password": "long enough pw"})
        assert taken.status_code == 409


async def test_failed_sign_ins_are_limited_per_user(backends, tokens):
    async with _api(backends, tokens, signup=True) as api:
        await api.post("/v1/accounts", json={"username": "carol", "password": "long enough pw"})
        codes = [(await api.post("/v1/auth/token", data={"username": "carol", "password": f"x{i}xxxxxxx"}
                                 )).status_code for i in range(11)]
        assert codes == [401] * 10 + [429]
        # Even the right password waits once the user is limited.
        right = await api.post("/v1/auth/token", data={"username": "carol", "password": "long enough pw"})
        assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
        # An account without a password cannot be signed into.
        assert (await api.post("/v1/auth/token", data={"username": "alice", "password": "anything1"}
                               )).status_code == 429  # the address is limited too now
