"""Bearer tokens: JWT HS256 whose subject is the user id."""

from __future__ import annotations

import time
from collections import OrderedDict

import jwt

# Tokens verified recently, so a client's next request skips the HMAC and the
# claim checks (about a third of a thin request's CPU); bounded, oldest dropped.
VERIFIED_CACHE_SIZE = 10_000

ISSUER = "mocktrade"


class Unauthorized(Exception):
    pass


class TokenIssuer:
    def __init__(self, secret: str, ttl_seconds: int):
        self._secret, self._ttl = secret, ttl_seconds
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    def issue(self, user_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + self._ttl}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def user_of(self, authorization: str | None) -> str:
        """The user named by an `Authorization: Bearer ...` header value."""
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("authorization must be 'Bearer <token>'")
        token = token.strip()
        known = self._verified.get(token)
        if known is not None:
            user, expires = known
            if time.time() < expires:
                return user
            del self._verified[token]
        return self._verify(token)

    def _verify(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["sub", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token names no user")
        self._verified[token] = (subject, float(claims["exp"]))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return subject
