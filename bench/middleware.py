"""What the gateway's ASGI middleware costs per request, in-process.

The app `create_app` builds (no server, no socket) is driven with ASGI calls
on one uvloop thread, and CPU time is read with `time.process_time`, so the
figure depends little on what else the shared machine runs. Each request is
answered twice over: by the whole app (Starlette's and FastAPI's error
layers, ours, the router) and by its router alone (with FastAPI's exit-stack
layer, which its routes need); the difference is what the layers around the
routes cost. Two requests:

- `POST /bench/order`: a 190-byte JSON body read whole and answered 202 with
  a small JSON body, the shape of POST /v1/orders without its domain work;
- `GET /healthz`.

Usage: .venv/bin/python bench/middleware.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402

BODY = (b'{"symbol":"MOCKAAPL","side":"BUY","type":"LIMIT","quantity":"1",'
        b'"limitPrice":"100.00","timeInForce":"GTC","clientOrderId":"bench-0001",'
        b'"note":"the size of an order body, near enough"}')


def build_app():
    from starlette.routing import Route

    from mocktrade.services.auth import TokenIssuer
    from mocktrade.services.gateway import GatewayParts, create_app
    from mocktrade.services.http import JsonResponse
    from mocktrade.services.ratelimit import RateLimiter

    async def order(request):
        body = await request.body()
        return JsonResponse({"orderId": "0" * 26, "status": "ACCEPTED", "size": len(body)},
                            status_code=202)

    parts = GatewayParts(tokens=TokenIssuer("bench-secret-of-at-least-thirty-two-bytes", 3600),
                         limiter=RateLimiter(1000, 1000),
                         extra_routes=[Route("/bench/order", order, methods=["POST"])])
    return create_app(parts)


def scope_of(method: str, path: str, body: bytes) -> dict:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"),
               (b"authorization", b"Bearer x" * 1)]
    if body:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def drive(app, method: str, path: str, body: bytes, n: int) -> tuple[float, int]:
    """CPU seconds per request over `n` requests, and the status answered."""
    template = scope_of(method, path, body)
    message = {"type": "http.request", "body": body, "more_body": False}
    status = [0]

    async def receive():
        return message

    async def send(sent):
        if sent["type"] == "http.response.start":
            status[0] = sent["status"]

    started = time.process_time()
    for _ in range(n):
        await app(dict(template), receive, send)
    return (time.process_time() - started) / n, status[0]


async def measure(requests: int, rounds: int) -> None:
    from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware

    app = build_app()
    # The routes alone: FastAPI's routes need the exit stack its innermost
    # layer puts in the scope, so that one layer counts as part of them.
    routes = AsyncExitStackMiddleware(app.router)
    # The first call builds the middleware stack; warm both paths.
    for target in (app, routes):
        await drive(target, "POST", "/bench/order", BODY, 500)
        await drive(target, "GET", "/healthz", b"", 500)
    print("layers:", " > ".join(type(layer).__name__ for layer in layers(app)))
    for method, path, body in (("POST", "/bench/order", BODY), ("GET", "/healthz", b"")):
        whole, bare = [], []
        for _ in range(rounds):  # interleaved, so a burst of load hits both alike
            cost, status = await drive(app, method, path, body, requests)
            whole.append(cost)
            bare.append((await drive(routes, method, path, body, requests))[0])
        w, b = median(whole), median(bare)
        print(f"{method} {path} -> {status}: whole app {w * 1e6:6.1f} us, router alone "
              f"{b * 1e6:6.1f} us, layers around it {(w - b) * 1e6:5.1f} us "
              f"({(w - b) / w:.0%} of the request); medians of {rounds} x {requests}")


def layers(app) -> list:
    found, layer = [], app.middleware_stack
    while layer is not None and layer is not app.router and hasattr(layer, "app"):
        found.append(layer)
        layer = getattr(layer, "app", None)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MOCKTRADE_LOG_LEVEL", "warning")
    print(f"middleware benchmark on {machine()}; load {open('/proc/loadavg').read().split()[:3]}")
    import uvloop

    uvloop.run(measure(args.requests, args.rounds))


if __name__ == "__main__":
    main()
