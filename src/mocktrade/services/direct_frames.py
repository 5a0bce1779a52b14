"""What the WebSocket server may offer the app beside ASGI `send`: a way to
write frames that are already encoded straight to a connection. The server
side is services/ws_protocol.py (uvicorn only); this module stays free of
uvicorn so the services import it anywhere (the Flink jobs do)."""

from __future__ import annotations

from typing import Protocol

DIRECT_FRAMES = "mocktrade.direct_frames"  # the key in the ASGI scope's "extensions"


class DirectFrames(Protocol):
    def encode(self, text: str) -> bytes:
        """The wire frame of one text message; the same for every connection."""

    def write(self, frame: bytes) -> bool:
        """Write now; False when the connection cannot take it now (queue it instead)."""
