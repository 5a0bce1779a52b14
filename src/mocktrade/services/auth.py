"""Bearer tokens: JWT HS256 whose subject is the user id, signed by the
newest key of a key ring (services.signing_keys) and naming it in `kid`.

Bad tokens are throttled per client address: a token that fails
verification counts against its sender's address (a token bucket), and an
address over its budget gets TokenThrottled before its next unknown token
is even checked. A good client never pays for it: tokens already verified
are answered from the cache without looking at the address.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import jwt

from .ratelimit import RateLimiter
from .signing_keys import KeyRing

# Tokens verified recently, so a client's next request skips the HMAC and the
# claim checks (about a third of a thin request's CPU); bounded, oldest dropped.
VERIFIED_CACHE_SIZE = 10_000

# Failed tokens per client address: a burst of 20 (a console holding an
# expired token makes a few requests before signing in again), then one a
# second: guessing stays hopeless and the HMAC work an address can cause is bounded.
BAD_TOKENS_PER_SECOND, BAD_TOKEN_BURST = 1.0, 20

ISSUER = "mocktrade"


class Unauthorized(Exception):
    pass


class TokenThrottled(Exception):
    def __init__(self, wait: float):
        super().__init__("too many invalid tokens from this address; try again later")
        self.wait = wait


def bad_token_limiter() -> RateLimiter:
    return RateLimiter(BAD_TOKENS_PER_SECOND, BAD_TOKEN_BURST)


class TokenIssuer:
    def __init__(self, keys: KeyRing | str, ttl_seconds: int,
                 failures: RateLimiter | None = None):
        self._ring = keys if isinstance(keys, KeyRing) else KeyRing.single(keys)
        self._ttl = ttl_seconds
        self._failures = failures if failures is not None else bad_token_limiter()
        # token -> (user, expiry, kid)
        self._verified: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def issue(self, user_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        key = self._ring.current()
        claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + self._ttl}
        return jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid})

    def user_of(self, authorization: str | None, address: str | None = None) -> str:
        """The user named by an `Authorization: Bearer ...` header value.

        `address`: the client's, to throttle bad tokens by (None: not throttled).
        """
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        known = self._verified.get(token) if token else None
        if known is not None:
            user, expires, kid = known
            now = time.time()
            if now < expires and self._ring.usable(kid, now):
                return user
            del self._verified[token]
        if address is not None:
            wait = self._failures.peek(address)
            if wait:
                raise TokenThrottled(wait)
        try:
            if scheme.lower() != "bearer" or not token:
                raise Unauthorized("authorization must be 'Bearer <token>'")
            return self._verify(token)
        except Unauthorized:
            if address is not None:
                self._failures.acquire(address)
            raise

    def _verify(self, token: str) -> str:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("invalid token: kid must be a string")
        key = self._ring.verifying_key(kid)
        if key is None:
            raise Unauthorized("token signed by an unknown key" if kid else
                               "token has no key id (kid)")
        if not key.active(time.time()):
            raise Unauthorized("token signed by a retired key")
        try:
            claims = jwt.decode(token, key.secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["sub", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token names no user")
        self._verified[token] = (subject, float(claims["exp"]), kid)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return subject
