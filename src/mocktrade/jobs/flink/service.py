"""`mocktrade job NAME --engine flink`: a job on a local Flink mini-cluster.

This process (project venv) is what the launcher and operators see: it
answers /healthz and /readyz like any job process and, for persistence with
embedded analytics, owns the chDB directory and serves it over HTTP (the
query service and the Flink job's operators both reach it there: chDB allows
one owning process, and chDB does not install next to PyFlink's pinned
pyarrow/pandas anyway). Its one background task runs the job file in the
PyFlink venv and, whenever that process ends (the JVM killed, a crash), runs
it again from the newest retained checkpoint, with a growing pause between
attempts; Flink's own restart strategy handles failures inside a running job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from pathlib import Path

from ...bootstrap import ROLES, Process, Resources, add_analytics_owner
from ...config import Settings
from ...job_process import die_with_parent
from .options import FlinkJobOptions, latest_checkpoint
from .provision import flink_runtime

log = logging.getLogger("mocktrade.flink")

JOB_FILE = Path(__file__).with_name("job.py")
SRC_DIR = Path(__file__).resolve().parents[3]


def work_dir(settings: Settings, job: str) -> Path:
    path = Path(settings.data_dir).resolve() / "flink" / job
    path.mkdir(parents=True, exist_ok=True)
    return path


def site_packages(python: str) -> str:
    """The venv's site-packages: Python run embedded in the JVM (thread mode)
    starts from the base interpreter's paths, not the venv's."""
    return str(next((Path(python).parent.parent / "lib").glob("python3*/site-packages")))


def job_environment(job: str, settings: Settings, python: str, jars: tuple[str, ...],
                    restore: str | None, analytics_url: str, jvm_args: str = "") -> dict[str, str]:
    env = {**os.environ,
           "PYTHONPATH": f"{SRC_DIR}:{site_packages(python)}",
           "FLINK_LOG_DIR": str(work_dir(settings, job) / "log"),
           "MOCKTRADE_DATA_DIR": str(Path(settings.data_dir).resolve()),
           "MOCKTRADE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "MOCKTRADE_REDIS_URL": settings.redis_url,
           "MOCKTRADE_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint,
           "MOCKTRADE_ELASTICSEARCH_URL": settings.elasticsearch_url,
           "MOCKTRADE_CLICKHOUSE_URL": settings.clickhouse_url,
           "MOCKTRADE_ANALYTICS_URL": analytics_url,
           "MOCKTRADE_TABLE_PREFIX": settings.table_prefix,
           "MOCKTRADE_FLINK_JARS": ";".join(jars),
           "MOCKTRADE_FLINK_RESTORE": restore or "",
           "MOCKTRADE_FLINK_JVM_PID_FILE": str(work_dir(settings, job) / "jvm.pid")}
    env.pop("VIRTUAL_ENV", None)
    # PyFlink's gateway passes JVM_ARGS to the JVM it starts (the mini-cluster).
    env["JVM_ARGS"] = jvm_args
    if env.get("MOCKTRADE_FLINK_METRICS_PORT"):
        # FLINK_HOME named: else PyFlink sets FLINK_LIB_DIR to its own lib/.
        env["FLINK_HOME"] = str(Path(site_packages(python)) / "pyflink")
        env["FLINK_LIB_DIR"] = str(lib_with_prometheus_reporter(settings, job, python))
    return env


def lib_with_prometheus_reporter(settings: Settings, job: str, python: str) -> Path:
    """PyFlink's lib/ plus its Prometheus reporter, as links in the job's work dir.

    The reporter ships in pyflink/plugins/metrics-prometheus, but the local
    mini-cluster loads no plugins (it logs "Available factories: []"); it
    finds reporter factories on its class path, which PyFlink's gateway
    makes from FLINK_LIB_DIR (the job's JVM, with its operators' Python
    metrics, tried by hand: served as flink_taskmanager_job_task_operator_*). (A cluster started by Flink's scripts, or the official
    image, loads the plugin as it is.)
    """
    pyflink = Path(site_packages(python)) / "pyflink"
    lib = work_dir(settings, job) / "lib"
    lib.mkdir(exist_ok=True)
    jars = [*(pyflink / "lib").glob("*.jar"), *(pyflink / "plugins" / "metrics-prometheus").glob("*.jar")]
    wanted = {jar.name for jar in jars}
    for stale in lib.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for jar in jars:
        link = lib / jar.name
        if not link.exists():
            link.symlink_to(jar)
    return lib


class FlinkJobRunner:
    """Runs the job file, again and again, each time from the last checkpoint."""

    def __init__(self, job: str, settings: Settings, analytics_url: str = ""):
        self.job, self.settings, self.analytics_url = job, settings, analytics_url
        self.options = FlinkJobOptions.from_env(job, settings)
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.started_wall = 0.0

    def state(self) -> str:
        """ok once the current run completed a checkpoint (so it is processing)."""
        if self.process is None or self.process.returncode is not None:
            return "not running"
        directory = self.options.checkpoint_dir
        if not directory.startswith("file:"):
            return "ok"
        root = Path(directory.removeprefix("file://").removeprefix("file:"))
        done = any(m.stat().st_mtime >= self.started_wall for m in root.glob("*/chk-*/_metadata"))
        return "ok" if done else "starting (no checkpoint yet)"

    async def run(self) -> None:
        runtime = await asyncio.to_thread(flink_runtime, work_dir(self.settings, self.job) / "provision.log")
        self._kill_orphans()
        pause = 1.0
        while True:
            began = time.monotonic()
            code = await self._run_once(runtime)
            log.warning("flink job ended; starting it again from its last checkpoint",
                        extra={"job": self.job, "exitCode": code})
            if time.monotonic() - began > 60:
                pause = 1.0
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 30.0)

    async def _run_once(self, runtime) -> int:
        restore = self.options.restore_from or latest_checkpoint(self.options.checkpoint_dir)
        (work_dir(self.settings, self.job) / "jvm.pid").unlink(missing_ok=True)  # this run writes its own
        env = job_environment(self.job, self.settings, runtime.python, runtime.jars, restore, self.analytics_url,
                              self.options.jvm_args)
        out = open(work_dir(self.settings, self.job) / "flink.log", "ab")
        self.starts += 1
        self.started_wall = time.time()
        log.info("starting flink job", extra={"job": self.job, "restoreFrom": restore})
        # Its own session (stop() signals the group: client, JVM, Python
        # workers), and killed by the kernel when this process dies, even by
        # kill -9: its JVM (which exits when the client's pipe closes) then no
        # longer consumes and competes for the CPU while `up` starts this
        # service again and the new run restores the last checkpoint.
        self.process = await asyncio.create_subprocess_exec(
            runtime.python, str(JOB_FILE), self.job, env=env, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        (work_dir(self.settings, self.job) / "client.pid").write_text(str(self.process.pid))
        try:
            return await self._wait_for_end()
        except asyncio.CancelledError:
            self.stop()
            raise
        finally:
            out.close()
            self._kill_leftover_jvm()

    async def _wait_for_end(self) -> int:
        """The client's exit code; a client whose JVM died (killed, crashed)
        is ended too: it need not notice soon (its Python side may linger)."""
        while self.process.returncode is None:
            await asyncio.sleep(0.5)
            pid = self._our_pid("jvm.pid")
            if pid is None and (work_dir(self.settings, self.job) / "jvm.pid").exists():
                log.warning("flink JVM gone; ending its client", extra={"job": self.job})
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
        return await self.process.wait()

    def stop(self) -> None:
        """Stop the client and its mini-cluster JVM (same process group)."""
        if self.process and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._kill_leftover_jvm()

    def _kill_orphans(self) -> None:
        """A run left by a service that was killed -9 would consume beside ours."""
        self._kill_ours("client.pid", group=True)
        self._kill_leftover_jvm()

    def _kill_leftover_jvm(self) -> None:
        self._kill_ours("jvm.pid", group=False)

    def _our_pid(self, pid_name: str) -> int | None:
        """The live process in the pid file if it is still one of this job's
        (its environment names this job's pid file: a reused pid is not)."""
        directory = work_dir(self.settings, self.job)
        mark = f"MOCKTRADE_FLINK_JVM_PID_FILE={directory / 'jvm.pid'}".encode()
        try:
            pid = int((directory / pid_name).read_text())
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except (OSError, ValueError):
            pass
        return None

    def _kill_ours(self, pid_name: str, group: bool) -> None:
        pid = self._our_pid(pid_name)
        if pid is not None:
            try:
                (os.killpg if group else os.kill)(pid, signal.SIGKILL)
            except OSError:
                pass


def flink_job_process(job: str, settings: Settings) -> Process:
    """`mocktrade job JOB --engine flink` as a bootstrap.Process."""
    owns_analytics = job == "persistence" and not settings.clickhouse_url
    analytics_url = ""
    if owns_analytics:
        analytics_url = settings.analytics_url or f"http://{settings.host}:{settings.port}"
    resources = Resources(settings, owns_analytics=True)
    roles = ROLES[job] - ({"analytics"} if job == "execution" else set())
    process = Process(job, resources, roles)
    runner = FlinkJobRunner(job, settings, analytics_url)
    process.background(f"flink-{job}-job", runner.run)

    async def stop() -> None:
        runner.stop()
    process.on_start(_noop, stop)
    if owns_analytics:
        add_analytics_owner(process)
    base_readiness = process.readiness

    async def readiness() -> dict[str, str]:
        checks = await base_readiness()
        checks[f"flink-{job}"] = runner.state()
        return checks
    process.readiness = readiness
    return process


async def _noop() -> None:
    return None
