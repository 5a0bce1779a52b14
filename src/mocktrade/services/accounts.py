"""Accounts and sign-in: passwords (Argon2id), self-service sign-up, and the
password grant that hands out the same bearer JWT the CLI issues.

Hashing and verifying are deliberately slow (tens of milliseconds of CPU and
64 MiB of memory each, argon2-cffi's defaults, RFC 9106's second
recommendation), so they run on a worker thread, never on the event loop.
Failed sign-ins are limited per user and per client address (a token bucket
each, refilled slowly), so guessing a password costs hours, not seconds; a
limited attempt is refused before the password is even checked.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from decimal import Decimal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..domain.model import utc_now
from ..domain.money import fmt
from ..ports import AccountExists, PortfolioStore
from .auth import TokenIssuer
from .ratelimit import RateLimiter

RESERVED_PREFIX = "mocktrade-"
USER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 128

# Failed attempts: a burst of 10, then one every 6 seconds, per key.
FAILURES_PER_SECOND, FAILURE_BURST = 1 / 6, 10

_hasher = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4


class AccountError(ValueError):
    """Bad input for an account operation; `field` names the culprit."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class SignupClosed(Exception):
    pass


class BadCredentials(Exception):
    pass


class TooManyAttempts(Exception):
    def __init__(self, wait: float):
        super().__init__("too many failed sign-in attempts; try again later")
        self.wait = wait


def check_user_id(user_id: str, field: str = "username") -> str:
    if not isinstance(user_id, str) or not USER_PATTERN.match(user_id):
        raise AccountError("a user id is 1-64 letters, digits or - _ . @", field)
    return user_id


def check_password(password: str, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"a password is {MIN_PASSWORD}-{MAX_PASSWORD} characters", field)
    return password


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, check_password(password))


async def password_matches(stored: str | None, password: str) -> bool:
    if stored is None:
        # Same work as a real check, so a missing account or password is not
        # told apart from a wrong password by the time it takes.
        await asyncio.to_thread(_hasher.hash, password)
        return False
    try:
        return await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class SignupPolicy:
    enabled: bool
    max_starting_cash: Decimal
    default_starting_cash: Decimal


class AccountService:
    def __init__(self, portfolios: PortfolioStore, tokens: TokenIssuer, policy: SignupPolicy,
                 failures_per_second: float = FAILURES_PER_SECOND, failure_burst: int = FAILURE_BURST):
        self._portfolios, self._tokens, self.policy = portfolios, tokens, policy
        self._by_user = RateLimiter(failures_per_second, failure_burst)
        self._by_address = RateLimiter(failures_per_second, failure_burst)

    def options(self) -> dict[str, object]:
        return {"signup": self.policy.enabled,
                "maxStartingCash": fmt(self.policy.max_starting_cash),
                "defaultStartingCash": fmt(self.policy.default_starting_cash)}

    async def sign_up(self, user_id: str, password: str, cash: Decimal | None) -> dict[str, str]:
        if not self.policy.enabled:
            raise SignupClosed("self-service sign-up is off here; an operator creates accounts")
        check_user_id(user_id)
        if user_id.lower().startswith(RESERVED_PREFIX):
            # The platform's own identities (the internal analytics reader) live here.
            raise AccountError(f"user ids starting with {RESERVED_PREFIX!r} are reserved", "username")
        check_password(password)
        cash = self.policy.default_starting_cash if cash is None else cash
        if not Decimal(0) <= cash <= self.policy.max_starting_cash:
            raise AccountError(f"starting cash must be between 0 and "
                               f"{fmt(self.policy.max_starting_cash)}", "cash")
        try:
            portfolio = await self._portfolios.create_account(
                user_id, cash, utc_now(), password_hash=await hash_password(password))
        except AccountExists:
            raise AccountExists(f"user {user_id} already exists") from None
        return {"userId": user_id, "cashBalance": fmt(portfolio.cash)}

    async def sign_in(self, user_id: str, password: str, address: str) -> dict[str, object]:
        """The bearer token for a correct password; failures count against the
        user and the client address."""
        for limiter, key in ((self._by_user, user_id), (self._by_address, address)):
            wait = limiter.peek(key)
            if wait:
                raise TooManyAttempts(wait)
        stored = await self._portfolios.password_hash(user_id) \
            if USER_PATTERN.match(user_id or "") else None
        if not await password_matches(stored, password):
            self._by_user.acquire(user_id)
            self._by_address.acquire(address)
            raise BadCredentials("wrong username or password")
        return {"access_token": self._tokens.issue(user_id), "token_type": "bearer",
                "expires_in": self._tokens.ttl_seconds}


async def set_password(portfolios: PortfolioStore, user_id: str, password: str) -> bool:
    return await portfolios.set_password_hash(check_user_id(user_id), await hash_password(password))
