"""The PyFlink runtime: its own virtualenv and the Kafka connector jars.

Both are built once and then reused while a stamp file records the hash of
the recipe they were made from (infra/flink/requirements.txt, infra/flink/
pom.xml). Two processes provisioning at once (the execution and persistence
jobs of `up --distributed`) take turns on a file lock.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ...stack.artifacts import ArtifactError, _digest, _run, infra_dir, java_executable


@dataclass(frozen=True)
class FlinkRuntime:
    python: str          # the PyFlink venv's interpreter
    jars: tuple[str, ...]  # file:// URLs of the connector jars
    java: str


def flink_dir() -> Path:
    return infra_dir() / "flink"


def flink_runtime(log: Path | None = None) -> FlinkRuntime:
    """The PyFlink venv and connector jars, building whichever is stale."""
    target = flink_dir() / "target"
    target.mkdir(parents=True, exist_ok=True)
    log = log or target / "provision.log"
    with open(target / "provision.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        python = _venv(log)
        jars = _jars(log)
    return FlinkRuntime(python=python, jars=jars, java=java_executable())


def _venv(log: Path) -> str:
    root = flink_dir()
    requirements = root / "requirements.txt"
    venv = root / "target" / "venv"
    python = venv / "bin" / "python"
    stamp = root / "target" / "venv.sha256"
    digest = _digest([requirements])
    if not (python.exists() and stamp.is_file() and stamp.read_text().strip() == digest):
        if venv.exists():
            shutil.rmtree(venv)
        base_python = getattr(sys, "_base_executable", None) or sys.executable
        _run([base_python, "-m", "venv", "--without-pip", str(venv)], "python -m venv (pyflink)", log)
        # The caller's pip installs into it (no ensurepip: it takes seconds).
        _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
              "--disable-pip-version-check", "-r", str(requirements)], "pip install (pyflink)", log)
        stamp.write_text(digest + "\n")
    return str(python)


def _jars(log: Path) -> tuple[str, ...]:
    root = flink_dir()
    pom = root / "pom.xml"
    lib = root / "target" / "lib"
    stamp = root / "target" / "lib.sha256"
    digest = _digest([pom])
    if not (lib.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest):
        mvn = shutil.which("mvn")
        if not mvn:
            raise ArtifactError("no mvn on PATH: Maven fetches Flink's Kafka connector")
        if lib.exists():
            shutil.rmtree(lib)
        _run([mvn, "-q", "-B", "-f", str(pom), "package"], "mvn package (flink connector)", log)
        stamp.write_text(digest + "\n")
    jars = tuple(sorted(f"file://{jar.resolve()}" for jar in lib.glob("*.jar")))
    if not jars:
        raise ArtifactError(f"no connector jars in {lib}")
    return jars
