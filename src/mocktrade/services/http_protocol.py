"""The HTTP server's own limits (uvicorn's httptools protocol, capped): what a
request may be before the ASGI app sees it. Only the server process imports
this (cli._run_server); the Flink jobs import the services without uvicorn."""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_TARGET_BYTES, envelope


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request target (414) and
    on the headers (431), counted as they arrive so neither is buffered
    beyond its limit (httptools itself has none)."""

    _REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._refusal: tuple[int, str, str, str] | None = None

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_TARGET_BYTES:
            self._refuse(414, "uri_too_long",
                         f"the request target is longer than {MAX_TARGET_BYTES} bytes", "url")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "headers_too_large",
                         f"the headers are larger than {MAX_HEADER_BYTES} bytes in all", "headers")
        if len(self.headers) >= MAX_HEADERS:
            self._refuse(431, "headers_too_large", f"more than {MAX_HEADERS} headers", "headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _refuse(self, status: int, code: str, message: str, field: str) -> None:
        self._refusal = (status, code, message, field)
        raise ValueError(message)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            refusal = getattr(self, "_refusal", None)
            if refusal is not None:
                self._send_refusal(*refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        # A header httptools is still gathering is not yet counted above:
        # bound the bytes of the head however they arrive.
        if getattr(self, "_in_head", False):
            self._head_bytes += len(data)
            if self._head_bytes > MAX_TARGET_BYTES + MAX_HEADER_BYTES + 4096:
                self._send_refusal(431, "headers_too_large",
                                   "the request line and headers are too large", "headers")

    def send_400_response(self, msg: str) -> None:
        """Not HTTP at all (httptools could not parse it): the envelope all the same."""
        self._send_refusal(400, "invalid_http", msg, None)

    def _send_refusal(self, status: int, code: str, message: str, field: str | None) -> None:
        body = envelope(code, message, field)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, self._REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()
