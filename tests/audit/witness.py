"""A witness for tests: a real HTTP server on loopback that keeps the checkpoints POSTed to
it (or refuses them with ``status``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Witness:
    """A tiny witness: keeps every checkpoint POSTed to it, or answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 201
        witness = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if witness.status < 300:
                    witness.received.append(json.loads(body))
                self.send_response(witness.status)
                self.end_headers()
                self.wfile.write(b"kept" if witness.status < 300 else b"no room")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/checkpoints"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
