"""The chaos run as a benchmark: the distributed deployment on its own
engines under a steady order load (clients with idempotency keys and
retries) while a nemesis kill -9s, pauses and restarts every service, job
and engine; then the independent checker and `mocktrade verify`. Prints the
faults injected, orders sent and acknowledged, retries and the time to
recover after each fault. Exits non-zero if the checker or verify fails.

    .venv/bin/python bench/chaos.py                       # 10 minutes of faults, consumer-group jobs
    .venv/bin/python bench/chaos.py --duration 300 --jobs flink
    .venv/bin/python bench/chaos.py --duration 120 --hold 2 5 --seed 3

The CI form is tests/chaos/test_chaos.py (the same modules, about a minute
of faults). Everything (engines on free ports, data) lives under --root, a
fresh temporary directory by default, and is stopped at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.nemesis import ENGINES, JOBS, KINDS, SERVICES  # noqa: E402
from tests.chaos.run import chaos_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of faults (default 600)")
    parser.add_argument("--jobs", choices=("consumer", "flink"), default="consumer",
                        help="job runner: Kafka consumer groups or Flink (MOCKTRADE_JOB_ENGINE)")
    parser.add_argument("--users", type=int, default=4, help="clients, one user each")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between a client's requests")
    parser.add_argument("--hold", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"),
                        help="seconds a target stays paused or down (uniform between MIN and MAX)")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between one fault's recovery and the next")
    parser.add_argument("--recovery-timeout", type=float, default=90.0,
                        help="seconds to wait for a probe order after each fault before moving on")
    parser.add_argument("--targets", default=",".join(SERVICES + JOBS + ENGINES),
                        help="comma-separated processes and engines to fault (default: all)")
    parser.add_argument("--kinds", default="kill,pause", help="faults to inject: kill, pause or both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, help="directory for engines and data (default: a fresh temp dir)")
    args = parser.parse_args()
    targets = tuple(t for t in args.targets.split(",") if t)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(targets) - set(SERVICES + JOBS + ENGINES) or set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown target or kind: {', '.join(sorted(unknown))}")
    root = args.root or Path(tempfile.mkdtemp(prefix="mocktrade-chaos-"))
    began = time.monotonic()
    report = chaos_run(root, args.duration, users=args.users, seed=args.seed, job_engine=args.jobs,
                       hold=tuple(args.hold), gap=args.gap, recovery_timeout=args.recovery_timeout,
                       pause=args.pause, targets=targets, kinds=kinds,
                       log=lambda line: print(line, flush=True))
    print()
    print(report.text())
    print(f"\ntotal wall time {time.monotonic() - began:.0f}s")
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report.verdict.ok and report.verify_ok and report.healed_after is not None else 1


if __name__ == "__main__":
    sys.exit(main())
