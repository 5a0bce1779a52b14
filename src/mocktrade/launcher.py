"""`mocktrade up --distributed`: the real engines, then one process per service
and job (some replicated), restarted if they die, all stopped on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .config import Settings

# name, command, port offset from the gateway's port (None: no listener needed)
LAYOUT = (
    ("feed", ("serve", "feed"), 2),
    ("ingestion", ("serve", "ingestion"), 3),
    ("marketdata", ("serve", "marketdata"), 1),
    ("execution", ("job", "execution"), 10),
    ("persistence", ("job", "persistence"), 4),
    ("triggers", ("job", "triggers"), 5),
    ("gateway", ("serve", "gateway"), 0),
)


@dataclass
class Child:
    name: str
    args: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mocktrade.cli", *self.args, "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        # Operators (and the failure tests) find each process by name here.
        self.log_path.with_suffix(".pid").write_text(str(self.process.pid))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.process.send_signal(sig)


def parse_replicas(spec: str) -> dict[str, int]:
    """`NAME=N,...`; a job may be 0: it runs elsewhere (a Flink cluster)."""
    names = {name: args[0] for name, args, _ in LAYOUT}
    replicas: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        if name not in names:
            raise ValueError(f"replicas: no service or job {name!r}; one of {', '.join(names)}")
        least = 0 if names[name] == "job" else 1
        if not count.isdigit() or int(count) < least:
            raise ValueError(f"replicas wants {name}=N with N >= {least}, got {item!r}")
        replicas[name] = int(count)
    return replicas


def plan(settings: Settings, engine_env: dict[str, str], replicas: dict[str, int],
         log_dir: Path) -> list[Child]:
    host, base = settings.host, settings.port
    env = {**os.environ, **engine_env,
           "MOCKTRADE_DATA_DIR": str(settings.data_dir.resolve()),
           "MOCKTRADE_HOST": host,
           "MOCKTRADE_FEED_URL": settings.feed_url or f"ws://{host}:{base + 2}/feed/v1/ticks",
           "MOCKTRADE_ANALYTICS_URL": "" if engine_env.get("MOCKTRADE_CLICKHOUSE_URL")
           else f"http://{host}:{base + 4}"}
    children = []
    for name, args, offset in LAYOUT:
        for replica in range(replicas.get(name, 1)):
            # Replicas of one role sit on consecutive ports after the first
            # (20 apart, so no role's replica lands on another's port).
            port = base + offset + 20 * replica
            label = name if replica == 0 else f"{name}-{replica + 1}"
            children.append(Child(label, list(args), port, env, log_dir / f"{label}.log"))
    return children


async def _ready(children: list[Child], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            for child in children:
                try:
                    answer = await client.get(f"http://127.0.0.1:{child.port}/readyz")
                    status[child.name] = "ready" if answer.status_code == 200 else answer.text
                except httpx.HTTPError as exc:
                    status[child.name] = f"not answering ({type(exc).__name__})"
            if all(s == "ready" for s in status.values()):
                break
            await asyncio.sleep(0.5)
    return status


def run_distributed(settings: Settings, replicas: dict[str, int] | None = None,
                    stack_dir: Path | None = None, keep_stack: bool = False) -> int:
    from . import logs, stack
    from .bootstrap import Resources, ensure_demo_accounts

    logs.configure(settings.log_level)
    stack_dir = stack_dir or settings.data_dir / "stack"
    print(f"starting the engines in {stack_dir} ...", flush=True)
    engine_env = stack.up(stack_dir)
    from .config import ENGINES_FILE, write_env_file

    write_env_file(settings.data_dir / ENGINES_FILE, {
        **engine_env, **({"MOCKTRADE_TABLE_PREFIX": settings.table_prefix} if settings.table_prefix else {})})
    settings = settings.with_overrides(
        kafka_bootstrap=engine_env.get("MOCKTRADE_KAFKA_BOOTSTRAP"),
        redis_url=engine_env.get("MOCKTRADE_REDIS_URL"),
        dynamodb_endpoint=engine_env.get("MOCKTRADE_DYNAMODB_ENDPOINT"),
        elasticsearch_url=engine_env.get("MOCKTRADE_ELASTICSEARCH_URL"))

    async def demo() -> None:
        resources = Resources(settings)
        try:
            await ensure_demo_accounts(resources.portfolios, settings)
        finally:
            await resources.close()
    asyncio.run(demo())

    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    children = plan(settings, engine_env, replicas or {}, log_dir)
    for child in children:
        child.start()
    status = asyncio.run(_ready(children, timeout=90))
    base = f"http://{settings.host}:{settings.port}"
    token = Resources(settings).tokens.issue(settings.demo_users[0])
    print(f"mocktrade (distributed) on {base}\n"
          f"  prices:  ws://{settings.host}:{settings.port + 1}/v1/marketdata\n"
          f"  logs:    {log_dir}\n"
          + "".join(f"  {name:12} {state}\n" for name, state in status.items())
          + f"  console: {base}/  (sign in as {settings.demo_users[0]}, password "
            f"{settings.demo_password()})\n"
          + f"  demo token for {settings.demo_users[0]}: {token}", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for child in children:
                if not child.alive() and not stopping:
                    child.restarts += 1
                    print(f"{child.name} exited ({child.process.returncode}); restarting", flush=True)
                    child.start()
            time.sleep(0.5)
    finally:
        for child in children:
            child.stop()
        deadline = time.monotonic() + 10
        for child in children:
            if child.process is not None:
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.stop(signal.SIGKILL)
        if not keep_stack:
            stack.down(stack_dir)
        print("stopped", flush=True)
    return 0
