"""A Flink 1.20 standalone cluster for tests, from the PyFlink venv's own
distribution (pyflink/bin, lib, opt): one JobManager and TaskManagers that a
test can kill -9 and start again, all on 127.0.0.1 and free ports.

Set up the way the README says a cluster must be: flink-python and the Kafka
connector jars in the cluster's lib/, the MOCKTRADE_* engine settings in the
TaskManagers' environment; the job file is then submitted unchanged with
`flink run -py src/mocktrade/jobs/flink/job.py -pyfs src JOB`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from mocktrade.jobs.flink.provision import flink_runtime
from mocktrade.jobs.flink.service import JOB_FILE, SRC_DIR, site_packages
from tests.e2e.conftest import free_port


class StandaloneFlink:
    def __init__(self, root: Path, env: dict[str, str]):
        runtime = flink_runtime()
        self.python = runtime.python
        self.home = Path(site_packages(runtime.python)) / "pyflink"
        self.root = root
        self.rest_port = free_port()
        for name in ("conf", "lib", "log", "pid"):
            (root / name).mkdir(parents=True, exist_ok=True)
        # The distribution's JVM options (module opens Java 17 needs), then ours.
        java_opts = re.search(r"^\s*all:\s*(--add.*)$", (self.home / "conf" / "config.yaml").read_text(),
                              re.MULTILINE).group(1)
        settings = {
            "env.java.opts.all": java_opts,
            "jobmanager.rpc.address": "127.0.0.1", "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1", "jobmanager.memory.process.size": "1024m",
            "taskmanager.bind-host": "127.0.0.1", "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": 2, "taskmanager.memory.process.size": "1536m",
            "rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1", "rest.port": self.rest_port,
            # A TaskManager killed -9 is noticed in seconds, not Flink's default 50.
            "heartbeat.interval": 1000, "heartbeat.timeout": 5000,
        }
        (root / "conf" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
        for log_conf in (self.home / "conf").glob("log4j*.properties"):
            (root / "conf" / log_conf.name).write_bytes(log_conf.read_bytes())
        jars = [*(self.home / "lib").glob("*.jar"), *(self.home / "opt").glob("flink-python-*.jar"),
                *(Path(url.removeprefix("file://")) for url in runtime.jars)]
        for jar in jars:
            link = root / "lib" / jar.name
            if not link.exists():
                link.symlink_to(jar)
        self.env = {**env, "FLINK_CONF_DIR": str(root / "conf"), "FLINK_LIB_DIR": str(root / "lib"),
                    "FLINK_LOG_DIR": str(root / "log"), "FLINK_PID_DIR": str(root / "pid"),
                    "JAVA_HOME": str(Path(runtime.java).resolve().parent.parent),
                    "PATH": f"{Path(runtime.python).parent}:{os.environ.get('PATH', '')}"}
        self.env.pop("MOCKTRADE_FLINK_JARS", None)
        self.env.pop("VIRTUAL_ENV", None)

    def _script(self, name: str, *args: str) -> None:
        subprocess.run(["bash", str(self.home / "bin" / name), *args], env=self.env, check=True,
                       capture_output=True, timeout=60)

    def rest(self, path: str) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.rest_port}{path}", timeout=5).json()

    def taskmanagers(self) -> int:
        try:
            # While the JobManager starts, REST answers {"errors": [...]}.
            return self.rest("/overview").get("taskmanagers", 0)
        except (httpx.HTTPError, ValueError):
            return 0

    def start(self, timeout: float = 120) -> "StandaloneFlink":
        self._script("jobmanager.sh", "start")
        self.start_taskmanager()
        self._wait(lambda: self.taskmanagers() >= 1, timeout, "no TaskManager registered")
        return self

    def start_taskmanager(self) -> None:
        self._script("taskmanager.sh", "start")

    def kill_taskmanagers(self) -> list[int]:
        """kill -9 every running TaskManager (a machine lost)."""
        killed = []
        for pid_file in (self.root / "pid").glob("*taskexecutor.pid"):
            for pid in map(int, pid_file.read_text().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            pid_file.unlink()
        return killed

    def submit(self, job: str, timeout: float = 240) -> str:
        """`flink run -d -py job.py -pyfs src JOB`: the job id."""
        result = subprocess.run(
            [str(self.home / "bin" / "flink"), "run", "-d", "-m", f"127.0.0.1:{self.rest_port}",
             "-pyclientexec", self.python, "-pyexec", self.python,
             "-py", str(JOB_FILE), "-pyfs", str(SRC_DIR), job],
            env=self.env, capture_output=True, text=True, timeout=timeout)
        found = re.search(r"JobID ([0-9a-f]{32})", result.stdout)
        assert found, f"flink run failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return found.group(1)

    def job(self, job_id: str) -> dict:
        return self.rest(f"/jobs/{job_id}")

    def checkpoints(self, job_id: str) -> dict:
        return self.rest(f"/jobs/{job_id}/checkpoints")

    def stop(self) -> None:
        self.kill_taskmanagers()
        for pid_file in (self.root / "pid").glob("*.pid"):
            for pid in map(int, pid_file.read_text().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    @staticmethod
    def _wait(condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(message)
