"""The real engines for tests: one stack per test session, on free ports.

Started only when MOCKTRADE_TEST_STACK=1 (CI sets it; MOCKTRADE_TEST_STACK_DIR
names an already running stack to reuse instead); elsewhere a test that
needs them skips and says how to run it. A server that fails to start fails
the tests that need it, it never skips them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ENABLED = os.environ.get("MOCKTRADE_TEST_STACK") == "1"
SKIP_REASON = ("needs the real engines (Kafka, Redis, DynamoDB API, OpenSearch); "
               "run with MOCKTRADE_TEST_STACK=1 to start them (~30 s, first run fetches them)")

PORT_KEYS = ("kafka", "kafka.controller", "redis", "dynamodb", "elasticsearch",
             "elasticsearch.transport")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def real_engines(tmp_path_factory) -> dict[str, str]:
    """MOCKTRADE_* connection settings of a running stack, shared by the session."""
    if not ENABLED:
        pytest.skip(SKIP_REASON)
    from mocktrade import stack

    shared = os.environ.get("MOCKTRADE_TEST_STACK_DIR")
    if shared:
        # A stack kept running between test runs (development): reuse, never stop it.
        yield {**stack.up(shared), "MOCKTRADE_STACK_DIR": shared}
        return
    stack_dir: Path = tmp_path_factory.mktemp("stack")
    env = stack.up(stack_dir, ports=dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)))))
    try:
        yield {**env, "MOCKTRADE_STACK_DIR": str(stack_dir)}
    finally:
        stack.down(stack_dir)
