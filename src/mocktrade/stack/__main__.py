"""python -m mocktrade.stack up|down|status|env [--dir DIR] [--engines a,b] [--port key=N ...]

A stand-alone front for the functions in mocktrade.stack, until the
`mocktrade stack` sub-command hooks them in.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from . import DEFAULT_PORTS, ENGINES, StackError, connection_env, down, status, up


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports = {}
    for value in values:
        key, _, port = value.partition("=")
        if key not in DEFAULT_PORTS or not port.isdigit():
            raise SystemExit(f"--port wants KEY=PORT with KEY in {sorted(DEFAULT_PORTS)}, got {value!r}")
        ports[key] = int(port)
    return ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mocktrade.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status", "env"))
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
