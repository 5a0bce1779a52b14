"""Clients sending a steady order load, with idempotency keys and retries,
recording every attempt and every acknowledged order in a History.

Each body is unique: a user's n-th request carries the quantity
`base + n / 1e6` (quantities have six places), so the checker can map any
order found in the system back to the one request that could have made it.
A request is retried with the same key and body on a timeout, a connection
error, 429 or 5xx until a definite answer or RETRY_DEADLINE: then it is
indeterminate (the order may or may not exist, but at most once).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

import httpx

RETRY_DEADLINE = 30.0  # seconds a client keeps retrying one request
REQUEST_TIMEOUT = 5.0
DEFINITE_DECLINES = (400, 402, 404, 409, 422)


@dataclass
class Attempt:
    at: float  # monotonic
    user: str
    key: str
    answer: str  # an HTTP status, or the transport error's name


@dataclass
class Intent:
    """One order request (all its attempts share the key and the body)."""

    user: str
    key: str
    body: dict
    sent_at: float
    attempts: int = 0
    status: int | None = None  # the definite answer; None: indeterminate
    order_id: str | None = None  # set on 202

    @property
    def acknowledged(self) -> bool:
        return self.status == 202

    @property
    def signature(self) -> tuple:
        return signature(self.user, self.body["symbol"], self.body["side"], self.body["quantity"],
                         self.body.get("type", "MARKET"))


def signature(user: str, symbol: str, side: str, quantity: str, order_type: str) -> tuple:
    return (user, symbol, side, Decimal(quantity), order_type)


@dataclass
class CancelRequest:
    user: str
    order_id: str
    attempts: int = 0
    status: int | None = None


@dataclass
class History:
    """Everything the clients did; appended from several threads (list appends are atomic)."""

    intents: list[Intent] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    cancels: list[CancelRequest] = field(default_factory=list)

    def acknowledged(self) -> list[Intent]:
        return [i for i in self.intents if i.acknowledged]

    def retries(self) -> int:
        return sum(max(0, i.attempts - 1) for i in self.intents) + \
            sum(max(0, c.attempts - 1) for c in self.cancels)


class Client:
    """One user's HTTP client with the retry discipline above."""

    def __init__(self, base: str, user: str, token: str, history: History,
                 stop: threading.Event | None = None):
        self.user = user
        self.history = history
        self.stop = stop or threading.Event()
        self.http = httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}"})
        self._sequence = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def quantity(self, whole: int) -> str:
        with self._lock:
            self._sequence += 1
            return str(Decimal(whole) + Decimal(self._sequence) / Decimal(1_000_000))

    def place(self, body: dict, deadline: float = RETRY_DEADLINE) -> Intent:
        intent = Intent(self.user, str(uuid.uuid4()), body, time.monotonic())
        self.history.intents.append(intent)
        answer = self._retry(lambda: self.http.post("/v1/orders", json=body,
                                                    headers={"X-Idempotency-Key": intent.key}),
                             intent.key, deadline, intent)
        if answer is not None:
            intent.status = answer.status_code
            if answer.status_code == 202:
                intent.order_id = answer.json()["orderId"]
        return intent

    def cancel(self, order_id: str, deadline: float = RETRY_DEADLINE) -> CancelRequest:
        request = CancelRequest(self.user, order_id)
        self.history.cancels.append(request)
        answer = self._retry(lambda: self.http.delete(f"/v1/orders/{order_id}"), order_id, deadline, request)
        request.status = answer.status_code if answer is not None else None
        return request

    def _retry(self, send: Callable[[], httpx.Response], key: str, deadline: float,
               record) -> httpx.Response | None:
        give_up = time.monotonic() + deadline
        pause = 0.1
        while True:
            record.attempts += 1
            try:
                response = send()
                self.history.attempts.append(Attempt(time.monotonic(), self.user, key, str(response.status_code)))
                if response.status_code < 300 or response.status_code in DEFINITE_DECLINES:
                    return response
            except httpx.HTTPError as exc:
                self.history.attempts.append(Attempt(time.monotonic(), self.user, key, type(exc).__name__))
            if time.monotonic() + pause > give_up:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def price(self, symbol: str) -> Decimal | None:
        try:
            response = self.http.get(f"/v1/prices/{symbol}")
        except httpx.HTTPError:
            return None
        return Decimal(response.json()["price"]) if response.status_code == 200 else None

    def order(self, order_id: str) -> dict | None:
        try:
            response = self.http.get(f"/v1/orders/{order_id}")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None


class Workload:
    """Several users, each in a thread: market buys and sells, resting LIMIT
    and STOP orders (GTC), and cancels of their own resting orders."""

    def __init__(self, base: str, tokens: dict[str, str], symbols: tuple[str, ...],
                 history: History, seed: int = 1, pause: float = 0.05):
        self.stop_event = threading.Event()
        self.symbols = symbols
        self.pause = pause
        self.clients = [Client(base, user, token, history, self.stop_event) for user, token in tokens.items()]
        self.rng = random.Random(seed)
        self._threads = [threading.Thread(target=self._run, args=(client, random.Random(self.rng.random())),
                                          name=f"chaos-{client.user}", daemon=True)
                         for client in self.clients]

    def start(self) -> "Workload":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(RETRY_DEADLINE + 10)
        for client in self.clients:
            client.close()

    def _run(self, client: Client, rng: random.Random) -> None:
        resting: list[str] = []
        while not self.stop_event.is_set():
            roll = rng.random()
            symbol = rng.choice(self.symbols)
            if roll < 0.12 and resting:
                client.cancel(resting.pop(rng.randrange(len(resting))))
            elif roll < 0.40:
                intent = self._resting_order(client, rng, symbol)
                if intent is not None and intent.acknowledged:
                    resting.append(intent.order_id)
            else:
                side = "BUY" if roll < 0.72 else "SELL"
                client.place({"symbol": symbol, "quantity": client.quantity(rng.randint(1, 3)), "side": side})
            self.stop_event.wait(self.pause)

    @staticmethod
    def _resting_order(client: Client, rng: random.Random, symbol: str) -> Intent | None:
        """A GTC order near the price: some fill on a later tick, some rest until canceled."""
        price = client.price(symbol)
        if price is None:
            return None
        offset = Decimal(rng.choice(("0.002", "0.005", "0.01")))
        kind = rng.choice(("LIMIT_BUY", "LIMIT_SELL", "STOP_SELL", "STOP_BUY"))
        body = {"symbol": symbol, "quantity": client.quantity(1), "timeInForce": "GTC"}
        if kind == "LIMIT_BUY":
            body |= {"side": "BUY", "type": "LIMIT", "limitPrice": str(round(price * (1 - offset), 2))}
        elif kind == "LIMIT_SELL":
            body |= {"side": "SELL", "type": "LIMIT", "limitPrice": str(round(price * (1 + offset), 2))}
        elif kind == "STOP_SELL":
            body |= {"side": "SELL", "type": "STOP", "stopPrice": str(round(price * (1 - offset), 2))}
        else:
            body |= {"side": "BUY", "type": "STOP", "stopPrice": str(round(price * (1 + offset), 2))}
        return client.place(body)
