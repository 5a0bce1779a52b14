"""The WebSocket server protocol (uvicorn's websockets sans-I/O one) with a
direct way out for frames that are already encoded.

A price update goes to every subscriber of its symbol as the same bytes:
Phoenix broadcasts carry no per-client join_ref, server frames are not
masked and the server negotiates no compression (cli._run_server turns
per-message deflate off). Going through ASGI `send` costs a task switch,
an `await` and a frame encoding per client and message; at 1,000 clients
that is most of a core. `DirectFrames.write` puts the encoded frame on the
socket's transport there and then, when nothing else is pending for it.

Only the server process imports this (cli._run_server); under an ASGI test
client the extension is absent and the service falls back to `send`.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .direct_frames import DIRECT_FRAMES


class TransportFrames:
    """services.direct_frames.DirectFrames over one connection's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol):
        self._protocol = protocol

    @staticmethod
    def encode(text: str) -> bytes:
        # Unfragmented, unmasked and uncompressed, as this server sends every frame.
        return Frame(Opcode.TEXT, text.encode("utf-8")).serialize(mask=False, extensions=[])

    def write(self, frame: bytes) -> bool:
        """Write now; False when the connection cannot take it now (not open,
        closing, or its buffer is over the high-water mark): queue it instead."""
        protocol = self._protocol
        if (protocol.disconnected or protocol.close_sent or not protocol.handshake_complete
                or not protocol.writable.is_set() or protocol.conn.state is not State.OPEN
                or protocol.transport.is_closing()):
            return False
        protocol.transport.write(frame)
        return True


class DirectFramesProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        # Compressed frames differ per connection: then everything goes through `send`.
        if scope is not None and not self.config.ws_per_message_deflate:  # no scope: refused
            scope["extensions"][DIRECT_FRAMES] = TransportFrames(self)
