"""The stack suite starts the real engines (Kafka, Redis, DynamoDB API, OpenSearch):
slow, so it runs only when MOCKTRADE_TEST_STACK=1."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "stack: starts the real engines of the distributed mode (MOCKTRADE_TEST_STACK=1)")
