"""`mocktrade up --distributed`: the real engines, then one process per service
and job (some replicated), restarted if they die, all stopped on Ctrl-C.

Before starting anything the whole plan is checked: no service port may be an
engine's port or held by another process. The console shows the banner, then
one line per state change of a child (ready, not ready, restarting)."""

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


class LaunchError(RuntimeError):
    """The plan cannot start; one sentence per reason (the CLI prints it, no traceback)."""


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
        from .job_process import die_with_parent

        # Its own session (a Ctrl-C at the terminal is ours to pass on), and
        # killed by the kernel if we die, even by kill -9: never an orphan.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mocktrade.cli", *self.args, "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent)
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
           "MOCKTRADE_DYNAMODB_REGION": settings.dynamodb_region,
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


def engines_file(settings: Settings, engine_env: dict[str, str]) -> dict[str, str]:
    """What DATA_DIR/engines.env holds: how later commands (token, accounts,
    verify) reach the same engines, in the same DynamoDB region."""
    return {**engine_env, "MOCKTRADE_DYNAMODB_REGION": settings.dynamodb_region,
            **({"MOCKTRADE_TABLE_PREFIX": settings.table_prefix} if settings.table_prefix else {})}


def check_plan(children: list[Child], host: str, engine_ports: dict[str, dict[str, int]],
               running_engines: set[str]) -> list[str]:
    """Every reason the plan cannot start, one sentence each (empty: go).

    engine_ports: engine -> {port key: port} of the stack to use;
    running_engines: those already up (their ports are theirs, not a conflict
    for the engine, only for a service)."""
    from .portcheck import is_free, taken_message

    problems: list[str] = []
    owners: dict[int, str] = {}
    for engine, ports in engine_ports.items():
        for key, port in ports.items():
            owners[port] = f"the {engine} engine's port ({key})"
    for child in children:
        if child.port in owners:
            problems.append(
                f"{child.name} would listen on port {child.port}, {owners[child.port]}: pick another "
                f"--port, or move the engine with `mocktrade stack up --port {key_of(engine_ports, child.port)}=N`")
            continue
        owners[child.port] = child.name
        if not is_free(host, child.port):
            problems.append(taken_message(host, child.port, child.name))
    for engine, ports in engine_ports.items():
        if engine in running_engines:
            continue
        for key, port in ports.items():
            if not is_free("127.0.0.1", port):
                problems.append(taken_message("127.0.0.1", port, f"the {engine} engine ({key})"))
    return problems


def key_of(engine_ports: dict[str, dict[str, int]], port: int) -> str:
    return next(key for ports in engine_ports.values() for key, p in ports.items() if p == port)


def describe_readiness(answer: httpx.Response) -> str:
    """`ready` or `not ready (...)`, from a /readyz answer: never a raw body."""
    if answer.status_code == 200:
        return "ready"
    try:
        body = answer.json()
        checks = body.get("checks") if isinstance(body, dict) else None
    except ValueError:
        checks = None
    if not isinstance(checks, dict):
        return f"not ready (port answered HTTP {answer.status_code}: not a mocktrade service)"
    failing = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
    detail = "; ".join(failing) or f"HTTP {answer.status_code}"
    return f"not ready ({detail[:157] + '...' if len(detail) > 160 else detail})"


def probe_child(client: httpx.Client, child: Child) -> str:
    try:
        return describe_readiness(client.get(f"http://127.0.0.1:{child.port}/readyz"))
    except httpx.HTTPError:
        return "not answering"


def state_of(description: str) -> str:
    """The coarse state a description is in (details may change within one)."""
    return description.split(" (", 1)[0]


class StateReporter:
    """One console line per state change of a child."""

    def __init__(self, out=None) -> None:
        self.out = out
        self.states: dict[str, str] = {}

    def update(self, name: str, description: str) -> None:
        if self.states.get(name) != state_of(description):
            self.states[name] = state_of(description)
            print(f"{name}: {description}", file=self.out or sys.stdout, flush=True)


class StopRequest:
    """Set by SIGINT/SIGTERM; every wait of the launcher looks at it. A flag,
    not an exception raised from the handler: a signal landing inside a
    finalizer would have its exception swallowed and the stop lost."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: object) -> None:
        self.requested = True


async def _ready(children: list[Child], timeout: float,
                 stop: StopRequest | None = None) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline and not (stop and stop.requested):
            for child in children:
                try:
                    answer = await client.get(f"http://127.0.0.1:{child.port}/readyz")
                    status[child.name] = describe_readiness(answer)
                except httpx.HTTPError as exc:
                    status[child.name] = f"not answering ({type(exc).__name__})"
            if all(s == "ready" for s in status.values()):
                break
            await asyncio.sleep(0.5)
    return status


def run_distributed(settings: Settings, replicas: dict[str, int] | None = None,
                    stack_dir: Path | None = None, keep_stack: bool = False) -> int:
    from . import logs, stack
    from .stack.manager import _pid_path
    from .stack.processes import running_record

    # The console is for the banner and state changes: this process logs
    # warnings only (each child logs at the asked level into its log file).
    logs.configure(settings.log_level if settings.log_level in ("DEBUG", "ERROR", "CRITICAL") else "WARNING")
    stack_dir = stack_dir or settings.data_dir / "stack"
    log_dir = settings.data_dir / "logs"
    # The whole plan, checked before anything starts.
    engine_ports = stack.planned_ports(stack_dir)
    running = {name for name in engine_ports if running_record(_pid_path(Path(stack_dir).resolve(), name))}
    problems = check_plan(plan(settings, {}, replicas or {}, log_dir), settings.host, engine_ports, running)
    if problems:
        raise LaunchError("nothing started: " + "\n".join(problems))

    # SIGTERM stops us like Ctrl-C at any moment (starting engines, starting
    # children, waiting for readiness, running): the finally below cleans up,
    # and a second signal cannot cut the clean-up short.
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: list[Child] = []
    client = httpx.Client(timeout=1.0)
    try:
        _run(settings, replicas, stack_dir, log_dir, children, client, stop)
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
        client.close()
        from .process_file import remove
        remove(settings.data_dir)
        if not keep_stack:
            stack.down(stack_dir)
        print("stopped" + ("" if keep_stack else f" (the engines too: `mocktrade stack up` starts them "
                                                  f"again for verify, token, accounts)"), flush=True)
    return 0


def _run(settings: Settings, replicas: dict[str, int] | None, stack_dir: Path, log_dir: Path,
         children: list[Child], client: httpx.Client, stop: StopRequest) -> None:
    """Engines, children, readiness, banner, then supervise until interrupted.
    `children` is filled as they start, so the caller can always stop them."""
    from . import stack
    from .bootstrap import Resources, ensure_demo_accounts
    from .config import ENGINES_FILE, write_env_file
    from .portcheck import is_free, taken_message

    print(f"starting the engines in {stack_dir} ...", flush=True)
    try:
        engine_env = stack.up(stack_dir)
    except stack.StackError as exc:
        raise LaunchError(f"the engines did not start: {exc}") from None
    if stop.requested:
        return
    write_env_file(settings.data_dir / ENGINES_FILE, engines_file(settings, engine_env))
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

    log_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(settings, engine_env, replicas or {}, log_dir)
    print(f"starting {len(planned)} processes (logs in {log_dir}) ...", flush=True)
    for child in planned:
        if stop.requested:
            return
        children.append(child)
        child.start()
    from .process_file import record_distributed
    # DATA_DIR/processes.json, for `mocktrade status` (again at every restart).
    record_distributed(settings.data_dir, settings.host, children)
    status = asyncio.run(_ready(children, 90, stop))
    if stop.requested:
        return
    base = f"http://{settings.host}:{settings.port}"
    marketdata = next(child for child in children if child.name == "marketdata")
    token = Resources(settings).tokens.issue(settings.demo_users[0])
    print(f"mocktrade (distributed) on {base}\n"
          f"  prices:  ws://{settings.host}:{marketdata.port}/v1/marketdata\n"
          f"  logs:    {log_dir}\n"
          + "".join(f"  {name:12} {state}\n" for name, state in status.items())
          + f"  console: {base}/  (sign in as {settings.demo_users[0]}, password "
            f"{settings.demo_password()})\n"
          + f"  demo token for {settings.demo_users[0]}: {token}", flush=True)

    reporter = StateReporter()
    reporter.states.update({name: state_of(state) for name, state in status.items()})
    blocked: set[str] = set()
    next_poll = time.monotonic() + 2.0
    while not stop.requested:
        for child in children:
            if not child.alive():
                if not is_free(settings.host, child.port):
                    # Restarting would only loop on "address already in use".
                    if child.name not in blocked:
                        blocked.add(child.name)
                        reporter.states[child.name] = "blocked"
                        print(f"{taken_message(settings.host, child.port, child.name)}; "
                              "not restarting it until the port is free", flush=True)
                    continue
                blocked.discard(child.name)
                child.restarts += 1
                reporter.states[child.name] = "restarting"
                print(f"{child.name}: exited ({child.process.returncode}); restarting", flush=True)
                child.start()
                record_distributed(settings.data_dir, settings.host, children)
        if time.monotonic() >= next_poll:
            for child in children:
                if child.alive():
                    reporter.update(child.name, probe_child(client, child))
            next_poll = time.monotonic() + 2.0
        time.sleep(0.5)
