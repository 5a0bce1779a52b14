"""The API contract: a property-based fuzzer (schemathesis, every check, all
phases: examples, coverage, fuzzing, stateful) against /v1/openapi.json of
the embedded platform, with alice's bearer token. Any failure fails the test,
with the fuzzer's report (and its reproduction commands) as the message.

Bounded for CI: MOCKTRADE_CONTRACT_EXAMPLES cases per operation and phase
(default 60), a fixed seed unless MOCKTRADE_CONTRACT_SEED says otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import RunningPlatform

pytestmark = pytest.mark.e2e

HOOKS = Path(__file__).with_name("contract_hooks.py")
ST = Path(sys.executable).with_name("st")
EXAMPLES = os.environ.get("MOCKTRADE_CONTRACT_EXAMPLES", "60")
SEED = os.environ.get("MOCKTRADE_CONTRACT_SEED", "20261201")

# Routes that other work is adding; they join this run once their documents
# carry their constraints (see the report of the run that found them).

# 402 and 422 answer well-formed orders the account cannot afford or cover,
# and cancels of final orders: the state's verdict, not the request's form.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "402", "403", "404", "409", "422", "429"]
"""


@pytest.fixture(scope="module")
def contract_platform(tmp_path_factory):
    # A rate limit the fuzzer's workers do not reach, so that requests get to
    # the handlers (429 itself is covered by tests/service).
    running = RunningPlatform(tmp_path_factory.mktemp("contract") / "data",
                              env={"MOCKTRADE_RATE_LIMIT_PER_SECOND": "100000",
                                   "MOCKTRADE_RATE_LIMIT_BURST": "100000"}).start()
    yield running
    running.stop()


def test_document_describes_the_error_envelope(contract_platform):
    document = httpx.get(f"{contract_platform.base}/v1/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"] or "insufficient" in str(
                operation["responses"]["422"]).lower() or "final" in str(
                operation["responses"]["422"]), (method, path)
            for status, answer in operation["responses"].items():
                if status[0] in "45":
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)
    unknown = httpx.get(f"{contract_platform.base}/v1/nowhere")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong = httpx.put(f"{contract_platform.base}/v1/orders")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "DELETE, GET, POST"


def test_fuzzer_finds_no_failure(contract_platform, tmp_path):
    token = contract_platform.token("alice")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS),
           "MOCKTRADE_CONTRACT_BASE": contract_platform.base,
           "MOCKTRADE_CONTRACT_TOKEN": token}
    command = [str(ST), "--config-file", str(config), "run",
               f"{contract_platform.base}/v1/openapi.json",
               "--checks", "all", "--header", f"Authorization: Bearer {token}",
               "--max-examples", EXAMPLES, "--seed", SEED,
               # One worker: hypothesis describes filters with ast.parse, which
               # CPython 3.11 before 3.11.9 cannot run in several threads at
               # once ("AST constructor recursion depth mismatch").
               "--workers", "1",
               "--request-timeout", "10", "--generation-database", "none",
               "--no-color", "--output-truncate", "false"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    report = result.stdout[-20000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    print(result.stdout[-3000:])  # the summary, for -s or -rP
    assert "No issues found" in report or " passed" in report, report
