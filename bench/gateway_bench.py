"""``python -m bench.gateway_bench``: what the OpenAI-compatible gateway adds to a chat call,
under load, over real sockets on loopback.

Three kinds of processes:

* the **upstream**: the OpenAI stub server (``erpoz.models._stub_server``), answering every
  chat completion with an echo; run by this module with a listen backlog of 1024 instead of
  ``socketserver``'s 5, which resets connections when a loaded gateway opens many at once;
* the **server under test**, run by uvicorn in its own process (one per configuration, started
  and stopped here; ``asyncio`` + ``h11``, what ``pip install 'erpoz[server]'`` gives, or
  ``uvloop`` + ``httptools`` with ``--fast``):

  - ``proxy``: no erpoz at all, a do-nothing FastAPI route that posts the body on to the
    upstream with httpx and returns the answer: the floor of "one more HTTP hop in Python";
  - ``memory``: the erpoz app (``create_app``), each request recorded as a run in the
    in-memory store;
  - ``batch``: the same on a SQLite store with ``durability="batch"``;
  - ``sync``: the same on a SQLite store with ``durability="sync"`` (``erpoz serve``'s
    default);
  - ``sync+guards``: ``sync`` with PII and injection guards at ``model_input``;
  - ``sync-bare``: ``sync`` with the app's middleware (the request-body limit, a Starlette
    ``BaseHTTPMiddleware``) taken off: what that middleware costs;

* **load generators** (``--clients`` processes, default 1): open loop, each sends its share of
  the rate at fixed intervals (without waiting for answers, so a slow server cannot slow the
  load down) through one ``httpx.AsyncClient`` with keep-alive. Past 256 requests in flight a
  generator stops sending and counts the requests it did not send as ``shed`` (an overloaded
  server would otherwise make the queue, and the run, grow without bound).

For each configuration and each rate of ``--rate`` (e.g. ``100,200,500``), ``--rounds`` rounds
alternate a **direct** phase (the same body posted straight to the upstream) and a **gateway**
phase (posted to the server under test), ``--seconds`` each; every phase starts with 0.3 s of
unmeasured warm-up. Latency is measured per request from just before ``client.post`` until the
body is read; ``added`` is the gateway's p50 / p99 minus the direct p50 / p99 (the extra hop,
including the gateway's own call to the upstream). ``achieved`` is answered requests over the
phase's wall time; ``server CPU/req`` the server's CPU time (user + system, from ``/proc``) per
gateway request.

Before that, ``client capacity`` is what the load generators and the upstream manage together,
closed loop, 32 requests in flight per generator, for 2 s; and the **CPU breakdown** measures in
one process, without sockets (a ``FunctionModel`` answers), the CPU time per request of
``engine.run`` of the gateway's flow and of the whole app, with and without its middleware, on
each kind of store.

Options: ``--rate`` (default 500), ``--seconds`` (3), ``--rounds`` (3), ``--clients`` (1),
``--configs`` (comma-separated, default all), ``--fast``, ``--no-breakdown``, ``--json PATH``.
A missed target (p50 added ≤ 1 ms at ≥ 500 requests/s) does not change the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import Response

CONFIGS = ("proxy", "memory", "batch", "sync", "sync+guards", "sync-bare")
TARGET_ADDED_P50_MS = 1.0
TARGET_RATE = 500
SYSTEM = "You answer in one short sentence."
PROMPT = "What is the capital of France?"


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


# --- the server under test (a child process) --------------------------------------------------
def build_app(config: str, upstream: str, workdir: str) -> Any:
    if config == "proxy":
        return proxy_app(upstream)
    from erpoz import Engine, open_store
    from erpoz.guards import Check, Guardrails, InjectionDetector, PIIDetector
    from erpoz.models import ModelHub, ModelSpec
    from erpoz.models.openai_compat import create
    from erpoz.policy import parse_policy
    from erpoz.server import ServerState, create_app

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
    if config == "memory":
        store = open_store("memory")
    else:
        durability = "batch" if config == "batch" else "sync"  # sync, sync+guards, sync-bare
        store = open_store(Path(workdir) / f"{config}.db", durability=durability)
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
    if config.endswith("-bare"):  # what the app costs without its middleware (body limit)
        app.user_middleware = []
        app.middleware_stack = None
    return app


def proxy_app(upstream: str) -> Any:
    """The floor: FastAPI + uvicorn + httpx, forwarding the body as it is."""
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


def serve(config: str, upstream: str, port: int, workdir: str, fast: bool) -> None:
    import uvicorn

    app = build_app(config, upstream, workdir)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop" if fast else "asyncio",
        http="httptools" if fast else "h11",
    )


# --- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_upstream() -> None:
    """The stub server with a listen backlog of 1024 (``socketserver``'s default of 5 resets
    connections when a loaded gateway opens many at once), until interrupted."""
    import threading

    from erpoz.models._stub_server import OpenAIStubServer, _HTTPServer

    _HTTPServer.request_queue_size = 1024
    server = OpenAIStubServer().start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@contextmanager
def upstream_server() -> Iterator[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_bench", "--serve-upstream"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the stub server did not start (said {url!r})")
        yield url
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def server_under_test(
    config: str, upstream: str, workdir: str, fast: bool
) -> Iterator[tuple[str, int]]:
    port = free_port()
    child = subprocess.Popen(
        [
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
            *(["--fast"] if fast else []),
        ]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"server {config!r} exited with {child.returncode}")
            try:
                if httpx.get(base + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {config!r} did not start in 30 s")
            time.sleep(0.1)
        yield base, child.pid
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


async def _open_loop(url: str, body: bytes, rate: float, seconds: float) -> PhaseResult:
    out = PhaseResult()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        inflight = 0

        async def one(measured: bool) -> None:
            nonlocal inflight
            inflight += 1
            t0 = time.perf_counter()
            try:
                reply = await client.post(url, content=body, headers=headers)
                ok = reply.status_code == 200
                if not ok and not out.first_error:
                    out.first_error = f"HTTP {reply.status_code}: {reply.text[:200]}"
            except httpx.HTTPError as exc:
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


def run_phase(url: str, body: bytes, rate: float, seconds: float) -> PhaseResult:
    return asyncio.run(_open_loop(url, body, rate, seconds))


async def _closed_loop(url: str, body: bytes, seconds: float, inflight: int) -> int:
    done = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(k: int) -> None:
            nonlocal done
            await asyncio.sleep(k * 0.01)  # the stub's listen backlog is small: ramp up
            while time.perf_counter() < stop:
                try:
                    await client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError:
                    continue
                done += 1

        await asyncio.gather(*(worker(k) for k in range(inflight)))
    return done


def run_capacity(url: str, body: bytes, seconds: float) -> int:
    return asyncio.run(_closed_loop(url, body, seconds, 32))


# --- where the CPU goes: in process, no sockets ----------------------------------------------
_ASGI_BODY = body_for("gpt-mini")


def _inproc_app(store: Any, strip: bool) -> Any:
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
    if strip:  # the app without its middleware (the request body limit)
        app.user_middleware = []
        app.middleware_stack = None
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
        for i, (label, app_kind) in enumerate(
            (
                ("engine.run of the gateway flow", "run"),
                ("the app: POST /v1/chat/completions", "app"),
                ("the app without its middleware", "bare"),
            )
        ):
            for store_label, store in (
                ("memory", open_store("memory")),
                ("sqlite sync", open_store(Path(d) / f"s{i}.db")),
                ("sqlite batch", open_store(Path(d) / f"b{i}.db", durability="batch")),
            ):
                if app_kind == "run":
                    us = asyncio.run(_run_cpu_us(store, n))
                else:
                    us = asyncio.run(_asgi_cpu_us(_inproc_app(store, app_kind == "bare"), n))
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
    upstream: str,
    workdir: str,
    args: Any,
) -> list[Row]:
    direct_body = body_for("stub-model")
    gateway_body = body_for("gpt-mini")
    rows = []
    with server_under_test(config, upstream, workdir, args.fast) as (base, pid):
        for rate in rates:
            direct = PhaseResult()
            through = PhaseResult()
            cpu = 0.0
            achieved: list[float] = []
            for _ in range(args.rounds):
                d = phase(
                    pool,
                    args.clients,
                    upstream + "/chat/completions",
                    direct_body,
                    rate,
                    args.seconds,
                )
                direct.latencies_s += d.latencies_s
                direct.errors += d.errors
                direct.shed += d.shed
                c0 = cpu_seconds(pid)
                g = phase(
                    pool,
                    args.clients,
                    base + "/v1/chat/completions",
                    gateway_body,
                    rate,
                    args.seconds,
                )
                cpu += cpu_seconds(pid) - c0
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
                    len(through.latencies_s),
                    through.first_error,
                )
            )
    return rows


def print_table(rows: list[Row], capacity: float, args: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    stack = "uvloop + httptools" if args.fast else "asyncio + h11"
    table = Table(
        title=f"what the gateway adds, open loop ({args.clients} load process"
        f"{'es' if args.clients > 1 else ''}, {args.rounds}×{args.seconds:g} s per path and "
        f"rate, uvicorn on {stack})"
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
        "server CPU/req",
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
            f"{r.server_cpu_ms_per_request:.2f} ms",
            f"{r.errors}/{r.shed}",
        )
    console = Console(width=160)
    console.print(table)
    console.print(
        f"client capacity (closed loop against the upstream, {args.clients} process(es) × 32 in "
        f"flight): {capacity:.0f} req/s. Target: added p50 ≤ {TARGET_ADDED_P50_MS} ms at ≥ "
        f"{TARGET_RATE} req/s. Load average now: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
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
    parser.add_argument("--rate", default="500", help="requests/s; several: 100,200,500")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--fast", action="store_true", help="serve with uvloop + httptools (must be installed)"
    )
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        serve_upstream()
        return 0
    if args.serve:
        serve(args.serve, args.upstream, args.port, args.workdir, args.fast)
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        upstream_server() as upstream,
        ProcessPoolExecutor(max_workers=args.clients) as pool,
    ):
        caps = [
            pool.submit(run_capacity, upstream + "/chat/completions", body_for("stub-model"), 2.0)
            for _ in range(args.clients)
        ]
        capacity = sum(f.result() for f in caps) / 2.0
        parts = [] if args.no_breakdown else pool.submit(breakdown).result()
        for config in configs:
            print(f"measuring {config} ...", file=sys.stderr, flush=True)
            rows += measure_config(pool, config, rates, upstream, workdir, args)
    print_table(rows, capacity, args)
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
                        "load_avg": os.getloadavg(),
                    },
                    "options": {
                        k: getattr(args, k) for k in ("rate", "seconds", "rounds", "clients")
                    },
                    "client_capacity_rps": capacity,
                    "cpu_breakdown_us": dict(parts),
                    "uvicorn": "uvloop + httptools" if args.fast else "asyncio + h11",
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
