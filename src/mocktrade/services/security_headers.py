"""Headers every HTTP answer carries, so a browser treats it safely.

Added by the gateway's edge layer (services.edge), outside every route.

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

from typing import Iterable

API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

Headers = list[tuple[bytes, bytes]]

_ALWAYS = ((b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"))
_CSP = (b"content-security-policy", API_CSP)
# What an answer that sets none of them gets (nearly all: the API's JSON).
_ALL = (*_ALWAYS, _CSP)
_NAMES = frozenset(name for name, _ in _ALL)


def secured(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """A response's headers with those above added where it set none of its own
    (a page's CSP is kept). A new list: the response's own is left as it was.
    Called by the gateway's edge layer (services.edge) on every HTTP answer."""
    headers = list(headers)
    for name, _ in headers:
        if name.lower() in _NAMES:
            break
    else:
        headers += _ALL
        return headers
    present = {name.lower() for name, _ in headers}
    headers += [h for h in _ALWAYS if h[0] not in present]
    if _CSP[0] not in present:
        headers.append(_CSP)
    return headers
