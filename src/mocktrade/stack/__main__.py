"""python -m mocktrade.stack up|down|status|env|kafka [--dir DIR] [--engines a,b] [--port key=N ...]

`kafka TOOL [ARGS...]` runs one of Kafka's command-line tools (console-consumer,
consumer-groups, topics, ...) against the stack's broker; see kafka_tools.py.

The front of `mocktrade stack` (and of python -m mocktrade.stack).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from . import DEFAULT_PORTS, ENGINES, ArtifactError, StackError, connection_env, down, status, up


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports = {}
    for value in values:
        key, _, port = value.partition("=")
        if key not in DEFAULT_PORTS or not port.isdigit():
            raise SystemExit(f"--port wants KEY=PORT with KEY in {sorted(DEFAULT_PORTS)}, got {value!r}")
        ports[key] = int(port)
    return ports


def _kafka_tool(argv: list[str]) -> int:
    """`kafka [--dir DIR] TOOL [ARGS...]`: everything after TOOL goes to the tool."""
    from pathlib import Path

    from . import kafka_tools

    stack_dir = ".mocktrade/stack"
    while argv and argv[0].startswith("--dir"):
        if argv[0] == "--dir" and len(argv) > 1:
            stack_dir, argv = argv[1], argv[2:]
        elif argv[0].startswith("--dir="):
            stack_dir, argv = argv[0].split("=", 1)[1], argv[1:]
        else:
            break
    if not argv or argv[0] in ("-h", "--help"):
        print(kafka_tools.usage(), file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else 2
    tool, args = argv[0], argv[1:]
    try:
        kafka = status(stack_dir, ["kafka"])[0]
        if not kafka.healthy:
            raise StackError(f"kafka is not running in {Path(stack_dir).resolve()} ({kafka.detail}): "
                             f"start it with `mocktrade stack up`")
        return kafka_tools.run(Path(stack_dir).resolve(), tool, args, kafka.env["MOCKTRADE_KAFKA_BOOTSTRAP"])
    except (kafka_tools.ToolError, ArtifactError) as exc:
        raise StackError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "kafka":
        try:
            return _kafka_tool(argv[1:])
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(prog="python -m mocktrade.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status", "env", "kafka"),
                        help="kafka TOOL [ARGS...]: one of Kafka's command-line tools against the stack")
    parser.add_argument("--dir", default=".mocktrade/stack", help="stack directory (default .mocktrade/stack)")
    parser.add_argument("--engines", help=f"comma-separated subset of {','.join(ENGINES)}")
    parser.add_argument("--port", action="append", default=[], metavar="KEY=PORT",
                        help=f"override a port; keys: {', '.join(DEFAULT_PORTS)}")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    engines = args.engines.split(",") if args.engines else None
    try:
        if args.action == "up":
            begin = time.monotonic()
            env = up(args.dir, engines, ports=_parse_ports(args.port))
            print("\n".join(f"{key}={value}" for key, value in env.items()))
            print(f"# stack ready in {time.monotonic() - begin:.1f}s", file=sys.stderr)
        elif args.action == "down":
            stopped = down(args.dir, engines)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.action == "env":
            print("\n".join(f"{key}={value}" for key, value in connection_env(args.dir, engines).items()))
        else:
            report = status(args.dir, engines)
            if args.json:
                print(json.dumps([asdict(item) for item in report], indent=2))
            else:
                for item in report:
                    state = "healthy" if item.healthy else ("running" if item.running else "stopped")
                    ports = " ".join(f"{k}={v}" for k, v in item.ports.items())
                    memory = f"{item.rss_kib // 1024} MiB" if item.rss_kib else "-"
                    print(f"{item.name:14} {state:8} pid={item.pid or '-':<8} {ports:40} rss={memory:9} {item.detail}")
            return 0 if all(item.healthy for item in report) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
