"""Kafka adapters for the contract suites, built from a Backend location.

A location is `<bootstrap servers>|<namespace>` (conftest._namespace): every
topic and consumer group of the test gets the namespace as a prefix, so tests
sharing one broker never see each other's records. The topics and groups a
test session created are deleted when the process exits (best effort; a child
process killed with -9 never gets there, its parent does).
"""

from __future__ import annotations

import atexit
import os
import socket

from mocktrade.adapters.kafka import KafkaEventLog

PARTITIONS = 4
_namespaces: set[str] = set()
_owner_pid = os.getpid()


def parse(location: str) -> tuple[str, str]:
    bootstrap, separator, namespace = location.partition("|")
    if not separator or not bootstrap or not namespace:
        raise ValueError(f"expected '<bootstrap>|<namespace>', got {location!r}")
    return bootstrap, f"{namespace}-"


def kafka_event_log(location: str) -> KafkaEventLog:
    bootstrap, prefix = parse(location)
    if not _namespaces:
        atexit.register(_delete_namespaces, bootstrap)
    _namespaces.add(prefix)
    return KafkaEventLog(bootstrap, topic_prefix=prefix, partitions=PARTITIONS,
                         replication_factor=1, client_id="mocktrade-contract")


def _delete_namespaces(bootstrap: str) -> None:
    if os.getpid() != _owner_pid or not _namespaces or not _answers(bootstrap):
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefixes = tuple(_namespaces)
    try:
        topics = [t for t in admin.list_topics(timeout=5).topics if t.startswith(prefixes)]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=10).values():
                future.exception(timeout=15)
        groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=5).result(10).valid
                  if g.group_id.startswith(prefixes)]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
                future.exception(timeout=15)
    except Exception:  # noqa: BLE001 - cleanup of a shared dev broker, never fatal
        pass


def _answers(bootstrap: str) -> bool:
    """Whether the broker still listens. At exit the session's stack has
    usually stopped it already, and an admin client made then only logs
    refused connections, several a second, until the interpreter is gone."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except (OSError, ValueError):
        return False
