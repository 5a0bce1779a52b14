"""What the platform benchmarks share: a `mocktrade up` subprocess on a free
loopback port with a fresh data dir, users and tokens, the load generator in
its own process, /proc figures, percentiles.

Not a benchmark itself; see bench/orders.py, bench/queries.py, bench/memory.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
LOADGEN = BENCH_DIR / "loadgen.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def mocktrade_command() -> list[str]:
    """`.venv/bin/mocktrade` beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "mocktrade"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mocktrade.cli"]


# -- figures -------------------------------------------------------------------

def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(values: Sequence[float]) -> str:
    """p50/p90/p99/p99.9/max of millisecond samples, one line."""
    if not values:
        return "no samples"
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (f"p50 {pick(0.5):7.2f}  p90 {pick(0.9):7.2f}  p99 {pick(0.99):7.2f}  "
            f"p99.9 {pick(0.999):7.2f}  max {ordered[-1]:7.2f} ms  (n={len(ordered)})")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, VmSize and Threads of a process, in kB (Threads: count)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
            figures[key] = int(value.split()[0])
    return figures


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


# -- the platform under test ---------------------------------------------------

class Platform:
    """`mocktrade up` in a subprocess on a free port with its own data dir.

    Use as a context manager; the data dir (a fresh temp dir unless given) and
    the server log are removed on exit unless `keep` is set.
    """

    def __init__(self, data_dir: Path | None = None, env: dict[str, str] | None = None,
                 keep: bool = False, command: list[str] | None = None):
        self.command = command or [*mocktrade_command(), "up"]
        self._owned = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="mocktrade-bench-")) if data_dir is None else data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.ws_url = f"ws://{HOST}:{self.port}/v1/marketdata"
        self.keep = keep
        self.env = {**os.environ, "MOCKTRADE_DATA_DIR": str(self.data_dir),
                    "MOCKTRADE_HOST": HOST, "MOCKTRADE_PORT": str(self.port),
                    # Many users share the load; the limiter must not be what we measure.
                    "MOCKTRADE_RATE_LIMIT_PER_SECOND": "1000000",
                    "MOCKTRADE_RATE_LIMIT_BURST": "1000000",
                    "MOCKTRADE_LOG_LEVEL": "WARNING",
                    **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="mocktrade-bench-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self._issuer = None

    # users and tokens ----------------------------------------------------------

    def settings(self):
        from mocktrade.config import Settings

        old = {k: os.environ.get(k) for k in self.env if k.startswith("MOCKTRADE_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("MOCKTRADE_")})
        try:
            return Settings.from_env()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def cli(self, *args: str) -> str:
        """Run a `mocktrade` command against this data dir; its stdout."""
        result = subprocess.run([*mocktrade_command(), *args], env=self.env, capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"mocktrade {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_users(self, users: Iterable[str], cash: str) -> None:
        """Register accounts the way `mocktrade accounts create` does (same store,
        same call), in this process, because a subprocess per user is slow."""
        import asyncio

        from mocktrade.bootstrap import open_portfolios

        async def create() -> None:
            store = open_portfolios(self.settings())
            now = datetime.now(timezone.utc)
            try:
                for user in users:
                    await store.create_account(user, Decimal(cash), now)
            finally:
                await store.close()

        asyncio.run(create())

    def token(self, user: str) -> str:
        """What `mocktrade token USER` prints (same issuer, same secret file)."""
        if self._issuer is None:
            from mocktrade.bootstrap import token_issuer

            self._issuer = token_issuer(self.settings())
        return self._issuer.issue(user)

    # the server --------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "Platform":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mocktrade up exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"mocktrade up not ready after {timeout}s:\n{self.log()}")

    def wait_for_prices(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` symbols have a price (readyz wants only one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get_json("/v1/prices")
            if status == 200 and len(body.get("prices", [])) >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"fewer than {count} symbols priced after {timeout}s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> "Platform":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self.keep:
            self.log_path.unlink(missing_ok=True)
            if self._owned:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # HTTP for setup (not for measuring) ----------------------------------------

    def get_json(self, path: str, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    # the stores, read directly (read-only, beside the running server) ---------

    def portfolio_db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.data_dir / 'portfolios.sqlite3'}?mode=ro", uri=True,
                               timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def ledger_count(self) -> int:
        with closing(self.portfolio_db()) as conn:
            return conn.execute("SELECT count(*) FROM execution_ledger").fetchone()[0]

    def wait_for_ledger(self, count: int, timeout: float = 120.0) -> float:
        """Wait until the ledger holds `count` entries; seconds waited."""
        started = time.monotonic()
        while self.ledger_count() < count:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"ledger stuck at {self.ledger_count()} of {count}")
            time.sleep(0.05)
        return time.monotonic() - started


# -- HTTP requests as bytes, for the load generator ------------------------------

def raw_request(method: str, port: int, path: str, token: str | None = None,
                body: bytes | None = None, headers: dict[str, str] | None = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + (body.decode() if body else ""))


def order_request(port: int, token: str, symbol: str, quantity: str, side: str) -> str:
    body = json.dumps({"symbol": symbol, "quantity": quantity, "side": side},
                      separators=(",", ":")).encode()
    return raw_request("POST", port, "/v1/orders", token, body)


def run_loadgen(spec: dict[str, Any], procs: int = 1) -> dict[str, Any]:
    """Run bench/loadgen.py in `procs` processes of their own, splitting the
    connections, the rate and the requests between them; merged results."""
    specs = []
    for i in range(procs):
        part = dict(spec)
        part["requests"] = spec["requests"][i::procs]
        part["connections"] = max(1, spec["connections"] // procs)
        if "rate" in spec:
            part["rate"] = spec["rate"] / procs
        specs.append(part)
    start_at = time.time() + 0.5 + 0.2 * procs  # let every process import and connect first
    runs = []
    for part in specs:
        part["start_at"] = start_at
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(part, handle)
        handle.close()
        out = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        out.close()
        runs.append((subprocess.Popen([sys.executable, str(LOADGEN), handle.name, out.name]),
                     handle.name, out.name))
    results = []
    for process, spec_path, out_path in runs:
        process.wait()
        os.unlink(spec_path)
        if process.returncode != 0:
            raise RuntimeError(f"loadgen exited {process.returncode}")
        with open(out_path) as handle:
            results.append(json.load(handle))
        os.unlink(out_path)
    return merge_results(results)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    if len(results) == 1:
        return results[0]
    merged: dict[str, Any] = {"elapsed": max(r["elapsed"] for r in results), "tags": {},
                              "captured": [], "errors": sum(r["errors"] for r in results),
                              "late_starts": sum(r["late_starts"] for r in results),
                              "client_cpu": sum(r["client_cpu"] for r in results)}
    for r in results:
        merged["captured"].extend(r["captured"])
        for tag, figures in r["tags"].items():
            into = merged["tags"].setdefault(tag, {"status": {}, "latency_ms": [], "service_ms": []})
            for code, n in figures["status"].items():
                into["status"][code] = into["status"].get(code, 0) + n
            into["latency_ms"].extend(figures["latency_ms"])
            into["service_ms"].extend(figures["service_ms"])
    return merged


def completed(result: dict[str, Any], status: str | None = None) -> int:
    return sum(n for tag in result["tags"].values() for code, n in tag["status"].items()
               if status is None or code == status)


def all_latencies(result: dict[str, Any], key: str = "latency_ms") -> list[float]:
    return [v for tag in result["tags"].values() for v in tag[key]]


def status_line(result: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for tag in result["tags"].values():
        for code, n in tag["status"].items():
            counts[code] = counts.get(code, 0) + n
    text = ", ".join(f"{code}: {n}" for code, n in sorted(counts.items()))
    return text + (f", connection errors: {result['errors']}" if result["errors"] else "")


def report_open_loop(result: dict[str, Any], rate: float, duration: float,
                     connections: int) -> tuple[list[float], list[float], int]:
    """Print an open-loop phase's rate and latencies; (latencies, service
    times, answers)."""
    lat, service, sent = all_latencies(result), all_latencies(result, "service_ms"), completed(result)
    print(f"  open loop {rate:,.1f}/s for {duration:.0f} s ({connections} connections): "
          f"{sent / result['elapsed']:,.1f} answered/s [{status_line(result)}]; "
          f"{result['late_starts']} sends late >1 ms for want of a free connection")
    print(f"    latency from scheduled send: {summary_ms(lat)}")
    print(f"    service time (sent->answer): {summary_ms(service)}")
    return lat, service, sent


class CpuMeter:
    """CPU use over an interval: the whole machine (from /proc/stat), the
    server, and what is left for everything else (other work on a shared box)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.start()

    @staticmethod
    def _machine() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._t = time.monotonic()
        self._machine0 = self._machine()
        self._server0 = cpu_seconds(self.server_pid)
        self._self0 = time.process_time()

    def stop(self, client_cpu: float = 0.0) -> dict[str, float]:
        """Cores used on average: machine, server, load generator, others."""
        wall = time.monotonic() - self._t
        machine = (self._machine() - self._machine0) / wall
        server = (cpu_seconds(self.server_pid) - self._server0) / wall
        client = client_cpu / wall + (time.process_time() - self._self0) / wall
        return {"wall": wall, "machine": machine, "server": server, "client": client,
                "other": max(0.0, machine - server - client),
                "server_cpu_s": cpu_seconds(self.server_pid) - self._server0}

    @staticmethod
    def line(figures: dict[str, float]) -> str:
        return (f"cpu (cores): server {figures['server']:.2f}, load generator {figures['client']:.2f}, "
                f"other processes {figures['other']:.2f}, machine {figures['machine']:.2f} of "
                f"{os.cpu_count()}")


def eventlog_count(data_dir: Path, topic: str) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'eventlog.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM log_records WHERE topic = ?", (topic,)).fetchone()[0]
    finally:
        conn.close()
