"""Limits on what a client may send, so hostile input gets a 4xx, never a 500.

Every limit is answered with the error envelope `{"error": {"code", "message",
"field"}}` (README, "Limits"):

- a request target (path and query) over MAX_TARGET_BYTES: 414 `uri_too_long`
- headers over MAX_HEADER_BYTES in all, or more than MAX_HEADERS of them: 431
  `headers_too_large` (both answered by the HTTP protocol, before any routing)
- a body over MAX_BODY_BYTES: 413 `body_too_large`
- a path, query string or form body that is not UTF-8 once percent-decoded:
  400 `invalid_encoding`
- JSON nested deeper than MAX_JSON_DEPTH: 400 `invalid_json`
- numbers too large (or too small) for any field: 400 naming the field (they
  decode to a Decimal the field's own check rejects as out of range)

On the WebSocket: a message over WS_MAX_MESSAGE_BYTES closes the connection
with 1009 (uvicorn's ws_max_size); more than WS_MAX_TOPICS channels joined at
once, or messages beyond WS_MESSAGES_PER_SECOND (bursts of WS_MESSAGE_BURST),
get a Phoenix error reply ("too many joins", "rate limited").
"""

from __future__ import annotations

import re
import time
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import unquote_to_bytes

import orjson

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
MAX_TARGET_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
WS_MAX_MESSAGE_BYTES = 64 * 1024
WS_MAX_TOPICS = 256
WS_MESSAGES_PER_SECOND = 100.0
WS_MESSAGE_BURST = 1000

# Integers longer than this decode as Decimals (Python refuses int() of more
# than 4300 digits); a Decimal that far out is "out of range" for every field.
_MAX_INT_DIGITS = 1000
# What a number beyond even Decimal's exponents decodes as: finite, and out
# of range for every field.
_OUT_OF_RANGE = Decimal("9E+999999")

AsgiMessage = MutableMapping[str, Any]
AsgiReceive = Callable[[], Awaitable[AsgiMessage]]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]


class LimitExceeded(Exception):
    """A JSON body beyond a limit: (status, code, message, field) for ApiError."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


# -- JSON -------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (strings ignored)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond Decimal's own
        return -_OUT_OF_RANGE if text.startswith("-") else _OUT_OF_RANGE


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _decimal(text)


def check_json_depth(raw: bytes | str) -> None:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise LimitExceeded(400, "invalid_json",
                            f"body nests arrays and objects deeper than {MAX_JSON_DEPTH}", "body")


def loads(raw: bytes | str) -> Any:
    """json.loads with numbers as Decimals (never binary floats), bounded nesting,
    and numbers of any size (out of range ones left for the field to reject)."""
    import json

    check_json_depth(raw)
    return json.loads(raw, parse_float=_decimal, parse_int=_integer)


# -- HTTP: the request target, headers and body ---------------------------------------

def envelope(code: str, message: str, field: str | None) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return orjson.dumps({"error": body})


class RequestLimits:
    """Bodies over MAX_BODY_BYTES get 413 before any handler reads them; paths
    and query strings must be UTF-8 (400). A body announced by a
    Content-Length within the limit reaches the app as the server delivers it
    (the server never delivers more than announced); a chunked body, or a form
    (checked for UTF-8), is read here, within the limit, and handed on whole.

    Applied by the gateway's edge layer (services.edge, `admit`); as ASGI
    middleware of its own where CORS must answer preflights before it."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: AsgiMessage, receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.admit(scope, receive, send)

    async def admit(self, scope: AsgiMessage, receive: AsgiReceive, send: AsgiSend) -> None:
        """An HTTP request to the app, or its 400/413 answer."""
        path, query = scope.get("raw_path") or b"", scope.get("query_string") or b""
        # Plain ASCII without a percent sign is UTF-8 as it stands (nearly every
        # request); anything else is decoded to be sure.
        if b"%" in path or b"%" in query or not path.isascii() or not query.isascii():
            field = _badly_encoded(scope)
            if field is not None:
                await _answer(send, 400, "invalid_encoding",
                              f"the {field} is not UTF-8 once percent-decoded", field)
                return
        length: int | None = None
        chunked = form = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                form = value.lower().startswith(b"application/x-www-form-urlencoded")
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = self.max_body + 1
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length > self.max_body:
            await self._too_large(send)
            return
        if not chunked and (not length or not form):
            # No body, or one whose announced length is within the limit.
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away mid-body: the app sees just that.
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        if form and not _utf8(whole["body"]):
            await _answer(send, 400, "invalid_encoding",
                          "the form is not UTF-8 once percent-decoded", "body")
            return
        await self.app(scope, _replay([whole], receive), send)

    async def _too_large(self, send: AsgiSend) -> None:
        await _answer(send, 413, "body_too_large",
                      f"the body is larger than {self.max_body} bytes", "body",
                      close=True)


def _replay(messages: list[AsgiMessage], receive: AsgiReceive) -> AsgiReceive:
    async def replayed() -> AsgiMessage:
        if messages:
            return messages.pop(0)
        return await receive()
    return replayed


def _utf8(encoded: bytes) -> bool:
    """Whether percent-encoded text (a path, query or form) decodes as UTF-8."""
    try:
        unquote_to_bytes(encoded.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _badly_encoded(scope: AsgiMessage) -> str | None:
    if not _utf8(scope.get("raw_path") or b""):
        return "path"
    if not _utf8(scope.get("query_string") or b""):
        return "query"
    return None


async def _answer(send: AsgiSend, status: int, code: str, message: str, field: str | None,
                  close: bool = False) -> None:
    body = envelope(code, message, field)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- WebSocket ---------------------------------------------------------------------------

class MessageRate:
    """A token bucket per connection: WS_MESSAGES_PER_SECOND, bursts of WS_MESSAGE_BURST."""

    __slots__ = ("_rate", "_burst", "_tokens", "_at")

    def __init__(self, rate: float = WS_MESSAGES_PER_SECOND, burst: int = WS_MESSAGE_BURST):
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
