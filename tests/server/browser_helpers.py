"""Helpers of the browser tests: a real uvicorn server in a thread, Chromium, screenshots.

- :class:`LiveServer` runs ``create_app(state)`` under uvicorn on a free loopback port in a
  background thread (the app's lifespan runs; stop it with :meth:`LiveServer.stop`).
- :data:`CHROMIUM` is Debian's Chromium; tests skip when it is missing (never downloaded).
- :func:`save_screenshot` keeps a PNG in the test's tmp dir and copies it to
  ``$ERPOZ_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from erpoz.server import ServerState, create_app

CHROMIUM = "/usr/bin/chromium"


def chromium_missing() -> bool:
    return not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``create_app(state)`` served by uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(state),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="erpoz-live", daemon=True)

    def start(self, timeout: float = 15.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def save_screenshot(page: Any, directory: Path, name: str) -> Path:
    """A full-page PNG in ``directory`` (and in ``$ERPOZ_ARTIFACTS`` when set)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top of the shot
    page.screenshot(path=str(target), full_page=True)
    extra = os.environ.get("ERPOZ_ARTIFACTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, Path(extra) / target.name)
    return target
