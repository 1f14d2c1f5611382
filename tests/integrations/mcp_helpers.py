"""Plumbing for the MCP tests: real MCP servers in subprocesses, project files that name them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER = HERE / "mcp_servers.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until the server accepts connections (or its process ended, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s}s")


@contextmanager
def http_calc_server(sent: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The test MCP server over streamable HTTP, in its own process: (url, process)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        env={**os.environ, "MCP_SENT": str(sent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.terminate()
        proc.wait(10)


def stdio_yaml(sent: Path, name: str = "calc", extra: str = "") -> str:
    """The ``mcp`` entry of a project file for the test server over stdio."""
    return (
        f"  {name}:\n"
        f"    command: {json.dumps(sys.executable)}\n"
        f"    args: [{json.dumps(str(SERVER))}]\n"
        f"    env: {{MCP_SENT: {json.dumps(str(sent))}}}\n"
        f"{extra}"
    )


def sent_lines(sent: Path) -> list[dict[str, Any]]:
    """What the server's ``send`` tool carried out, in order."""
    if not sent.exists():
        return []
    return [json.loads(line) for line in sent.read_text(encoding="utf-8").splitlines()]
