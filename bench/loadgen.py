"""A small HTTP/1.1 load generator: asyncio raw streams, keep-alive, one
request in flight per connection, pre-built request bytes.

    python bench/loadgen.py SPEC.json RESULT.json

The benchmarks write the spec and run this in a process of its own (see
common.run_loadgen), so the load generator has its own core and its own
event loop. The spec (JSON):

    host, port          where to connect (loopback)
    requests            [[tag, raw HTTP request text], ...], sent in order and
                        round and round (the k-th request sent is the k-th of
                        the list, whichever connection is free), or once each
                        with "once": true
    connections         how many keep-alive connections
    mode                "closed": every connection sends its next request as
                        soon as the previous answer is in (max throughput);
                        "open": requests are scheduled at `rate` per second
                        (request k at start + k/rate, whichever connection is
                        free takes it); latency counts from the *scheduled*
                        time, so a server that falls behind cannot hide it
                        (no coordinated omission)
    rate                requests/s for "open"
    duration            seconds of load after `warmup`
    warmup              seconds of load first, not counted
    start_at            wall-clock time to start (several processes together)
    capture             keep (orderId, scheduled wall time, answered wall
                        time) of every counted 202 (bodies {"orderId": ...})

Result (JSON): per tag the status counts, latency_ms (from scheduled send in
open mode, from the actual send in closed mode) and service_ms (actual send
to answer), plus elapsed, connection errors, late_starts (open mode: requests
sent more than 1 ms after their scheduled time because no connection was
free) and the client's own CPU seconds.

Answers must carry Content-Length (uvicorn's do); a "Connection: close" or a
broken connection reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any

import orjson


class Stats:
    def __init__(self) -> None:
        self.tags: dict[str, dict[str, Any]] = {}
        self.captured: list[tuple[str, float, float]] = []
        self.errors = 0
        self.late_starts = 0

    def tag(self, name: str) -> dict[str, Any]:
        figures = self.tags.get(name)
        if figures is None:
            figures = self.tags[name] = {"status": {}, "latency_ms": [], "service_ms": []}
        return figures


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        status, body, close = await read_response(self.reader)
        if close:
            self.drop()
        return status, body


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec.get("host", "127.0.0.1"), int(spec["port"])
    requests = [(tag, raw.encode("latin-1")) for tag, raw in spec["requests"]]
    connections = int(spec.get("connections", 32))
    mode = spec.get("mode", "closed")
    rate = float(spec.get("rate", 0))
    warmup, duration = float(spec.get("warmup", 0)), float(spec.get("duration", 10))
    once, capture = bool(spec.get("once", False)), bool(spec.get("capture", False))
    stats = Stats()

    pool = [Connection(host, port) for _ in range(connections)]
    for conn in pool:
        await conn.open()

    start_at = float(spec.get("start_at", 0))
    if start_at > time.time():
        await asyncio.sleep(start_at - time.time())
    # perf_counter for scheduling and timing (uvloop's loop.time() ticks in
    # whole milliseconds); wall time only for captured stamps.
    clock = time.perf_counter
    t0 = clock()
    wall0 = time.time() - t0
    counted_from, end = t0 + warmup, t0 + warmup + duration
    # One sequence for all connections: request k of the run is requests[k % n]
    # (or each once), whichever connection sends it.
    shared = iter(requests) if once else itertools.cycle(requests)
    slots = itertools.count()

    async def worker(conn: Connection) -> None:
        while True:
            if mode == "open":
                scheduled = t0 + next(slots) / rate
                if scheduled >= end:
                    return
                delay = scheduled - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.001:
                    stats.late_starts += 1
            else:
                scheduled = clock()
                if scheduled >= end:
                    return
            try:
                tag, raw = next(shared)
            except StopIteration:
                return
            sent = clock()
            try:
                status, body = await conn.exchange(raw)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                stats.errors += 1
                conn.drop()
                await asyncio.sleep(0.01)
                continue
            done = clock()
            if scheduled < counted_from or (mode == "closed" and done > end):
                continue
            figures = stats.tag(tag)
            code = str(status)
            figures["status"][code] = figures["status"].get(code, 0) + 1
            figures["latency_ms"].append((done - scheduled) * 1000)
            figures["service_ms"].append((done - sent) * 1000)
            if capture and status == 202:
                stats.captured.append((orjson.loads(body)["orderId"], wall0 + scheduled, wall0 + done))

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(conn) for conn in pool))
    elapsed = min(clock(), end) - counted_from if not once else clock() - t0
    for conn in pool:
        conn.drop()
    return {"elapsed": elapsed, "tags": stats.tags, "captured": stats.captured,
            "errors": stats.errors, "late_starts": stats.late_starts,
            "client_cpu": time.process_time() - cpu0}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        spec = json.load(handle)
    try:
        import uvloop
        result = uvloop.run(run(spec))
    except ImportError:
        result = asyncio.run(run(spec))
    with open(argv[2], "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
