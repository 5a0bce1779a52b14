"""The trader's console and the offline API docs: static files in this package.

`console_routes()` is what the gateway process adds to serve the console at
`/`; `docs_routes()` serves Swagger UI (`/v1/docs`) and Redoc (`/v1/redoc`)
from the vendored assets, so neither needs the internet. Both mount the
vendored third-party files (see vendor/README.md) at `/console/vendor`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR = HERE / "vendor"
VENDOR_URL = "/console/vendor"
MARKETDATA_PATH = "/v1/marketdata"
# Where the browser opens the market-data socket when it is not this origin's
# /v1/marketdata: a ws(s):// URL, or ":PORT" for this page's host on that port.
MARKETDATA_URL_ENV = "MOCKTRADE_CONSOLE_MARKETDATA_URL"

_NO_STORE = {"Cache-Control": "no-cache"}
# The console's policy: its own files only, no inline script or style at all
# (index.html has none; its modules attach handlers as properties), and no
# framing. connect-src adds the market-data socket's origin (see _console_csp).
_CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'{chart_style}; "
                "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
                "form-action 'self'; frame-ancestors 'none'; connect-src 'self'{sockets}")
# The docs pages load nothing from elsewhere: Redoc 3 would fetch its logo from
# its CDN (and, unless disabled, send telemetry); this keeps every request here.
# Their one inline script each is allowed by its hash, nothing else inline
# runs; inline styles stay allowed here only: Redoc's styled-components and
# Swagger UI write <style> elements at run time, which no hash can cover.
_DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             "script-src 'self' {hashes}; font-src 'self' data:; worker-src 'self' blob:; "
             "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


def _docs_csp(page: str) -> dict[str, str]:
    """The docs policy, allowing exactly the inline scripts of `page`."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(page))
    return {"Content-Security-Policy": _DOCS_CSP.format(hashes=hashes)}


def _console_csp(request: Request, socket_url: str) -> str:
    """connect-src for the market-data socket: this origin's ws(s) (not every
    browser counts ws: as 'self'), or the configured socket's origin."""
    host = request.headers.get("host", "")
    if socket_url.startswith(("ws://", "wss://")):
        scheme, _, rest = socket_url.partition("://")
        sockets = f"{scheme}://{rest.split('/', 1)[0]}"
    elif socket_url.startswith(":") and host:
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        sockets = f"ws://{hostname}{socket_url} wss://{hostname}{socket_url}"
    elif host:
        sockets = f"ws://{host} wss://{host}"
    else:
        sockets = ""
    return _CONSOLE_CSP.format(sockets=f" {sockets}" if sockets else "",
                               chart_style=_CHART_ATTRIBUTION_STYLE)


def _chart_attribution_style() -> str:
    """The hash of the one <style> element Lightweight Charts writes (the
    TradingView attribution its licence asks for), read from the vendored
    bundle so an upgrade keeps it allowed; nothing else inline is."""
    bundle = VENDOR / "lightweight-charts" / "lightweight-charts.standalone.production.mjs"
    found = re.search(r'createElement\("style"\),this\.\w+\.innerText="([^"]*)"',
                      bundle.read_text(encoding="utf-8"))
    if found is None:
        return ""
    digest = hashlib.sha256(found.group(1).encode()).digest()
    return f" 'sha256-{base64.b64encode(digest).decode()}'"


_CHART_ATTRIBUTION_STYLE = _chart_attribution_style()


def _vendor_mount() -> Mount:
    return Mount(VENDOR_URL, app=StaticFiles(directory=VENDOR), name="console-vendor")


def console_routes(marketdata_url: str | None = None) -> list[BaseRoute]:
    """The console page at `/`, its modules under `/console/`, and its config.

    `marketdata_url`: where the market-data WebSocket is when this process
    does not serve it (distributed mode), as a ws(s):// URL or ":PORT" (the
    page's own host on that port); None for this origin. The environment
    variable MOCKTRADE_CONSOLE_MARKETDATA_URL overrides it.
    """
    socket_url = os.environ.get(MARKETDATA_URL_ENV) or marketdata_url or MARKETDATA_PATH

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={**_NO_STORE, "Content-Security-Policy":
                                     _console_csp(request, socket_url)})

    async def config(_: Request) -> JSONResponse:
        return JSONResponse({"marketdataUrl": socket_url}, headers=_NO_STORE)

    return [
        Route("/", index, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/console/config.json", config, methods=["GET"], include_in_schema=False),
        _vendor_mount(),
        Mount("/console", app=StaticFiles(directory=STATIC), name="console"),
    ]


def docs_routes(openapi_url: str, title: str) -> list[BaseRoute]:
    """Swagger UI at /v1/docs and Redoc at /v1/redoc, from the vendored files."""
    from fastapi.openapi.docs import get_swagger_ui_html

    swagger_ui = f"{VENDOR_URL}/swagger-ui-dist"

    async def swagger(_: Request) -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - Swagger UI",
                                   swagger_js_url=f"{swagger_ui}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{swagger_ui}/swagger-ui.css",
                                   swagger_favicon_url=f"{swagger_ui}/favicon-32x32.png",
                                   # no badge from the online validator
                                   swagger_ui_parameters={"validatorUrl": None})
        page.headers.update(_docs_csp(page.body.decode()))
        return page

    async def redoc(_: Request) -> HTMLResponse:
        # Redoc 3's standalone bundle is an ES module (FastAPI's get_redoc_html
        # loads it as a classic script, and asks Google for fonts).
        page = _REDOC_PAGE.format(title=f"{title} - ReDoc", spec=json.dumps(openapi_url),
                                  js=f"{VENDOR_URL}/redoc/redoc.standalone.js",
                                  icon=f"{swagger_ui}/favicon-32x32.png")
        return HTMLResponse(page, headers=_docs_csp(page))

    return [
        Route("/v1/docs", swagger, methods=["GET"], include_in_schema=False),
        Route("/v1/redoc", redoc, methods=["GET"], include_in_schema=False),
        _vendor_mount(),
    ]


_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="{icon}">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<div id="redoc-container"></div>
<script type="module">
import {{ init }} from "{js}";
init({spec}, {{ disableTelemetry: true }}, document.getElementById("redoc-container"));
</script>
</body>
</html>
"""
