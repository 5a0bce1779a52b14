"""HTTP routes of sign-up and sign-in (the gateway mounts them when this
process serves accounts)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import FastAPI, Form, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..domain.money import AmountError, parse_cash
from ..ports import AccountExists
from .accounts import (MAX_PASSWORD, MIN_PASSWORD, AccountError, AccountService, BadCredentials,
                       SignupClosed, TooManyAttempts)
from . import schemas
from .http import ApiError, JsonResponse, parse_body
from .ratelimit import RateLimiter


def _cash(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError("must be a decimal number or a string holding one")
    try:
        return parse_cash(value, "cash")
    except AmountError as exc:
        raise ValueError(str(exc)) from None


class SignupRequest(BaseModel):
    """Body of POST /v1/accounts."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"username": "carol", "password": "correct horse battery", "cash": "25000.00"}]})

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    cash: Annotated[Decimal, BeforeValidator(_cash),
                    Field(description="Starting cash; default and maximum in GET /v1/auth/options",
                          json_schema_extra={"type": "string"})] | None = None


def account_routes(app: FastAPI, accounts: AccountService) -> None:
    @app.get("/v1/auth/options", tags=["auth"])
    async def auth_options():
        """Whether self-service sign-up is open here, and its cash limits."""
        return JsonResponse(accounts.options())

    signup_schema = SignupRequest.model_json_schema()
    signup_schema["properties"]["cash"] = schemas.starting_cash_schema(
        accounts.policy.max_starting_cash)

    @app.post("/v1/auth/token", tags=["auth"],
              responses=schemas.errors(400, 401, 429, e401="Wrong username or password",
                                       e429="Too many failed attempts for this user or address"))
    async def sign_in(request: Request,
                      username: Annotated[str, Form(min_length=1, max_length=64)],
                      password: Annotated[str, Form(min_length=1, max_length=MAX_PASSWORD)],
                      grant_type: Annotated[str, Form(pattern="^password$")] = "password"):
        """OAuth2 password grant (the form FastAPI's OAuth2PasswordRequestForm
        reads): the bearer token for a username and password."""
        address = request.app.state.parts.client_address.of(request.scope)
        try:
            return JsonResponse(await accounts.sign_in(username, password, address))
        except TooManyAttempts as exc:
            raise ApiError(429, "rate_limited", str(exc),
                           headers={"Retry-After": RateLimiter.retry_after(exc.wait)}) from None
        except BadCredentials as exc:
            raise ApiError(401, "bad_credentials", str(exc), "password",
                           headers={"WWW-Authenticate": "Bearer"}) from None

    @app.post("/v1/accounts", status_code=201, tags=["auth"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": signup_schema}}}},
              responses=schemas.errors(400, 403, 409, e403="Sign-up is off on this deployment",
                                       e409="The username is taken"))
    async def sign_up(request: Request):
        """Self-service sign-up: an account with a password and starting cash."""
        body = await parse_body(request, SignupRequest, schemas.check_reset_body)
        try:
            created = await accounts.sign_up(body.username, body.password, body.cash)
        except SignupClosed as exc:
            raise ApiError(403, "signup_closed", str(exc)) from None
        except AccountError as exc:
            raise ApiError(400, "invalid_request", str(exc), exc.field) from None
        except AccountExists as exc:
            raise ApiError(409, "account_exists", str(exc), "username") from None
        return JsonResponse(created, status_code=201)
