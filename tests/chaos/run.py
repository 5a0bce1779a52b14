"""One chaos run, shared by the CI test and bench/chaos.py: start the
deployment, load it, inject faults, let it heal, check, report."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mocktrade import stack

from .checker import Checker, Verdict
from .deployment import INITIAL_CASH, PROBE_USER, SYMBOLS, Deployment, Probe
from .nemesis import ENGINES, JOBS, KINDS, SERVICES, Fault, Nemesis, label
from .workload import History, Workload
from tests.e2e.conftest import MOCKTRADE


@dataclass
class Report:
    job_engine: str
    started_after: float = 0.0
    nemesis_seconds: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    history: History = field(default_factory=History)
    healed_after: float | None = None
    final_probe: float | None = None
    verdict: Verdict = field(default_factory=Verdict)
    verify_ok: bool = False
    verify_output: str = ""

    def text(self) -> str:
        intents = self.history.intents
        answers: dict[str, int] = {}
        for attempt in self.history.attempts:
            answers[attempt.answer] = answers.get(attempt.answer, 0) + 1
        lines = [
            f"chaos run, jobs on {self.job_engine}: deployment up after {self.started_after:.0f}s, "
            f"nemesis for {self.nemesis_seconds:.0f}s",
            f"orders sent {len(intents)}, acknowledged {len(self.history.acknowledged())}, "
            f"declined {sum(1 for i in intents if i.status not in (None, 202))}, "
            f"indeterminate {sum(1 for i in intents if i.status is None)}; "
            f"cancels {len(self.history.cancels)}; retries {self.history.retries()}",
            "answers per attempt: " + ", ".join(f"{k} {v}" for k, v in sorted(answers.items())),
            "",
            f"{'at s':>6}  {'target':<25} {'fault':<6} {'held s':>6}  {'recovered after s':>17}  note",
        ]
        for f in self.faults:
            recovered = "not in time" if f.recovered_after is None else f"{f.recovered_after:.1f}"
            lines.append(f"{f.at:>6.1f}  {label(f.target):<25} {f.kind:<6} {f.held:>6.1f}  {recovered:>17}  {f.note}")
        lines += [
            "",
            f"healed (every acknowledged order decided, history caught up) "
            f"{'after %.0fs' % self.healed_after if self.healed_after is not None else 'NOT within the wait'}; "
            f"a fresh order went through in "
            f"{'%.1fs' % self.final_probe if self.final_probe is not None else 'NOT in time'}",
            "checker: " + ("OK" if self.verdict.ok else f"{len(self.verdict.problems)} problem(s)")
            + " (" + ", ".join(f"{k} {v}" for k, v in self.verdict.counts.items()) + ")",
            *(f"  - {p}" for p in self.verdict.problems[:40]),
            f"mocktrade verify: {'OK' if self.verify_ok else 'FAILED'}",
        ]
        if not self.verify_ok:
            lines.append(self.verify_output[-3000:])
        return "\n".join(lines)


def chaos_run(root: Path, duration: float, *, users: int = 4, seed: int = 1, job_engine: str = "consumer",
              hold: tuple[float, float] = (1.0, 3.0), recovery_timeout: float = 60.0,
              heal_timeout: float = 240.0, pause: float = 0.25, gap: float = 1.0,
              targets: tuple[str, ...] = SERVICES + JOBS + ENGINES, kinds: tuple[str, ...] = KINDS,
              log=print) -> Report:
    report = Report(job_engine)
    deployment = Deployment(root, tuple(f"chaos{i}" for i in range(1, users + 1)), job_engine)
    deployment.start()
    report.started_after = deployment.started_after
    log(f"deployment up after {deployment.started_after:.0f}s")
    try:
        history = report.history
        tokens = deployment.tokens()
        probe = Probe(deployment, history)
        # Flink jobs start after the gateway answers: minutes for three mini-clusters here.
        if probe.succeeds_within(600 if job_engine == "flink" else 120) is None:
            raise AssertionError("the deployment does not execute orders before any fault:\n"
                                 + deployment.platform.log())
        workload = Workload(deployment.platform.base, tokens, SYMBOLS, history, seed=seed, pause=pause).start()
        nemesis = Nemesis(deployment, probe, seed=seed, hold=hold, recovery_timeout=recovery_timeout,
                          targets=targets, kinds=kinds)
        began = time.monotonic()
        try:
            for fault in nemesis.faults(duration, gap):
                log(f"{fault.at:6.1f}s {label(fault.target)} {fault.kind}: recovered after "
                    f"{fault.recovered_after}s {fault.note}")
        finally:
            report.faults = nemesis.injected
            report.nemesis_seconds = time.monotonic() - began
            workload.stop()
            # Whatever the last fault left behind, every engine runs again.
            stack.up(deployment.stack_dir, list(ENGINES))
        checker = Checker(deployment.platform.base, {**tokens, PROBE_USER: deployment.platform.token(PROBE_USER)},
                          deployment.engine_env(), INITIAL_CASH)
        report.healed_after = _heal(checker, history, heal_timeout)
        # Quiesce: cancel what still rests, so no fill lands between the
        # checker's (or verify's) reads of the store and of the log; each
        # resting order then ends with exactly one final outcome to judge.
        _cancel_open_orders(deployment.platform.base, tokens)
        quiet = _heal(checker, history, heal_timeout, open_allowed=False)
        if report.healed_after is not None and quiet is not None:
            report.healed_after += quiet
        else:
            report.healed_after = None
        report.final_probe = probe.succeeds_within(120)
        probe.close()
        report.verdict = _settled_verdict(checker, history)
        report.verify_ok, report.verify_output = _verify(deployment)
    finally:
        deployment.stop()
    return report


def _cancel_open_orders(base: str, tokens: dict[str, str]) -> None:
    """DELETE /v1/orders for every user, retried until answered."""
    for token in tokens.values():
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
            for _ in range(30):
                try:
                    if http.delete("/v1/orders").status_code < 300:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)


def _heal(checker: Checker, history: History, timeout: float, open_allowed: bool = True) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if not checker.liveness(history, checker.observe(), open_allowed):
                return time.monotonic() - began
        except Exception:  # an engine still starting: look again
            pass
        time.sleep(2)
    return None


def _settled_verdict(checker: Checker, history: History, attempts: int = 5) -> Verdict:
    """Safety problems never go away; derived views (history, analytics) may
    trail the outcomes by a batch: judge again a few times before concluding."""
    for attempt in range(attempts):
        try:
            verdict = checker.check(history, checker.observe())
        except httpx.HTTPError as exc:
            # A read that timed out on a machine under load (seen at load
            # average 100) is no verdict: read everything again.
            if attempt == attempts - 1:
                raise
            print(f"checker read failed ({exc!r}); reading again", flush=True)
            time.sleep(10)
            continue
        if verdict.ok:
            return verdict
        time.sleep(3)
    return verdict


def _verify(deployment: Deployment) -> tuple[bool, str]:
    result = subprocess.run([*MOCKTRADE, "verify", "--wait", "120"], env=deployment.platform.env,
                            capture_output=True, text=True, timeout=300)
    return result.returncode == 0, result.stdout + result.stderr
