"""The Docker deployment files stay valid and in step with the configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_file_is_valid():
    command = compose_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("docker compose is missing; .ci/run installs docker-compose")
        pytest.skip("needs docker compose or docker-compose (apt-get install docker-compose)")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_sets_only_settings_that_exist():
    config = (ROOT / "src/mocktrade/config.py").read_text()
    known = set(re.findall(r'_(?:env|number)\("([A-Z_]+)"', config))
    used = set(re.findall(r"MOCKTRADE_([A-Z_]+):", (ROOT / "docker-compose.yml").read_text()))
    assert used and used <= known, used - known


def test_compose_runs_every_service_and_job():
    text = (ROOT / "docker-compose.yml").read_text()
    for service in ("gateway", "marketdata", "ingestion", "feed"):
        assert f'"serve", "{service}"' in text
    for job in ("execution", "persistence"):
        assert f'"job", "{job}"' in text
