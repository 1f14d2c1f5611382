"""``erpoz serve`` as a user runs it, over real sockets: bounded request heads (431 before any
key is looked at, without stalling other clients), a port that is taken (exit 2, nothing
claims to serve), ``--json``'s line once it listens, and the flow's file path kept from
tenants."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow  # each test starts `erpoz serve`

HERE = Path(__file__).resolve().parent
ERPOZ = Path(sys.executable).parent / "erpoz"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERPOZ_", "OPENAI_"))}
    env.update(ERPOZ_STORE=str(tmp_path / "unused.db"), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    return env


class Served:
    """``erpoz serve --json`` on a free port; ``info`` is the line it printed once listening."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(ERPOZ), "serve", "--port", "0", "--json", "--log-level", "warning", *args],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once it listens: no polling
        if not line:
            self.proc.kill()
            raise AssertionError(f"erpoz serve did not start: {self.proc.communicate()}")
        self.info = json.loads(line)
        self.port = int(self.info["port"])
        self.url = str(self.info["url"])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, stderr = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(
        tmp_path,
        str(HERE / "_flows.py") + ":echo",
        "--store",
        str(tmp_path / "served.db"),
    )
    try:
        yield s
    finally:
        s.stop()


def _raw(port: int, head: bytes) -> bytes:
    """Send ``head`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_json_line_once_listening_and_the_flows_path_kept_from_tenants(
    served: Served, tmp_path: Path
) -> None:
    assert served.info["url"] == f"http://127.0.0.1:{served.port}"
    assert served.info["flows"] == ["echo"] and served.info["auth"] is False
    assert served.info["store"].endswith("served.db")
    with httpx.Client(base_url=served.url, timeout=10) as http:
        r = http.post("/api/runs", json={"flow": "echo", "inputs": {"text": "hi"}})
        assert r.status_code == 200 and r.json()["output"] == "HI"
        run_id = r.json()["run_id"]
        # the run's source names the flow's file, not where it lies on the server
        shown = http.get(f"/api/runs/{run_id}").json()
        assert shown["source"] == "_flows.py:echo"
        listed = http.get("/api/runs").json()["runs"]
        assert [x["source"] for x in listed] == ["_flows.py:echo"]
        [started] = http.get(f"/api/runs/{run_id}/events", params={"kind": "run_started"}).json()[
            "events"
        ]
        assert started["data"]["source"] == "_flows.py:echo"
        assert http.get("/api/flows").json()["flows"][0]["source"] == "_flows.py:echo"
        everything = http.get(f"/api/runs/{run_id}").text + http.get("/api/flows").text
        assert str(HERE) not in everything


def test_oversized_or_too_many_headers_get_431_before_authentication(served: Served) -> None:
    big = b"GET /api/runs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    answer = _raw(served.port, big)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_too_large"
    many = b"GET /api/runs HTTP/1.1\r\nHost: x\r\n"
    many += b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    answer = _raw(served.port, many)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"more than 100 header lines" in answer
    # a head within the limits is served as before
    fine = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 8_000 + b"\r\n"
    answer = _raw(served.port, fine + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_64_mib_header_is_cut_off_and_other_clients_are_served(served: Served) -> None:
    total = 64 * 1024 * 1024
    sent = 0
    cut_off: list[BaseException] = []
    started = threading.Event()

    def flood() -> None:
        nonlocal sent
        chunk = b"a" * 65536
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            started.set()
            try:
                while sent < total:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError as exc:  # the server answered 431 and closed the connection
                cut_off.append(exc)

    flooder = threading.Thread(target=flood)
    flooder.start()
    started.wait(10)
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.get("/api/health").status_code == 200
    flooder.join(60)
    assert cut_off, "the server read a 64 MiB header to its end"
    assert sent < 8 * 1024 * 1024, sent  # refused early, not after buffering it


def test_a_port_in_use_exits_2_and_claims_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [str(ERPOZ), "serve", "--port", str(port), "--store", str(tmp_path / "x.db")],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        as_json = subprocess.run(
            [str(ERPOZ), "serve", "--port", str(port), "--json", "--store", str(tmp_path / "x.db")],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2, r
    text = " ".join(r.stderr.split())
    assert f"cannot listen on 127.0.0.1:{port}" in text and "another --port" in text, text
    assert "erpoz serve on" not in text  # nothing claims it serves
    assert as_json.returncode == 2 and as_json.stdout == ""
    assert not (tmp_path / "x.db").exists()  # refused before the store was opened


def test_the_server_doc_gateway_example_against_a_fresh_erpoz_serve(tmp_path: Path) -> None:
    """docs/server.md's OpenAI SDK example, as written but for the port, against `erpoz serve`
    in an empty directory (no erpoz.yaml, no keys, no OPENAI_BASE_URL): the offline default
    answers, saying what it can do."""
    import re

    from erpoz.models.extractive import ABOUT

    doc = (HERE.parents[1] / "docs" / "server.md").read_text(encoding="utf-8")
    fence = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
    [example] = [b for b in fence.findall(doc) if "OpenAI(base_url=" in b]
    assert 'base_url="http://127.0.0.1:8000/v1"' in example
    served = Served(tmp_path, "--store", str(tmp_path / "fresh.db"))
    try:
        code = example.replace("127.0.0.1:8000", f"127.0.0.1:{served.port}")
        namespace: dict[str, object] = {"__name__": "docs_server"}
        exec(compile(code, "docs/server.md (gateway example)", "exec"), namespace)
        reply = namespace["reply"]
        assert reply.choices[0].message.content == ABOUT  # type: ignore[attr-defined]
        assert reply.model == "reader"  # type: ignore[attr-defined]
    finally:
        served.stop()
