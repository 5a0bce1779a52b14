"""Headers every HTTP answer carries, so a browser treats it safely.

- `X-Content-Type-Options: nosniff`: a JSON answer is never run as script.
- `Referrer-Policy: no-referrer`: URLs (a pageToken, a symbol) never leak to
  another site.
- `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no framing
  (clickjacking of the order ticket).
- `Content-Security-Policy`: an answer that sets none (the API's JSON, the
  static files) gets `default-src 'none'`: nothing it could contain may run
  or load. Pages set their own stricter-than-default policy (the console:
  console/__init__.py), which is kept.
"""

from __future__ import annotations

from typing import Any

API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

_ALWAYS = ((b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"))


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in _ALWAYS if h[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
