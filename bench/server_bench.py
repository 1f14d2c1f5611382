"""``python -m bench.server_bench``: the runs API's throughput and the fan-out of a run's
server-sent events, over real sockets on loopback.

The server under test is the erpoz app (``create_app``) under uvicorn in a child process, as
``erpoz serve`` runs it (uvloop + httptools when installed), on a SQLite store with ``sync``
durability (``erpoz serve``'s default; ``--store`` also takes ``batch`` and ``memory``), with
two flows:

* ``three``: three steps in a chain, each ``x + 1`` (what a run costs, not what its steps do);
* ``watched``: a step that sleeps ``--sse-wait`` seconds (time for the watchers to connect),
  then ``--sse-steps`` steps that each sleep 20 ms, so that events keep coming while it is
  watched.

**(a) runs/s through ``POST /api/runs``** of ``three``, closed loop: ``C`` connections each
post one run after another (``wait: true``: the answer is the run's result; ``wait: false``:
the answer is a 202 once the run is recorded, the run goes on in the server), for
``--seconds``; for ``wait: false`` the clock stops when the last of the runs has ended (polled
with ``GET /api/runs?status=running``). Every answer must be 200 (or 202), every run must end
``succeeded``. Printed: runs/s, the answer's p50 / p99, the server's CPU per run.

**(b) SSE fan-out**: ``--watchers`` clients (in ``--watcher-procs`` processes) follow the same
``watched`` run (``GET /api/runs/{id}/follow``) from its start. Each event reaches a watcher
twice: ``event: live`` the moment the engine appends it (the server's event bus), then
``event: event`` once it is in the store (durable, with its sequence number and hash). The
delay of each is the watcher's clock at receipt minus the event's ``ts`` (the server's clock
when the event was appended; one machine, one clock), over every (watcher, event) pair of the
events appended after all watchers were connected. Checked: every watcher got every event of
the run once, in order, the same as ``GET /api/runs/{id}/events`` (sequence numbers and
hashes), then ``event: end``; and a ``live`` message for each event appended while it watched.

Options: ``--store``, ``--concurrency`` (default 1,8,32), ``--seconds`` (3), ``--watchers``
(100), ``--watcher-procs`` (2), ``--sse-steps`` (20), ``--sse-wait`` (1.5), ``--skip-runs``,
``--skip-sse``, ``--json PATH``. Figures are printed, never asserted (no timing in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.gateway_bench import (
    LoadClient,
    child,
    cpu_seconds,
    free_port,
    pct,
    run_loop,
    uvicorn_stack,
    wait_until_up,
)

SSE_STEP_S = 0.02


# --- the server under test (a child process) --------------------------------------------------
def build_app(store_kind: str, workdir: str, sse_steps: int, sse_wait: float) -> Any:
    from erpoz import Engine, Flow, open_store, step
    from erpoz.server import ServerState, create_app

    @step
    def inc(x: int) -> int:
        return x + 1

    three = Flow("three", inputs={"x": int})
    a = three.add(inc, id="a", x=three.input("x"))
    three.output(three.add(inc, id="c", x=three.add(inc, id="b", x=a)))

    @step
    async def hold(x: int) -> int:
        await asyncio.sleep(sse_wait)
        return x

    @step
    async def tick(x: int) -> int:
        await asyncio.sleep(SSE_STEP_S)
        return x + 1

    watched = Flow("watched", inputs={"x": int})
    ref = watched.add(hold, x=watched.input("x"))
    for i in range(sse_steps):
        ref = watched.add(tick, id=f"tick{i}", x=ref)
    watched.output(ref)

    if store_kind == "memory":
        store = open_store("memory")
    else:
        store = open_store(Path(workdir) / "runs.db", durability=store_kind)
    flows = {f.name: f.compile() for f in (three, watched)}
    return create_app(ServerState(store=store, engine=Engine(store), flows=flows))


def serve(store_kind: str, port: int, workdir: str, sse_steps: int, sse_wait: float) -> None:
    import uvicorn

    uvicorn.run(
        build_app(store_kind, workdir, sse_steps, sse_wait),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


@contextmanager
def server_under_test(args: Any, workdir: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.server_bench",
        "--serve",
        "--store",
        args.store,
        "--port",
        str(port),
        "--workdir",
        workdir,
        "--sse-steps",
        str(args.sse_steps),
        "--sse-wait",
        str(args.sse_wait),
    ]
    base = f"http://127.0.0.1:{port}"
    with child(argv, "server") as proc:
        wait_until_up(base, proc, "the server")
        time.sleep(0.3)
        yield base, proc.pid


# --- a minimal HTTP/1.1 GET for the checks ------------------------------------------------------
async def get_json(base: str, path: str) -> Any:
    host, _, port = base.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return json.loads(body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


# --- (a) runs/s ---------------------------------------------------------------------------------
@dataclass
class RunsRow:
    mode: str
    concurrency: int
    runs: int
    seconds: float
    runs_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_run: float
    errors: int
    first_error: str = ""


async def _closed_loop(base: str, wait: bool, concurrency: int, seconds: float) -> dict[str, Any]:
    body = json.dumps({"flow": "three", "inputs": {"x": 1}, "wait": wait}).encode()
    client = LoadClient(base + "/api/runs", body)
    latencies: list[float] = []
    errors = 0
    first_error = ""
    ok_status = 200 if wait else 202

    async def worker(stop: float) -> None:
        nonlocal errors, first_error
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                status = await client.post()
            except OSError as exc:
                status, first_error = 0, first_error or f"{type(exc).__name__}: {exc}"
            if status == ok_status:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
                first_error = first_error or f"HTTP {status}"

    warm = time.perf_counter() + 0.3
    await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
    await _drained(base)
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t0 + seconds) for _ in range(concurrency)))
    await _drained(base)  # wait: false: the runs go on after their answers
    wall = time.perf_counter() - t0
    client.close()
    return {"latencies": latencies, "wall": wall, "errors": errors, "first_error": first_error}


async def _drained(base: str) -> None:
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        if not (await get_json(base, "/api/runs?status=running&limit=1"))["runs"]:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError("runs still running after 120 s")


def measure_runs(base: str, pid: int, args: Any) -> list[RunsRow]:
    rows = []
    for wait in (True, False):
        for c in args.concurrency:
            c0 = cpu_seconds(pid)
            got = run_loop(_closed_loop(base, wait, c, args.seconds))
            cpu = cpu_seconds(pid) - c0
            n = len(got["latencies"])
            rows.append(
                RunsRow(
                    "wait" if wait else "no wait",
                    c,
                    n,
                    got["wall"],
                    n / got["wall"],
                    pct(got["latencies"], 0.5),
                    pct(got["latencies"], 0.99),
                    cpu * 1000 / max(1, n),  # warm-up runs included in cpu: a slight overstatement
                    got["errors"],
                    got["first_error"],
                )
            )
    return rows


async def _all_succeeded(base: str) -> tuple[int, int]:
    runs = (await get_json(base, "/api/runs?flow=three&limit=1000"))["runs"]
    return sum(r["status"] == "succeeded" for r in runs), len(runs)


# --- (b) SSE fan-out --------------------------------------------------------------------------
@dataclass
class Watch:
    """What one watcher saw: durable events (seq, hash, ts, received), live messages (kind,
    step, attempt, received), whether ``end`` came, and when it was connected."""

    events: list[tuple[int, str, float, float]] = field(default_factory=list)
    live: list[tuple[str, str | None, int, float]] = field(default_factory=list)
    ended: bool = False
    connected_at: float = 0.0
    error: str = ""


async def _watch(base: str, run_id: str, ready: asyncio.Event) -> Watch:
    out = Watch()
    host, _, port = base.removeprefix("http://").partition(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /api/runs/{run_id}/follow HTTP/1.1\r\nHost: {host}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            out.error = head.split(b"\r\n", 1)[0].decode()
            return out
        out.connected_at = time.time()
        ready.set()
        pending = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            received = time.time()
            pending += data[:-2]
            while b"\n\n" in pending:
                message, pending = pending.split(b"\n\n", 1)
                kind, payload = "", b""
                for line in message.split(b"\n"):
                    if line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"data: "):
                        payload = line[6:]
                if kind == "event":
                    e = json.loads(payload)
                    out.events.append((e["seq"], e["hash"], e["ts"], received))
                elif kind == "live":
                    e = json.loads(payload)
                    out.live.append((e["kind"], e["step"], e["attempt"], received))
                elif kind == "end":
                    out.ended = True
        writer.close()
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    return out


async def _watchers(base: str, run_id: str, n: int) -> list[Watch]:
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(_watch(base, run_id, r)) for r in readies]
    return await asyncio.gather(*tasks)


def watch_run(base: str, run_id: str, n: int) -> list[Watch]:
    return run_loop(_watchers(base, run_id, n))


@dataclass
class FanOut:
    watchers: int
    events: int
    measured_events: int
    complete: int
    live_complete: int
    live_p50_ms: float
    live_p99_ms: float
    live_max_ms: float
    durable_p50_ms: float
    durable_p99_ms: float
    durable_max_ms: float
    server_cpu_ms_per_delivery: float
    problems: list[str]


def measure_sse(base: str, pid: int, args: Any) -> FanOut:
    body = json.dumps({"flow": "watched", "inputs": {"x": 0}, "wait": False}).encode()

    async def start() -> str:
        host, _, port = base.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /api/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        raw = await reader.read()
        writer.close()
        return str(json.loads(raw.partition(b"\r\n\r\n")[2])["run_id"])

    run_id = run_loop(start())
    per = [args.watchers // args.watcher_procs] * args.watcher_procs
    per[0] += args.watchers - sum(per)
    c0 = cpu_seconds(pid)
    with ProcessPoolExecutor(max_workers=args.watcher_procs) as pool:
        futures = [pool.submit(watch_run, base, run_id, k) for k in per]
        watches = [w for f in futures for w in f.result()]
    cpu = cpu_seconds(pid) - c0
    recorded = run_loop(get_json(base, f"/api/runs/{run_id}/events"))["events"]
    truth = [(e["seq"], e["hash"]) for e in recorded]
    problems = []
    connected = max((w.connected_at for w in watches), default=0.0)
    measured = [e for e in recorded if e["ts"] > connected]
    ts_of = {(e["kind"], e["step"], e["attempt"]): e["ts"] for e in recorded}
    live_ms: list[float] = []
    durable_ms: list[float] = []
    complete = live_complete = 0
    for i, w in enumerate(watches):
        if w.error:
            problems.append(f"watcher {i}: {w.error}")
            continue
        if [(seq, h) for seq, h, _, _ in w.events] == truth and w.ended:
            complete += 1
        else:
            problems.append(f"watcher {i}: {len(w.events)} of {len(truth)} events, end={w.ended}")
        durable_ms += [(got - ts) * 1000 for _, _, ts, got in w.events if ts > connected]
        seen = {(k, s, a) for k, s, a, _ in w.live}
        after = [(e["kind"], e["step"], e["attempt"]) for e in recorded if e["ts"] > w.connected_at]
        if all(key in seen for key in after):
            live_complete += 1
        for kind, step_id, attempt, got in w.live:
            ts = ts_of.get((kind, step_id, attempt))
            if ts is not None and ts > connected:
                live_ms.append((got - ts) * 1000)
    return FanOut(
        args.watchers,
        len(recorded),
        len(measured),
        complete,
        live_complete,
        pct([x / 1000 for x in live_ms], 0.5),
        pct([x / 1000 for x in live_ms], 0.99),
        max(live_ms, default=0.0),
        pct([x / 1000 for x in durable_ms], 0.5),
        pct([x / 1000 for x in durable_ms], 0.99),
        max(durable_ms, default=0.0),
        cpu * 1000 / max(1, args.watchers * len(recorded)),
        problems[:10],
    )


# --- output -------------------------------------------------------------------------------------
def print_runs(rows: list[RunsRow], args: Any, check: tuple[int, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"runs API: POST /api/runs of a 3-step flow, closed loop, {args.seconds:g} s per "
        f"row ({args.store} store, uvicorn on {uvicorn_stack('auto')})"
    )
    for col in ("mode", "connections", "runs", "runs/s", "p50", "p99", "server CPU/run", "errors"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(
            r.mode,
            str(r.concurrency),
            str(r.runs),
            f"{r.runs_per_s:.0f}",
            f"{r.p50_ms:.2f} ms",
            f"{r.p99_ms:.2f} ms",
            f"{r.server_cpu_ms_per_run:.2f} ms",
            str(r.errors),
        )
    console = Console(width=160)
    console.print(table)
    console.print(f"the last 1,000 runs of 'three': {check[0]} of {check[1]} succeeded")
    for r in rows:
        if r.first_error:
            console.print(f"{r.mode} × {r.concurrency}: first error: {r.first_error}")


def print_fanout(f: FanOut, args: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"SSE fan-out: {f.watchers} watchers ({args.watcher_procs} processes) follow one "
        f"run of {f.events} events ({f.measured_events} appended after all were connected; "
        f"{args.store} store)"
    )
    for col in ("message", "delay p50", "delay p99", "delay max", "watchers complete"):
        table.add_column(col, justify="left" if col == "message" else "right")
    table.add_row(
        "live (appended)",
        f"{f.live_p50_ms:.2f} ms",
        f"{f.live_p99_ms:.2f} ms",
        f"{f.live_max_ms:.2f} ms",
        f"{f.live_complete}/{f.watchers}",
    )
    table.add_row(
        "event (durable, in order)",
        f"{f.durable_p50_ms:.2f} ms",
        f"{f.durable_p99_ms:.2f} ms",
        f"{f.durable_max_ms:.2f} ms",
        f"{f.complete}/{f.watchers}",
    )
    console = Console(width=160)
    console.print(table)
    console.print(
        f"server CPU per delivered event (both messages): {f.server_cpu_ms_per_delivery:.3f} ms"
    )
    for p in f.problems:
        console.print(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_bench", description=__doc__)
    parser.add_argument("--store", choices=("sync", "batch", "memory"), default="sync")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--watcher-procs", type=int, default=2)
    parser.add_argument("--sse-steps", type=int, default=20)
    parser.add_argument("--sse-wait", type=float, default=1.5)
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.store, args.port, args.workdir, args.sse_steps, args.sse_wait)
        return 0
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    load = [os.getloadavg()]
    rows: list[RunsRow] = []
    check = (0, 0)
    fan: FanOut | None = None
    with tempfile.TemporaryDirectory() as workdir, server_under_test(args, workdir) as (base, pid):
        if not args.skip_runs:
            print("measuring runs/s ...", file=sys.stderr, flush=True)
            rows = measure_runs(base, pid, args)
            check = run_loop(_all_succeeded(base))
            load.append(os.getloadavg())
        if not args.skip_sse:
            print("measuring SSE fan-out ...", file=sys.stderr, flush=True)
            fan = measure_sse(base, pid, args)
            load.append(os.getloadavg())
    if rows:
        print_runs(rows, args, check)
    if fan is not None:
        print_fanout(fan, args)
    print(
        f"load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load[0])}, after: "
        f"{' '.join(f'{x:.2f}' for x in load[-1])} ({os.cpu_count()} cores)"
    )
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
                        for k in ("store", "concurrency", "seconds", "watchers", "sse_steps")
                    },
                    "uvicorn": uvicorn_stack("auto"),
                    "runs": [asdict(r) for r in rows],
                    "sse": asdict(fan) if fan is not None else None,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
