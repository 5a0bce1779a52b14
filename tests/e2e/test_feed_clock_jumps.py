"""A feed whose clock jumps an hour forward, then an hour back, then recovers:
prices on the socket stay in order with increasing times near the platform's
clock, candles stay where they belong (none in the future, none an hour
back, ordered, well-formed), and a DAY order is filled by a crossing tick
stamped an hour ahead instead of being expired by it (the session close is
decided by the platform's UTC clock, see domain/feed_clock.py)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from websockets.sync.client import connect

from .conftest import RunningPlatform, verify, wait_for
from .feedctl import ControlledFeed

pytestmark = pytest.mark.e2e

SYMBOL = "MOCKJMP"
HOUR = 3600.0


class Socket:
    """Every price_update of one symbol, in arrival order, read in a thread."""

    def __init__(self, url: str, symbol: str):
        self.updates: list[dict] = []
        self.joined = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, symbol), daemon=True)
        self._thread.start()
        assert self.joined.wait(20), "no join reply on the price socket"

    def _read(self, url: str, symbol: str) -> None:
        with connect(url + "?vsn=2.0.0") as ws:
            ws.send(orjson.dumps(["1", "1", f"prices:{symbol}", "phx_join", {}]).decode())
            while not self._stop.is_set():
                try:
                    message = orjson.loads(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue
                if message[3] == "phx_reply":
                    self.joined.set()
                elif message[3] == "price_update":
                    self.updates.append(message[4])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def status(client, order_id: str) -> str | None:
    answer = client.get(f"/v1/orders/{order_id}")  # 404 until the order is recorded
    return answer.json()["status"] if answer.status_code == 200 else None


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_feed_clock_jumping_an_hour_corrupts_no_ordering_candles_or_expiry(tmp_path):
    feed = ControlledFeed({SYMBOL: "100.0000", "MOCKJMQ": "50.0000"}, interval=0.1).start()
    started = datetime.now(timezone.utc)
    # The session closes in ten minutes: an hour-ahead tick is after it.
    close = started + timedelta(minutes=10)
    env = {"MOCKTRADE_FEED_URL": feed.url, "MOCKTRADE_SYMBOLS": f"{SYMBOL},MOCKJMQ",
           "MOCKTRADE_SESSION_CLOSE": close.time().isoformat(timespec="seconds")}
    platform = RunningPlatform(tmp_path / "data", env=env).start()
    try:
        alice = platform.client("alice")
        wait_for(lambda: alice.get(f"/v1/prices/{SYMBOL}").status_code == 200, timeout=30)
        socket = Socket(platform.ws_url, SYMBOL)
        placed = alice.post("/v1/orders", json={"symbol": SYMBOL, "quantity": "1", "side": "BUY",
                                                "type": "LIMIT", "limitPrice": "90.00",
                                                "timeInForce": "DAY"})
        assert placed.status_code == 202, placed.text
        day_order = placed.json()["orderId"]
        wait_for(lambda: status(alice, day_order) == "OPEN", timeout=30)

        sent = []

        def tick(price: str) -> None:
            feed.tick(SYMBOL, price)
            sent.append(price)
            time.sleep(0.15)

        for price in ("99.0000", "98.0000"):
            tick(price)
        feed.clock_offset = HOUR          # the feed's clock jumps an hour ahead
        for price in ("97.0000", "96.0000", "89.5000"):  # the last crosses the DAY limit
            tick(price)
        wait_for(lambda: status(alice, day_order) in ("EXECUTED", "EXPIRED"), timeout=30)
        filled = alice.get(f"/v1/orders/{day_order}").json()
        assert filled["status"] == "EXECUTED", filled
        assert filled["executionPrice"] == "89.5000"

        feed.clock_offset = -HOUR         # then an hour behind
        for price in ("91.0000", "92.0000"):
            tick(price)
        feed.clock_offset = 0.0           # and right again
        for price in ("93.0000", "94.0000"):
            tick(price)
        wait_for(lambda: socket.updates and socket.updates[-1]["price"] == "94.0000", timeout=20)
        socket.close()
        finished = datetime.now(timezone.utc)

        # The socket: times strictly increase and stay near the platform's
        # clock; the prices we sent arrive in the order we sent them.
        times = [parse(u["timestamp"]) for u in socket.updates]
        assert all(a < b for a, b in zip(times, times[1:])), times
        assert all(started - timedelta(seconds=5) <= t <= finished + timedelta(seconds=5)
                   for t in times), times
        seen = [u["price"] for u in socket.updates]
        positions = [seen.index(p) for p in sent]
        assert positions == sorted(positions), (sent, seen)

        # Candles: ordered, well-formed, all within the test's own minutes.
        bars = alice.get(f"/v1/bars/{SYMBOL}", params={"timeframe": "1m", "limit": 100})
        assert bars.status_code == 200, bars.text
        candles = bars.json()["bars"]
        assert candles
        starts = [parse(c["t"]) for c in candles]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        first_minute = started.replace(second=0, microsecond=0)
        assert all(first_minute <= s <= finished for s in starts), starts
        for c in candles:
            o, h, l, cl = (Decimal(c[k]) for k in "ohlc")
            assert l <= min(o, cl) <= max(o, cl) <= h, c

        metrics = alice.get("/metrics").text
        clock_fixes = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("mocktrade_feed_clock_corrections_total{")
                       and 'kind="clock"' in line]
        assert clock_fixes and sum(clock_fixes) >= 3, clock_fixes  # every jumped tick counted
        alice.close()
        verify(platform)
    finally:
        platform.stop()
        feed.stop()
