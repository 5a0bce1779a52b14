"""`mocktrade stack up | down | status`: the real engines as local child processes.

Layout of a stack directory::

    stack_dir/
      stack.json        engines and ports of the last `up`
      stack.env         the connection settings, KEY=VALUE, one a line
      fetch.log         what fetching the engines printed (mvn, apt-get, pip)
      <engine>/         config, <engine>.pid, <engine>.log, data/
"""

from __future__ import annotations

import fcntl
import json
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import processes, probes
from .artifacts import ArtifactError
from .engines import DEFAULT_PORTS, ENGINES, HOST, Engine, EngineContext


class StackError(RuntimeError):
    """The stack could not be brought to the asked state."""


@dataclass(frozen=True)
class EngineStatus:
    name: str
    implementation: str
    running: bool
    healthy: bool
    pid: int | None
    ports: dict[str, int]
    detail: str
    rss_kib: int | None
    log: str
    env: dict[str, str] = field(default_factory=dict)


def _engine_names(engines: Iterable[str] | None) -> list[str]:
    names = list(ENGINES) if engines is None else list(dict.fromkeys(engines))
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise StackError(f"unknown engine(s) {unknown}; known: {sorted(ENGINES)}")
    return names


@contextmanager
def _locked(stack_dir: Path) -> Iterator[None]:
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_state(stack_dir: Path) -> dict:
    try:
        return json.loads((stack_dir / "stack.json").read_text())
    except (FileNotFoundError, ValueError):
        return {"engines": {}}


def _save_state(stack_dir: Path, state: dict) -> None:
    tmp = stack_dir / "stack.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(stack_dir / "stack.json")


def _context(stack_dir: Path, engine: Engine, ports: Mapping[str, int], partitions: int) -> EngineContext:
    return EngineContext(
        directory=stack_dir / engine.name,
        ports={key: int(ports[key]) for key in engine.port_keys},
        fetch_log=stack_dir / "fetch.log",
        topic_partitions=partitions,
    )


def _pid_path(stack_dir: Path, name: str) -> Path:
    return stack_dir / name / f"{name}.pid"


def _ports_for(engine: Engine, asked: Mapping[str, int], remembered: Mapping[str, int]) -> dict[str, int]:
    """Asked ports first, then those of this stack's last run, then the defaults."""
    return {key: int(asked.get(key, remembered.get(key, DEFAULT_PORTS[key]))) for key in engine.port_keys}


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(stack_dir: str | Path, engines: Iterable[str] | None = None, *,
       ports: Mapping[str, int] | None = None, topic_partitions: int = 4) -> dict[str, str]:
    """Start the engines not yet running, wait until each answers, return the
    connection settings (MOCKTRADE_* names) of the selected engines.

    ``ports`` maps port keys (see DEFAULT_PORTS) to ports. A running engine is
    left alone, whatever ports were asked: a second ``up`` is a no-op.
    """
    stack_dir = Path(stack_dir).resolve()
    names = _engine_names(engines)
    asked = dict(ports or {})
    unknown_ports = set(asked) - set(DEFAULT_PORTS)
    if unknown_ports:
        raise StackError(f"unknown port key(s) {sorted(unknown_ports)}; known: {sorted(DEFAULT_PORTS)}")
    with _locked(stack_dir):
        state = _load_state(stack_dir)
        contexts: dict[str, tuple[Engine, EngineContext]] = {}
        to_start: list[str] = []
        for name in names:
            engine = ENGINES[name]()
            remembered = state["engines"].get(name, {}).get("ports", {})
            running = processes.running_record(_pid_path(stack_dir, name)) is not None
            chosen = remembered if running and remembered else _ports_for(engine, asked, remembered)
            contexts[name] = (engine, _context(stack_dir, engine, chosen, topic_partitions))
            if not running:
                to_start.append(name)

        _start_and_wait(stack_dir, [contexts[name] for name in to_start])

        for name, (engine, ctx) in contexts.items():
            state["engines"][name] = {"ports": ctx.ports, "implementation": engine.implementation}
        _save_state(stack_dir, state)
        env = {key: value for engine, ctx in contexts.values() for key, value in engine.env(ctx).items()}
        _write_env_file(stack_dir, state)
        return env


def _start_and_wait(stack_dir: Path, items: list[tuple[Engine, EngineContext]]) -> None:
    if not items:
        return
    started: list[str] = []
    try:
        for engine, ctx in items:
            for key, port in ctx.ports.items():
                if probes.tcp_open(HOST, port):
                    from ..portcheck import owner
                    raise StackError(f"{engine.name}: port {port} ({key}) is already in use by {owner(port)}")
        for _engine, ctx in items:
            ctx.directory.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=len(items)) as pool:  # mvn, pip and apt-get at once
            for future in [pool.submit(engine.fetch, ctx) for engine, ctx in items]:
                future.result()
        for engine, ctx in items:
            command = engine.command(ctx)
            processes.spawn(command, cwd=ctx.directory, log_path=ctx.log,
                            pid_path=_pid_path(stack_dir, engine.name), env=engine.child_env())
            started.append(engine.name)
        _wait_until_ready(stack_dir, items)
    except BaseException as exc:  # Ctrl-C included: leave no half-started stack behind
        _stop_all(stack_dir, [(ENGINES[name](), _pid_path(stack_dir, name)) for name in started])
        if isinstance(exc, (ArtifactError, probes.ProbeFailed, OSError)):
            raise StackError(str(exc)) from exc
        raise


def _wait_until_ready(stack_dir: Path, items: list[tuple[Engine, EngineContext]]) -> None:
    begin = time.monotonic()
    pending = {engine.name: (engine, ctx) for engine, ctx in items}
    while pending:
        for name, (engine, ctx) in list(pending.items()):
            if processes.running_record(_pid_path(stack_dir, name)) is None:
                raise StackError(f"{name} exited during start-up; last lines of {ctx.log}:\n{_log_tail(ctx.log)}")
            try:
                engine.probe(ctx)
                engine.after_ready(ctx)
            except probes.ProbeFailed as exc:
                if time.monotonic() - begin > engine.startup_timeout:
                    raise StackError(
                        f"{name} did not become healthy within {engine.startup_timeout:.0f}s "
                        f"({exc}); last lines of {ctx.log}:\n{_log_tail(ctx.log)}") from exc
                continue
            (ctx.directory / "ready-after-seconds").write_text(f"{time.monotonic() - begin:.2f}\n")
            del pending[name]
        if pending:
            time.sleep(0.25)


def _stop_all(stack_dir: Path, items: list[tuple[Engine, Path]]) -> list[str]:
    """SIGTERM every engine at once, then wait; SIGKILL whatever outlives its grace."""
    live = [(engine, path, record) for engine, path in items
            if (record := processes.running_record(path)) is not None]
    for _engine, _path, record in live:
        processes.signal_group(record, signal.SIGTERM)
    begin = time.monotonic()
    for engine, path, record in live:
        while processes.is_alive(record) and time.monotonic() - begin < engine.stop_grace:
            time.sleep(0.1)
        if processes.is_alive(record):
            processes.signal_group(record, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while processes.is_alive(record) and time.monotonic() < deadline:
                time.sleep(0.05)
        if processes.is_alive(record):
            raise StackError(f"{engine.name} (pid {record.pid}) survived SIGKILL")
        path.unlink(missing_ok=True)
    return [engine.name for engine, _path, _record in live]


def down(stack_dir: str | Path, engines: Iterable[str] | None = None) -> list[str]:
    """Stop the engines (all by default); returns the names of those that were running."""
    stack_dir = Path(stack_dir).resolve()
    names = _engine_names(engines)
    if not stack_dir.exists():
        return []
    with _locked(stack_dir):
        return _stop_all(stack_dir, [(ENGINES[name](), _pid_path(stack_dir, name)) for name in names])


def status(stack_dir: str | Path, engines: Iterable[str] | None = None) -> list[EngineStatus]:
    """Each engine: running or not, pid, ports, whether it answers its health check, memory."""
    stack_dir = Path(stack_dir).resolve()
    state = _load_state(stack_dir)
    report = []
    for name in _engine_names(engines):
        engine = ENGINES[name]()
        ports = _ports_for(engine, {}, state["engines"].get(name, {}).get("ports", {}))
        ctx = _context(stack_dir, engine, ports, 4)
        record = processes.running_record(_pid_path(stack_dir, name)) if stack_dir.exists() else None
        healthy, detail = False, "stopped"
        if record is not None:
            try:
                detail, healthy = engine.probe(ctx), True
            except probes.ProbeFailed as exc:
                detail = str(exc)
        report.append(EngineStatus(
            name=name, implementation=engine.implementation, running=record is not None,
            healthy=healthy, pid=record.pid if record else None, ports=ports, detail=detail,
            rss_kib=processes.rss_kib(record) if record else None, log=str(ctx.log),
            env=engine.env(ctx)))
    return report


def planned_ports(stack_dir: str | Path, engines: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """engine -> {port key: port} that `up` would use (or uses, if running); no probing."""
    stack_dir = Path(stack_dir).resolve()
    state = _load_state(stack_dir)
    return {name: _ports_for(ENGINES[name](), {}, state["engines"].get(name, {}).get("ports", {}))
            for name in _engine_names(engines)}


def connection_env(stack_dir: str | Path, engines: Iterable[str] | None = None) -> dict[str, str]:
    """The MOCKTRADE_* connection settings of a stack, from its last `up` (or the defaults)."""
    stack_dir = Path(stack_dir).resolve()
    state = _load_state(stack_dir)
    env: dict[str, str] = {}
    for name in _engine_names(engines):
        engine = ENGINES[name]()
        ports = _ports_for(engine, {}, state["engines"].get(name, {}).get("ports", {}))
        env.update(engine.env(_context(stack_dir, engine, ports, 4)))
    return env


def _write_env_file(stack_dir: Path, state: dict) -> None:
    lines = []
    for name in ENGINES:
        if name in state["engines"]:
            engine = ENGINES[name]()
            ctx = _context(stack_dir, engine, state["engines"][name]["ports"], 4)
            lines += [f"{key}={value}" for key, value in engine.env(ctx).items()]
    (stack_dir / "stack.env").write_text("\n".join(lines) + "\n")
