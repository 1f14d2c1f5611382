"""``python -m bench.gateway_bench``: what the OpenAI-compatible gateway adds to a chat call,
under load, over real sockets on loopback.

Three kinds of processes:

* the **upstream**: the OpenAI stub server (``erpoz.models.stub_server``) answering every chat
  completion with an echo; by default in its ``--lean`` mode (one asyncio loop, uvloop when
  installed, no recording), so that the upstream is not what saturates first;
  ``--threaded-upstream`` uses the thread-per-connection server the tests use;
* the **server under test**, run by uvicorn in its own process (one per configuration, started
  and stopped here), with the event loop and HTTP parser ``erpoz serve`` gets: uvloop +
  httptools when installed (the ``server`` extra), else asyncio + h11 (``--stack asyncio``
  forces the latter):

  - ``floor``: no erpoz run: a plain ASGI app that parses the body, calls the model through
    erpoz's ``openai`` provider (``OpenAICompatChat.generate``) and answers: one more HTTP hop in
    Python with the same HTTP client, the floor of any gateway written in Python;
  - ``proxy``: a do-nothing FastAPI route forwarding the body with httpx (the floor measured
    before the provider had its own HTTP client);
  - ``memory``: the erpoz app (``create_app``), each request a run in the in-memory store;
  - ``batch``: the same on a SQLite store with ``durability="batch"`` (group commit);
  - ``sync``: the same on a SQLite store with ``durability="sync"`` (``erpoz serve``'s default);
  - ``sync-routed``: ``sync`` with the gateway's plain ASGI route taken off, so that the
    request goes through FastAPI's routing and middleware: what the hot route saves;
  - ``sync+guards``: ``sync`` with PII and injection guards at ``model_input``;
  - ``sync+otlp``: ``sync`` exporting every run's trace live over OTLP/HTTP
    (``OTEL_EXPORTER_OTLP_ENDPOINT``) to a receiver the bench starts in a process of its own
    (it answers 200 to every export and counts them): the cost of live tracing;

* **load generators** (``--clients`` processes, default 1): open loop, each sends its share of
  the rate at fixed intervals, without waiting for answers (a slow server cannot slow the load
  down), over kept-alive connections of a minimal HTTP/1.1 client on asyncio (uvloop when
  installed): httpx cost ~0.6 ms of CPU per request, enough to make the generator the
  bottleneck from ~400 requests/s on 2 cores. Past 256 requests in flight a generator stops
  sending and counts the requests it did not send as ``shed``.

For each configuration and each rate of ``--rate`` (e.g. ``200,300,500``), ``--rounds`` rounds
alternate a **direct** phase (the same body posted straight to the upstream) and a **gateway**
phase (posted to the server under test), ``--seconds`` each; every phase starts with 0.3 s of
unmeasured warm-up. Latency is measured per request from just before it is written until its
whole answer is read; ``added`` is the gateway's p50 / p99 minus the direct p50 / p99 (the extra
hop, including the gateway's own call to the upstream). ``achieved`` is answered requests over
the phase's wall time; ``CPU/req`` is the server's CPU time (user + system, from ``/proc``) per
gateway request, and the upstream's in brackets; ``late p99`` how late the generator sent
(a generator that falls behind measures less load than it claims).

Before that, the **CPU breakdown** measures in one process, without sockets (a ``FunctionModel``
answers), the CPU time per request of ``engine.run`` of the gateway's flow and of the whole
app (its plain ASGI route, and FastAPI's route), on each kind of store.

Options: ``--rate`` (default 200,300,500), ``--seconds`` (3), ``--rounds`` (2), ``--clients``
(1), ``--configs`` (comma-separated, default all), ``--stack auto|asyncio``,
``--threaded-upstream``, ``--no-breakdown``, ``--json PATH``. A missed target (p50 added ≤ 1 ms
at ≥ 500 requests/s) does not change the exit status. The load average is printed before and
after: the machine has 2 cores, shared with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from fastapi import Request  # at module level: FastAPI resolves the route's annotations here
from fastapi.responses import Response

CONFIGS = ("floor", "proxy", "memory", "batch", "sync", "sync-routed", "sync+guards", "sync+otlp")
TARGET_ADDED_P50_MS = 1.0
TARGET_RATE = 500
SYSTEM = "You answer in one short sentence."
PROMPT = "What is the capital of France?"
T = TypeVar("T")


def body_for(model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT},
            ],
            "max_tokens": 64,
        }
    ).encode()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- the server under test (a child process) --------------------------------------------------
def _hub(upstream: str) -> Any:
    from erpoz.models import ModelHub, ModelSpec
    from erpoz.models.openai_compat import create

    spec = ModelSpec(
        "gpt-mini",
        "openai",
        params={"base_url": upstream, "model": "stub-model", "api_key": "", "max_retries": 0},
        price_in=0.15,
        price_out=0.60,
        context_window=128_000,
    )
    hub = ModelHub()
    hub.add(create(spec), spec)
    return hub


def build_app(config: str, upstream: str, workdir: str) -> Any:
    if config == "proxy":
        return proxy_app(upstream)
    if config == "floor":
        return floor_app(upstream)
    from erpoz import Engine, open_store
    from erpoz.guards import Check, Guardrails, InjectionDetector, PIIDetector
    from erpoz.models import ModelHub
    from erpoz.policy import parse_policy
    from erpoz.server import ServerState, create_app

    hub = _hub(upstream)
    if config == "memory":
        store = open_store("memory")
    else:
        durability = "batch" if config == "batch" else "sync"
        store = open_store(Path(workdir) / f"{config.replace('+', '-')}.db", durability=durability)
    rails = Guardrails()
    if config.endswith("+guards"):
        rails = Guardrails(
            [
                Check(PIIDetector(), frozenset({"model_input"})),
                Check(InjectionDetector(), frozenset({"model_input"})),
            ],
            parse_policy(
                "rules:\n"
                "  - {name: mask e-mail, data: pii.email, at: [model_input],"
                " action: pseudonymize}\n"
                "  - {name: injections stop, data: injection, min_score: 0.5, action: block}\n"
            ),
        )
    engine = Engine(store, services={ModelHub: hub, Guardrails: rails})
    app = create_app(ServerState(store=store, engine=engine))
    if config.endswith("-routed"):  # through FastAPI's routing and middleware
        app.hot_routes = {}
    return app


def floor_app(upstream: str) -> Any:
    """No erpoz run: parse the request, call the provider, answer (a plain ASGI app)."""
    from erpoz.models import ChatRequest, Message

    model = _hub(upstream).get("gpt-mini")
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            body = b'{"object": "list", "data": []}'
        else:
            data = json.loads(b"".join(chunks))
            messages = tuple(Message(m["role"], m["content"]) for m in data["messages"])
            result = await model.generate(ChatRequest(messages, max_tokens=data.get("max_tokens")))
            body = json.dumps(
                {
                    "object": "chat.completion",
                    "model": data["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": result.text},
                            "finish_reason": result.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": result.usage.input_tokens,
                        "completion_tokens": result.usage.output_tokens,
                    },
                }
            ).encode()
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers + length})
        await send({"type": "http.response.body", "body": body})

    return app


def proxy_app(upstream: str) -> Any:
    """FastAPI + httpx, forwarding the body as it is."""
    import httpx
    from fastapi import FastAPI

    app = FastAPI()
    holder: dict[str, httpx.AsyncClient] = {}

    @app.post("/v1/chat/completions")
    async def forward(request: Request) -> Response:
        client = holder.get("c")
        if client is None:
            client = holder["c"] = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
            )
        body = json.loads(await request.body())
        body["model"] = "stub-model"
        reply = await client.post(upstream + "/chat/completions", content=json.dumps(body))
        return Response(reply.content, reply.status_code, media_type="application/json")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": []}

    return app


def serve(config: str, upstream: str, port: int, workdir: str, stack: str) -> None:
    import uvicorn

    uvicorn.run(
        build_app(config, upstream, workdir),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="asyncio" if stack == "asyncio" else "auto",
        http="h11" if stack == "asyncio" else "auto",
    )


def uvicorn_stack(stack: str) -> str:
    """What uvicorn runs on with ``loop``/``http`` ``auto``: uvloop and httptools if installed."""
    if stack == "asyncio":
        return "asyncio + h11"
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    return f"{loop} + {http}"


# --- an OTLP/HTTP receiver (a child process) -------------------------------------------------
class _Receiver(asyncio.Protocol):
    """Answers 200 to every POST (an empty ExportTraceServiceResponse) and counts them."""

    counts: ClassVar[dict[str, int]] = {"exports": 0, "bytes": 0}

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buf = rest[length:]
            _Receiver.counts["exports"] += 1
            _Receiver.counts["bytes"] += length
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 0\r\n\r\n"
            )


def otlp_receiver() -> None:
    """Serve on a free loopback port; print its URL, then, on SIGINT, the counts (JSON)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Receiver, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        print(json.dumps(_Receiver.counts), flush=True)

    run_loop(main())


@contextmanager
def receiver_server() -> Iterator[tuple[str, dict[str, int]]]:
    """The OTLP receiver in a child process: (base URL, its counts, filled in on the way out)."""
    argv = [sys.executable, "-m", "bench.gateway_bench", "--otlp-receiver"]
    counts: dict[str, int] = {}
    with child(argv, "otlp receiver") as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the OTLP receiver did not start (said {url!r})")
        yield url, counts
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        counts.update(json.loads(line) if line else {})


# --- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def child(
    argv: list[str], what: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A child process, interrupted (then killed) on the way out."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def upstream_server(threaded: bool = False) -> Iterator[tuple[str, int]]:
    """The stub server in a child process: (base URL, pid)."""
    argv = [sys.executable, "-m", "erpoz.models.stub_server", *([] if threaded else ["--lean"])]
    with child(argv, "upstream") as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the stub server did not start (said {url!r})")
        yield url, proc.pid


def wait_until_up(url: str, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            host, _, port = url.removeprefix("http://").partition(":")
            with socket.create_connection((host, int(port.split("/")[0])), timeout=1):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start in 30 s")
        time.sleep(0.1)


@contextmanager
def server_under_test(
    config: str, upstream: str, workdir: str, stack: str, otlp: str | None = None
) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.gateway_bench",
        "--serve",
        config,
        "--upstream",
        upstream,
        "--port",
        str(port),
        "--workdir",
        workdir,
        "--stack",
        stack,
    ]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    if config.endswith("+otlp"):
        if otlp is None:
            raise RuntimeError("the +otlp configurations need the OTLP receiver")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    with child(argv, config, env) as proc:
        wait_until_up(base, proc, f"server {config!r}")
        time.sleep(0.3)  # the app's startup (lifespan) runs after the socket listens
        yield base, proc.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# --- a minimal HTTP/1.1 client for the load ---------------------------------------------------
class _Conn(asyncio.Protocol):
    """One kept-alive connection of a load generator: one request at a time, answers framed by
    Content-Length (what the servers measured here send)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            if at < 0:
                self._fail(ConnectionError("an answer without Content-Length"))
                return
            line_end = head.find(b"\r\n", at)
            length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            self.need = end + 4 + length
        if len(buf) >= self.need:
            del buf[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


class LoadClient:
    """POSTs one body to one URL over a pool of kept-alive connections."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        rest = url.removeprefix("http://")
        hostport, _, path = rest.partition("/")
        self.host, _, port = hostport.partition(":")
        self.port = int(port or 80)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.request = (
            f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.idle: list[_Conn] = []

    async def post(self) -> int:
        """One request; its HTTP status."""
        loop = asyncio.get_running_loop()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                break
        else:
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(self.request)
        try:
            status = await conn.waiter
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        self.idle.append(conn)
        return status

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle = []


# --- load generation (in worker processes) ----------------------------------------------------
MAX_INFLIGHT = 256


@dataclass
class PhaseResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    shed: int = 0
    sent: int = 0
    wall_s: float = 0.0
    late_s: list[float] = field(default_factory=list)
    first_error: str = ""


async def open_loop(
    post: Callable[[], Coroutine[Any, Any, int]], rate: float, seconds: float
) -> PhaseResult:
    """``post`` at ``rate`` per second for ``seconds`` (after 0.3 s of warm-up), open loop."""
    out = PhaseResult()
    inflight = 0

    async def one(measured: bool) -> None:
        nonlocal inflight
        inflight += 1
        t0 = time.perf_counter()
        try:
            status = await post()
            ok = status == 200
            if not ok and not out.first_error:
                out.first_error = f"HTTP {status}"
        except OSError as exc:
            ok = False
            if not out.first_error:
                out.first_error = f"{type(exc).__name__}: {exc}"
        dt = time.perf_counter() - t0
        inflight -= 1
        if measured:
            if ok:
                out.latencies_s.append(dt)
            else:
                out.errors += 1

    async def schedule(n: int, measured: bool) -> float:
        interval = 1.0 / rate
        tasks = []
        start = time.perf_counter()
        for i in range(n):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif measured:
                out.late_s.append(-delay)
            if inflight >= MAX_INFLIGHT:  # overloaded: do not let the queue grow forever
                out.shed += measured
                continue
            tasks.append(asyncio.create_task(one(measured)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    await schedule(max(1, int(rate * 0.3)), measured=False)  # warm-up: connections, caches
    n = int(rate * seconds)
    out.sent = n
    out.wall_s = await schedule(n, measured=True)
    return out


async def _phase(url: str, body: bytes, rate: float, seconds: float) -> PhaseResult:
    client = LoadClient(url, body, {"Authorization": "Bearer sk-bench"})
    try:
        return await open_loop(client.post, rate, seconds)
    finally:
        client.close()


def run_phase(url: str, body: bytes, rate: float, seconds: float) -> PhaseResult:
    return run_loop(_phase(url, body, rate, seconds))


# --- where the CPU goes: in process, no sockets ----------------------------------------------
_ASGI_BODY = body_for("gpt-mini")


def _inproc_app(store: Any, routed: bool) -> Any:
    from erpoz import Engine
    from erpoz.guards import Guardrails
    from erpoz.models import ModelHub, ModelSpec
    from erpoz.server import ServerState, create_app
    from erpoz.testing import FunctionModel

    hub = ModelHub()
    hub.add(
        FunctionModel(lambda r: "Paris.", name="gpt-mini"),
        ModelSpec("gpt-mini", "function", price_in=0.15, price_out=0.60),
    )
    engine = Engine(store, services={ModelHub: hub, Guardrails: Guardrails()})
    app = create_app(ServerState(store=store, engine=engine))
    if routed:
        app.hot_routes = {}
    return app


async def _asgi_cpu_us(app: Any, n: int) -> float:
    """CPU time per request of ``POST /v1/chat/completions`` called as an ASGI app."""
    headers = [
        (b"host", b"gw"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_ASGI_BODY)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def once() -> None:
        given = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": _ASGI_BODY, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({**scope, "state": {}}, receive, send)
        if status != [200]:
            raise RuntimeError(f"the gateway answered {status}")

    for _ in range(300):
        await once()
    t0 = time.process_time()
    for _ in range(n):
        await once()
    return (time.process_time() - t0) / n * 1e6


async def _run_cpu_us(store: Any, n: int) -> float:
    """CPU time per run of the gateway's internal flow called on the engine directly."""
    from erpoz import Engine
    from erpoz.guards import Guardrails
    from erpoz.models import ModelHub, ModelSpec
    from erpoz.server.gateway import CHAT_FLOW
    from erpoz.testing import FunctionModel

    hub = ModelHub()
    hub.add(FunctionModel(lambda r: "Paris.", name="gpt-mini"), ModelSpec("gpt-mini", "function"))
    engine = Engine(store, services={ModelHub: hub, Guardrails: Guardrails()})
    plan = CHAT_FLOW.compile()
    inputs = {"model": "gpt-mini", "request": _ASGI_BODY.decode()}
    tags = {"tenant": "-", "via": "gateway"}
    for _ in range(300):
        await engine.run(plan, inputs, tags=tags)
    t0 = time.process_time()
    for _ in range(n):
        await engine.run(plan, inputs, tags=tags)
    return (time.process_time() - t0) / n * 1e6


def breakdown(n: int = 2000) -> list[tuple[str, float]]:
    """CPU µs per request of the app's parts, in one process, with a FunctionModel answering
    (no HTTP server, no sockets, no upstream)."""
    from erpoz import open_store

    out: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        for i, (label, kind) in enumerate(
            (
                ("engine.run of the gateway flow", "run"),
                ("the app, plain ASGI route", "app"),
                ("the app, FastAPI route", "routed"),
            )
        ):
            for store_label, store in (
                ("memory", open_store("memory")),
                ("sqlite sync", open_store(Path(d) / f"s{i}.db")),
                ("sqlite batch", open_store(Path(d) / f"b{i}.db", durability="batch")),
            ):
                if kind == "run":
                    us = run_loop(_run_cpu_us(store, n))
                else:
                    us = run_loop(_asgi_cpu_us(_inproc_app(store, kind == "routed"), n))
                out.append((f"{label} ({store_label} store)", us))
    return out


# --- measuring --------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000 if xs else 0.0


@dataclass
class Row:
    config: str
    rate_target: float
    direct_p50_ms: float
    direct_p99_ms: float
    gateway_p50_ms: float
    gateway_p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    achieved_rps: float
    late_p99_ms: float
    errors: int
    shed: int
    server_cpu_ms_per_request: float
    upstream_cpu_ms_per_request: float
    requests_measured: int
    first_error: str = ""


def phase(
    pool: ProcessPoolExecutor, clients: int, url: str, body: bytes, rate: float, seconds: float
) -> PhaseResult:
    futures = [pool.submit(run_phase, url, body, rate / clients, seconds) for _ in range(clients)]
    merged = PhaseResult()
    for f in futures:
        r = f.result()
        merged.latencies_s += r.latencies_s
        merged.late_s += r.late_s
        merged.errors += r.errors
        merged.shed += r.shed
        merged.sent += r.sent
        merged.wall_s = max(merged.wall_s, r.wall_s)
        merged.first_error = merged.first_error or r.first_error
    return merged


def measure_config(
    pool: ProcessPoolExecutor,
    config: str,
    rates: list[float],
    upstream: tuple[str, int],
    workdir: str,
    args: Any,
) -> list[Row]:
    up_url, up_pid = upstream
    direct_body = body_for("stub-model")
    gateway_body = body_for("gpt-mini")
    rows = []
    with server_under_test(config, up_url, workdir, args.stack, args.otlp_url) as (base, pid):
        for rate in rates:
            direct = PhaseResult()
            through = PhaseResult()
            cpu = up_cpu = 0.0
            achieved: list[float] = []
            for _ in range(args.rounds):
                d = phase(
                    pool,
                    args.clients,
                    up_url + "/chat/completions",
                    direct_body,
                    rate,
                    args.seconds,
                )
                direct.latencies_s += d.latencies_s
                direct.errors += d.errors
                direct.shed += d.shed
                c0, u0 = cpu_seconds(pid), cpu_seconds(up_pid)
                g = phase(
                    pool,
                    args.clients,
                    base + "/v1/chat/completions",
                    gateway_body,
                    rate,
                    args.seconds,
                )
                cpu += cpu_seconds(pid) - c0
                up_cpu += cpu_seconds(up_pid) - u0
                through.latencies_s += g.latencies_s
                through.late_s += g.late_s
                through.errors += g.errors
                through.shed += g.shed
                through.sent += g.sent - g.shed + int(rate * 0.3)  # the warm-up used CPU too
                through.first_error = through.first_error or g.first_error or d.first_error
                achieved.append(len(g.latencies_s) / g.wall_s if g.wall_s else 0.0)
            dp50, dp99 = pct(direct.latencies_s, 0.5), pct(direct.latencies_s, 0.99)
            gp50, gp99 = pct(through.latencies_s, 0.5), pct(through.latencies_s, 0.99)
            rows.append(
                Row(
                    config,
                    rate,
                    dp50,
                    dp99,
                    gp50,
                    gp99,
                    gp50 - dp50,
                    gp99 - dp99,
                    statistics.fmean(achieved),
                    pct(through.late_s, 0.99) if through.late_s else 0.0,
                    through.errors + direct.errors,
                    through.shed + direct.shed,
                    cpu * 1000 / max(1, through.sent),
                    up_cpu * 1000 / max(1, through.sent),
                    len(through.latencies_s),
                    through.first_error,
                )
            )
    return rows


def print_table(rows: list[Row], args: Any, load: list[tuple[float, float, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"what the gateway adds, open loop ({args.clients} load process"
        f"{'es' if args.clients > 1 else ''}, {args.rounds}×{args.seconds:g} s per path and "
        f"rate, uvicorn on {uvicorn_stack(args.stack)}, "
        f"{'threaded' if args.threaded_upstream else 'lean'} upstream)"
    )
    for col in (
        "server",
        "rate",
        "direct p50",
        "direct p99",
        "gateway p50",
        "gateway p99",
        "added p50",
        "added p99",
        "achieved",
        "CPU/req (upstream)",
        "late p99",
        "errors/shed",
    ):
        table.add_column(col, justify="left" if col == "server" else "right")
    for r in rows:
        table.add_row(
            r.config,
            f"{r.rate_target:g}/s",
            f"{r.direct_p50_ms:.2f} ms",
            f"{r.direct_p99_ms:.2f} ms",
            f"{r.gateway_p50_ms:.2f} ms",
            f"{r.gateway_p99_ms:.2f} ms",
            f"{r.added_p50_ms:+.2f} ms",
            f"{r.added_p99_ms:+.2f} ms",
            f"{r.achieved_rps:.0f}/s",
            f"{r.server_cpu_ms_per_request:.2f} ({r.upstream_cpu_ms_per_request:.2f}) ms",
            f"{r.late_p99_ms:.2f} ms",
            f"{r.errors}/{r.shed}",
        )
    console = Console(width=180)
    console.print(table)
    console.print(
        f"Target: added p50 ≤ {TARGET_ADDED_P50_MS} ms at ≥ {TARGET_RATE} req/s. Load average "
        f"(1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load[0])}, after: "
        f"{' '.join(f'{x:.2f}' for x in load[-1])} ({os.cpu_count()} cores)"
    )
    for r in rows:
        if r.first_error:
            console.print(f"{r.config} at {r.rate_target:g}/s: first error: {r.first_error}")


def print_breakdown(parts: list[tuple[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="where the gateway's CPU goes (in process: FunctionModel, no HTTP server, no sockets)"
    )
    table.add_column("what")
    table.add_column("CPU per request", justify="right")
    for what, us in parts:
        table.add_row(what, f"{us:.0f} µs")
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_bench", description=__doc__)
    parser.add_argument("--rate", default="200,300,500", help="requests/s; several: 200,500")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--stack",
        choices=("auto", "asyncio"),
        default="auto",
        help="auto: uvloop + httptools when installed (as erpoz serve); asyncio: asyncio + h11",
    )
    parser.add_argument("--threaded-upstream", action="store_true")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--otlp-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.otlp_receiver:
        otlp_receiver()
        return 0
    if args.serve:
        serve(args.serve, args.upstream, args.port, args.workdir, args.stack)
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    rows: list[Row] = []
    load = [os.getloadavg()]
    with (
        tempfile.TemporaryDirectory() as workdir,
        upstream_server(args.threaded_upstream) as upstream,
        receiver_server() as (args.otlp_url, received),
        ProcessPoolExecutor(max_workers=args.clients) as pool,
    ):
        parts = [] if args.no_breakdown else pool.submit(breakdown).result()
        for config in configs:
            print(f"measuring {config} ...", file=sys.stderr, flush=True)
            rows += measure_config(pool, config, rates, upstream, workdir, args)
            load.append(os.getloadavg())
    print_table(rows, args, load)
    if any(c.endswith("+otlp") for c in configs):
        print(
            f"OTLP receiver: {received.get('exports', 0)} export requests, "
            f"{received.get('bytes', 0):,} bytes"
        )
    if parts:
        print_breakdown(parts)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                        "cpus": os.cpu_count(),
                        "load_avg": load,
                    },
                    "options": {
                        k: getattr(args, k)
                        for k in ("rate", "seconds", "rounds", "clients", "threaded_upstream")
                    },
                    "uvicorn": uvicorn_stack(args.stack),
                    "cpu_breakdown_us": dict(parts),
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
