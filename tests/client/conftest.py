"""A real ``erpoz serve`` (a child process, over sockets) for the client tests.

``served`` (one per test module): the server exposing the flows of ``_flows.py``, with the API
key ``KEY`` (tenant ``acme``) and a project file whose model ``writer`` is erpoz's local
OpenAI-compatible stub server (running in this process), so steps stream real tokens over
HTTP. Its ``url``, ``store`` path and the ``stub`` are attributes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from erpoz.testing import OpenAIStubServer

HERE = Path(__file__).resolve().parent
KEY = "acme-key-0123456789abcdef"
OTHER_KEY = "globex-key-0123456789abcdef"
FLOWS = ("echo", "review", "gated", "fail", "story", "lcstory")


@dataclass
class Served:
    url: str
    store: Path
    workdir: Path
    stub: OpenAIStubServer
    proc: subprocess.Popen[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    workdir: Path, flows: list[str], config: str, keys: str, extra_env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[str]]:
    """Start ``erpoz serve`` in ``workdir`` and wait until it answers."""
    port = free_port()
    (workdir / "erpoz.yaml").write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERPOZ_", "OPENAI_"))}
    env.update(
        ERPOZ_API_KEYS=keys,
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), env.get("PYTHONPATH", "")]),
        **(extra_env or {}),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpoz.cli.serve",
            *flows,
            "--port",
            str(port),
            "--store",
            str(workdir / "served.db"),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"erpoz serve did not start: {proc.communicate()}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("served")
    with OpenAIStubServer() as stub:
        config = (
            "models:\n"
            "  writer:\n"
            "    provider: openai\n"
            f"    params: {{base_url: '{stub.base_url}', model: stub, api_key: '',"
            " max_retries: 0}\n"
            "    price: {input: 1.0, output: 2.0}\n"
            "  lc-writer:\n"
            "    provider: langchain\n"
            "    params:\n"
            "      factory: langchain_openai:ChatOpenAI\n"
            f"      kwargs: {{base_url: '{stub.base_url}', api_key: sk-local, model: stub,"
            " max_retries: 0}\n"
        )
        url, proc = serve(
            workdir,
            [f"{HERE / '_flows.py'}:{name}" for name in FLOWS],
            config,
            f"{KEY}=acme:ann,{OTHER_KEY}=globex",
        )
        try:
            yield Served(url, workdir / "served.db", workdir, stub, proc)
        finally:
            stop(proc)
