"""How ``erpoz serve`` listens: a socket bound before anything says it serves, and uvicorn's
httptools protocol with bounded request heads.

Request heads are read before any route, so before any API key is checked: without a bound,
one client could send a header of many megabytes, which the parser gathers by repeated
concatenation on the event loop, stalling every other client for seconds. Here a head larger
than ``max_bytes`` (request line and headers) or with more than ``max_headers`` header lines is
answered ``431 Request Header Fields Too Large`` and the connection is closed, as soon as the
excess arrives, before the parser sees it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "bind_socket",
    "bounded_http",
]

#: The request line and headers of one request, in bytes (nginx: 4 × 8 KiB; Node.js: 16 KiB).
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
#: Header lines of one request (Python's http.client reads at most 100).
DEFAULT_MAX_HEADERS = 100

_HEAD_END = b"\r\n\r\n"


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, as uvicorn binds it; ``OSError`` when the
    address is taken or cannot be bound (``port=0``: a free port, ``getsockname()`` says
    which)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _refusal(message: str) -> bytes:
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": "header_too_large"}}
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


def bounded_http(
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES, max_headers: int = DEFAULT_MAX_HEADERS
) -> type[asyncio.Protocol] | str:
    """The ``http`` protocol to give uvicorn: httptools with the bounds above; ``"h11"``
    (which bounds a head by ``h11_max_incomplete_event_size``, answering 400) when httptools
    is not installed."""
    try:
        import httptools  # noqa: F401 - whether it is installed; _bounded uses it
        import uvicorn.protocols.http.httptools_impl  # noqa: F401
    except ImportError:
        return "h11"
    return _bounded(max_bytes, max_headers)


def _bounded(max_bytes: int, max_headers: int) -> type[asyncio.Protocol]:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    too_big = f"the request head is over the limit of {max_bytes} bytes"
    too_many = f"the request has more than {max_headers} header lines"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, counting each request's head as it arrives."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # between requests, bytes belong to the next head
            self._head_bytes = 0
            self._tail = b""  # the last bytes seen, for a CRLFCRLF split across reads
            self._refused = False

        def _refuse(self, why: str) -> None:
            self._refused = True
            client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.warning("%s431: %s", client, why)
            self.transport.write(_refusal(why))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                end = (self._tail + data).find(_HEAD_END)
                self._head_bytes += len(data) if end < 0 else end + 4 - len(self._tail)
                self._tail = (self._tail + data)[-3:]
                if self._head_bytes > max_bytes:
                    self._refuse(too_big)
                    return
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                if self._refused:  # on_header refused it and raised to stop the parser
                    return
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()

        def on_header(self, name: bytes, value: bytes) -> None:
            if len(self.headers) >= max_headers:
                self._refuse(too_many)
                raise ValueError("too many header lines")  # stops the parser
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0
            self._tail = b""

    return BoundedHttpToolsProtocol
