"""Bearer tokens: JWT HS256 whose subject is the user id."""

from __future__ import annotations

import time

import jwt

ISSUER = "mocktrade"


class Unauthorized(Exception):
    pass


class TokenIssuer:
    def __init__(self, secret: str, ttl_seconds: int):
        self._secret, self._ttl = secret, ttl_seconds

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
        try:
            claims = jwt.decode(token.strip(), self._secret, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["sub", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token names no user")
        return subject
