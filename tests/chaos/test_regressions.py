"""Bugs the chaos run found, each pinned by a test."""

from __future__ import annotations

import pytest

from mocktrade.adapters.redis import _unavailable_as_port_error
from mocktrade.ports import DependencyUnavailable

UVLOOP_CLOSED = ("unable to perform operation on <TCPTransport closed=True reading=False "
                 "0x55b59daf2e70>; the handler is closed")


def test_a_redis_socket_closed_by_a_restart_is_a_503_not_a_500():
    """Chaos run, Redis kill -9 then restart: redis-py reconnecting wrote on a
    transport uvloop had closed, and the RuntimeError reached the order route
    as a 500. It is the dependency being unavailable (503, retry later). The
    race itself is timing-dependent; this pins the translation."""
    with pytest.raises(DependencyUnavailable) as raised:
        with _unavailable_as_port_error():
            raise RuntimeError(UVLOOP_CLOSED)
    assert raised.value.dependency == "redis"


def test_other_runtime_errors_are_not_hidden():
    with pytest.raises(RuntimeError, match="something else"):
        with _unavailable_as_port_error():
            raise RuntimeError("something else")
