"""Wake consumers in other processes when a record is appended to the
embedded log, so a job in its own process sees an order at once instead of at
its next fallback poll.

Every process that opens the log binds a Linux abstract-namespace datagram
socket (no path, so no length limit and nothing to clean up on the disk but
a marker) and leaves a marker file named by its pid in `DATA_DIR/wakeups`.
A publish sends the topic's name to every other marker's socket; the receiver
sets the in-process wake-up of that topic. Datagrams are fire-and-forget: a
lost one costs one fallback poll interval, never a record.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("mocktrade.wakeup")

PEERS_REFRESH_SECONDS = 0.5
MAX_TOPIC_BYTES = 256

_instances = itertools.count()


class CrossProcessWakeup:
    def __init__(self, directory: Path, on_topic: Callable[[str], None]):
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._prefix = "\0mocktrade-wake-" + hashlib.sha1(
            str(directory.resolve()).encode()).hexdigest()[:16] + "-"
        self._on_topic = on_topic
        # pid and a counter: several logs of one process each have a socket.
        self._name = f"{os.getpid()}-{next(_instances)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(self._address(self._name))
        self._marker = self._dir / self._name
        self._marker.touch()
        self._peers: list[str] = []
        self._peers_read = 0.0
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _address(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def listen(self) -> None:
        """Start delivering wake-ups on the running loop (idempotent)."""
        if self._reader_loop is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock.fileno(), self._receive)
        self._reader_loop = loop

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_TOPIC_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._on_topic(data.decode(errors="replace"))

    def notify(self, topic: str) -> None:
        """Tell every other process that `topic` has new records."""
        if self._closed:
            return
        data = topic.encode()[:MAX_TOPIC_BYTES]
        for name in self._current_peers():
            try:
                self._sock.sendto(data, self._address(name))
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(name)
            except OSError:
                pass  # a full receiver polls soon anyway

    def _current_peers(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_read > PEERS_REFRESH_SECONDS:
            try:
                names = os.listdir(self._dir)
            except OSError:
                names = []
            self._peers = [n for n in names if n != self._name and n.partition("-")[0].isdigit()]
            self._peers_read = now
        return self._peers

    def _forget(self, name: str) -> None:
        # Nobody is bound there: that log was closed, or its process ended.
        if name in self._peers:
            self._peers.remove(name)
        (self._dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader_loop is not None and not self._reader_loop.is_closed():
            try:
                self._reader_loop.remove_reader(self._sock.fileno())
            except Exception:
                pass
        self._sock.close()
        self._marker.unlink(missing_ok=True)
