"""The distributed deployment the chaos run owns: its own engines (own stack
directory, own ports: the nemesis kills them, never anyone else's) and
`mocktrade up --distributed` on them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from mocktrade import stack
from tests.e2e.conftest import RunningPlatform
from tests.engines import PORT_KEYS, free_ports

from .workload import Client, History

SYMBOLS = ("MOCKAAPL", "MOCKMSFT", "MOCKNVDA")
INITIAL_CASH = Decimal("1000000.00")
PROBE_USER = "chaos-probe"

# Services with an HTTP /readyz, by their port offset from the gateway's
# (launcher.LAYOUT); the jobs serve /readyz too.
PORT_OFFSETS = {"gateway": 0, "marketdata": 1, "feed": 2, "ingestion": 3, "persistence": 4,
                "triggers": 5, "execution": 10}


@dataclass
class Deployment:
    root: Path
    users: tuple[str, ...]
    job_engine: str = "consumer"
    platform: RunningPlatform | None = None

    @property
    def stack_dir(self) -> Path:
        return self.root / "stack"

    def start(self) -> "Deployment":
        began = time.monotonic()
        engines = stack.up(self.stack_dir, ports=dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)))))
        env = {"MOCKTRADE_SYMBOLS": ",".join(SYMBOLS),
               # Few symbols, fast and volatile: resting orders near the price fill within seconds.
               "MOCKTRADE_FEED_TICKS_PER_SECOND": "30", "MOCKTRADE_FEED_VOLATILITY": "20",
               "MOCKTRADE_RATE_LIMIT_PER_SECOND": "1000", "MOCKTRADE_RATE_LIMIT_BURST": "2000"}
        timeout = 120.0
        if self.job_engine == "flink":
            from mocktrade.jobs.flink.provision import flink_runtime

            flink_runtime()  # the PyFlink venv (built on first use, cached after)
            env |= {"MOCKTRADE_JOB_ENGINE": "flink", "MOCKTRADE_FLINK_CHECKPOINT_INTERVAL_MS": "1000"}
            timeout = 300.0
        self.platform = RunningPlatform(self.root / "data", engines={**engines, "MOCKTRADE_STACK_DIR":
                                                                       str(self.stack_dir)}, env=env)
        try:
            self.platform.start(timeout=timeout)
            for user in (*self.users, PROBE_USER):
                self.platform.cli("accounts", "create", user, "--cash", str(INITIAL_CASH))
        except BaseException:
            self.stop()
            raise
        self.started_after = time.monotonic() - began
        return self

    def stop(self) -> None:
        if self.platform is not None:
            self.platform.stop()
        stack.down(self.stack_dir)

    def tokens(self) -> dict[str, str]:
        return {user: self.platform.token(user) for user in self.users}

    def service_port(self, name: str) -> int:
        return self.platform.port + PORT_OFFSETS[name]

    def engine_env(self) -> dict[str, str]:
        return {k: v for k, v in self.platform.env.items() if k.startswith("MOCKTRADE_")}


class Probe:
    """End-to-end liveness: a market order placed now is executed and in the
    trade history. Its orders are real orders of the probe user (the checker
    judges them with the rest)."""

    def __init__(self, deployment: Deployment, history: History):
        self.client = Client(deployment.platform.base, PROBE_USER, deployment.platform.token(PROBE_USER),
                             history)

    def succeeds_within(self, timeout: float) -> float | None:
        """Seconds until a fresh order went all the way through, None if not within timeout."""
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            intent = self.client.place({"symbol": SYMBOLS[0], "quantity": self.client.quantity(1),
                                        "side": "BUY"}, deadline=max(1.0, deadline - time.monotonic()))
            if not intent.acknowledged:
                continue
            while time.monotonic() < deadline:
                order = self.client.order(intent.order_id)
                if order and order["status"] == "EXECUTED" and self._in_history(intent.order_id):
                    return time.monotonic() - began
                if order and order["status"] == "FAILED":
                    break  # e.g. no price yet after a Redis restart: try a new order
                time.sleep(0.2)
        return None

    def _in_history(self, order_id: str) -> bool:
        try:
            response = self.client.http.get("/v1/trades/search", params={"limit": 5})
        except Exception:
            return False
        return response.status_code == 200 and any(t["orderId"] == order_id for t in response.json()["trades"])

    def close(self) -> None:
        self.client.close()
