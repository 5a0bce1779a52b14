"""`mocktrade status`: every process of a running deployment (either mode),
with its health, rates, consumer lag, WebSocket clients and last error.

Which processes run, and where, is DATA_DIR/processes.json (process_file.py,
written by `up` and the launcher). Each refresh asks every process, at once,
for /readyz and /metrics; rates are counter deltas between two scrapes (a
counter that went down is a restarted process: its value since the restart
counts). The last error is the newest ERROR/WARNING line of the process's
log file. The live view is a rich Live table redrawn every second;
`--once` prints one table, `--json` one JSON document.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from . import process_file

SCRAPE_TIMEOUT = 2.0
LOG_TAIL_BYTES = 256 * 1024
ERROR_LEVELS = ("CRITICAL", "ERROR", "WARNING")
# The merged /metrics of the embedded HTTP process labels each sample with
# the process it came from; each job child's own are read from its own port.
LOCAL_PROCESS = "platform"
_PLAIN_LEVEL = re.compile(r"\b(CRITICAL|ERROR|WARNING)\b")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


class NothingRunning(Exception):
    """One sentence: no deployment runs on this data directory."""


@dataclass
class Scrape:
    """The numbers of one /metrics answer."""

    at: float
    orders_accepted: float | None = None
    orders_rejected: float | None = None
    ticks: float | None = None
    events: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    ws_clients: float | None = None


def parse_metrics(text: str, at: float) -> Scrape:
    """The series `status` shows, from Prometheus text (samples of another
    process in a merged answer left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape(at)

    def add(current: float | None, value: float) -> float:
        return (current or 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("process", LOCAL_PROCESS) != LOCAL_PROCESS:
                continue
            name, value = sample.name, sample.value
            if name == "mocktrade_orders_total":
                if labels.get("outcome") == "accepted":
                    scrape.orders_accepted = add(scrape.orders_accepted, value)
                else:
                    scrape.orders_rejected = add(scrape.orders_rejected, value)
            elif name == "mocktrade_feed_ticks_total":
                scrape.ticks = add(scrape.ticks, value)
            elif name == "mocktrade_events_processed_total":
                job = labels.get("job", "?")
                scrape.events[job] = scrape.events.get(job, 0.0) + value
            elif name == "mocktrade_consumer_lag_records":
                group = labels.get("group", "?")
                scrape.lag[group] = scrape.lag.get(group, 0.0) + value
            elif name == "mocktrade_ws_clients":
                scrape.ws_clients = add(scrape.ws_clients, value)
    return scrape


def rate(now: float | None, before: float | None, seconds: float) -> float | None:
    """Per second between two readings of a counter; a counter that went
    down was reset (the process restarted): what it counted since."""
    if now is None or before is None or seconds <= 0:
        return None
    delta = now - before if now >= before else now
    return delta / seconds


def last_error(log_path: Path | None) -> dict[str, str] | None:
    """The newest ERROR/WARNING line of a log file, as one line: JSON lines
    (logs.py) and plain ones (uvicorn, a traceback's last line) alike."""
    if log_path is None:
        return None
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - LOG_TAIL_BYTES))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                level = str(record.get("level", ""))
                if level not in ERROR_LEVELS:
                    continue
                text = str(record.get("message", ""))
                extras = {k: v for k, v in record.items()
                          if k not in ("time", "level", "logger", "message", "exception")}
                if extras:
                    text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
                exception = str(record.get("exception") or "").strip().splitlines()
                if exception:
                    text += f" ({exception[-1]})"
                return {"time": str(record.get("time", "")), "level": level,
                        "text": _one_line(f"{record.get('logger', '')}: {text}")}
        found = _PLAIN_LEVEL.search(line)
        if found:
            return {"time": "", "level": found.group(1), "text": _one_line(line)}
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Collector:
    """Asks every process of the deployment; keeps the previous scrape of
    each, so each refresh has rates since the one before."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._previous: dict[tuple[str, Any], Scrape] = {}

    async def collect(self) -> dict[str, Any]:
        """The deployment now, as the JSON document `--json` prints."""
        document = process_file.running(self.data_dir)
        if document is None:
            raise NothingRunning(nothing_running(self.data_dir))
        host = document.get("host") or "127.0.0.1"
        host = "127.0.0.1" if host in _WILDCARD_HOSTS else host
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT) as client:
            rows = await asyncio.gather(*(self._one(client, host, entry)
                                          for entry in document["processes"]
                                          if isinstance(entry, dict)))
        return {"mode": document.get("mode"), "data_dir": str(self.data_dir.resolve()),
                "owner": document.get("owner"),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "processes": rows}

    async def _one(self, client: httpx.AsyncClient, host: str, entry: dict[str, Any]) -> dict[str, Any]:
        name, port, pid = str(entry.get("name")), entry.get("port"), entry.get("pid")
        base = f"http://{host}:{port}"
        alive = process_file.pid_alive(pid) if pid is not None else None
        health, failing = await _health(client, base)
        if health == "down" and alive is False:
            health = "not running"
        scrape = None
        if health != "not running":
            try:
                answer = await client.get(f"{base}/metrics")
                answer.raise_for_status()
                scrape = parse_metrics(answer.text, time.monotonic())
            except (httpx.HTTPError, ValueError):
                scrape = None
        # Keyed by pid too: a restarted process's counters start afresh.
        key = (name, pid)
        before = self._previous.get(key)
        if scrape is not None:
            self._previous[key] = scrape
        log = entry.get("log")
        log_path = Path(log) if log else self.data_dir / "logs" / f"{name}.log"
        row: dict[str, Any] = {
            "name": name, "kind": entry.get("kind"), "jobs": entry.get("jobs"),
            "port": port, "pid": pid, "alive": alive,
            "health": health, "failing": failing, "restarts": entry.get("restarts"),
            "metrics": scrape is not None,
            "log": str(log_path) if log_path.exists() else None,
            "last_error": last_error(log_path if log_path.exists() else None),
        }
        row.update(_numbers(scrape, before))
        return row


async def _health(client: httpx.AsyncClient, base: str) -> tuple[str, dict[str, str]]:
    """("ok", {}) | ("not ready", the failing checks) | ("down", {})."""
    try:
        answer = await client.get(f"{base}/readyz")
    except httpx.HTTPError:
        return "down", {}
    if answer.status_code == 200:
        return "ok", {}
    try:
        checks = answer.json().get("checks")
    except (ValueError, AttributeError):
        checks = None
    if not isinstance(checks, dict):
        return "not ready", {"http": str(answer.status_code)}
    return "not ready", {str(k): str(v) for k, v in checks.items() if v != "ok"}


def _numbers(now: Scrape | None, before: Scrape | None) -> dict[str, Any]:
    if now is None:
        return {"orders": None, "ticks": None, "events": None, "lag": None, "ws_clients": None}
    seconds = now.at - before.at if before else 0.0
    previous = before or Scrape(now.at)

    def counter(current: float | None, earlier: float | None) -> dict[str, Any] | None:
        if current is None:
            return None
        return {"total": current, "per_s": _round(rate(current, earlier, seconds) if before else None)}

    orders = counter(now.orders_accepted, previous.orders_accepted)
    if orders is not None or now.orders_rejected is not None:
        orders = {**(orders or {"total": 0.0, "per_s": None}), "rejected_total": now.orders_rejected or 0.0}
    events = None
    if now.events:
        by_job = {job: counter(total, previous.events.get(job)) for job, total in sorted(now.events.items())}
        rates = [v["per_s"] for v in by_job.values()]
        events = {"total": sum(now.events.values()),
                  "per_s": _round(sum(rates)) if before and None not in rates else None,
                  "by_job": by_job}
    return {"orders": orders, "ticks": counter(now.ticks, previous.ticks), "events": events,
            "lag": {"total": sum(now.lag.values()), "by_group": dict(sorted(now.lag.items()))}
            if now.lag else None,
            "ws_clients": now.ws_clients}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def nothing_running(data_dir: Path) -> str:
    return (f"nothing runs on {Path(data_dir).resolve()}: no `mocktrade up` there "
            f"(start one, or pass the --data-dir it uses)")


# -- rendering -------------------------------------------------------------------

_HEALTH_STYLE = {"ok": "green", "not ready": "yellow", "down": "red", "not running": "red"}


def table(status: dict[str, Any], live: bool = False, plain: bool = False):
    """The status as a rich Table; `plain`: no lines, columns apart (for pipes)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    title = (f"mocktrade ({status['mode']}) on {status['data_dir']}, {status['time']}"
             + ("  (Ctrl-C to quit)" if live else ""))
    grid = Table(title=title, title_justify="left", box=None if plain else box.SIMPLE,
                 pad_edge=False, expand=False, padding=(0, 2) if plain else (0, 1))
    for header, justify in (("PROCESS", "left"), ("PID", "right"), ("PORT", "right"),
                            ("HEALTH", "left"), ("ORDERS/S", "right"), ("TICKS/S", "right"),
                            ("EVENTS/S", "right"), ("LAG", "right"), ("WS", "right"),
                            ("RESTARTS", "right")):
        grid.add_column(header, justify=justify, no_wrap=True)
    grid.add_column("LAST ERROR", overflow="ellipsis", no_wrap=True, max_width=80, min_width=20)
    for row in status["processes"]:
        health = row["health"]
        if row["failing"]:
            health += " (" + ", ".join(f"{k}: {v}" for k, v in row["failing"].items()) + ")"
        error = row["last_error"]
        grid.add_row(
            row["name"], _cell(row["pid"]), _cell(row["port"]),
            Text(_trim(health, 60), style=_HEALTH_STYLE.get(row["health"], "")),
            _counter(row["orders"]), _counter(row["ticks"]), _counter(row["events"]),
            _lag(row["lag"]), _cell(row["ws_clients"]), _cell(row["restarts"]),
            Text(f"{error['level']} {error['text']}" if error else "-",
                 style="red" if error and error["level"] != "WARNING" else "yellow" if error else "dim"))
    return grid


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counter(value: dict[str, Any] | None) -> str:
    """`12.5 (340)`: per second, and the total since the process started; `-`
    when this process has counted none (every process has every instrument)."""
    if value is None or not value["total"]:
        return "-"
    per_s = "…" if value.get("per_s") is None else f"{value['per_s']:.1f}"
    return f"{per_s} ({_cell(value['total'])})"


def _lag(value: dict[str, Any] | None) -> str:
    if value is None or not value["by_group"]:
        return "-"
    worst = max(value["by_group"].items(), key=lambda item: item[1])
    return _cell(value["total"]) + (f" ({worst[0]})" if worst[1] > 0 else "")


# -- the command ----------------------------------------------------------------------

def run(data_dir: Path, once: bool = False, as_json: bool = False, interval: float = 1.0) -> int:
    from rich.console import Console

    collector = Collector(data_dir)
    interval = max(interval, 0.1)
    if once or as_json or not sys.stdout.isatty():
        try:
            asyncio.run(collector.collect())
            time.sleep(interval)  # rates: the deltas over this interval
            status = asyncio.run(collector.collect())
        except NothingRunning as exc:
            print(f"mocktrade: {exc}", file=sys.stderr)
            return 1
        if as_json:
            print(json.dumps(status, indent=2))
        elif sys.stdout.isatty():
            Console(highlight=False).print(table(status))
        else:  # no ANSI, no box lines, no trailing blanks: for pipes and files
            console = Console(file=io.StringIO(), color_system=None, highlight=False,
                              width=int(os.environ.get("COLUMNS") or 240))
            console.print(table(status, plain=True))
            text = console.file.getvalue()
            print("\n".join(line.rstrip() for line in text.splitlines()).strip("\n"))
        return 0
    return _live(collector, interval, Console(highlight=False))


def _live(collector: Collector, interval: float, console) -> int:
    from rich.live import Live
    from rich.text import Text

    async def loop() -> None:
        with Live(Text("asking the processes …"), console=console, auto_refresh=False,
                  screen=False, transient=False) as live:
            while True:
                try:
                    view = table(await collector.collect(), live=True)
                except NothingRunning as exc:
                    view = Text(f"{exc}; waiting for one (Ctrl-C to quit)", style="yellow")
                live.update(view, refresh=True)
                await asyncio.sleep(interval)

    if process_file.running(collector.data_dir) is None:
        print(f"mocktrade: {nothing_running(collector.data_dir)}", file=sys.stderr)
        return 1
    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        pass
    return 0
