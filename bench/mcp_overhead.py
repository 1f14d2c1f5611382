"""``python -m bench.mcp_overhead``: what erpoz adds to one MCP tool call, in milliseconds.

One small MCP server (``bench/mcp_server.py``, the SDK's ``MCPServer`` over stdio) per path,
each in its own process, answers every call. The same call goes out by four paths, all from
inside one step of one run (memory store), interleaved round-robin so that drift in the
machine hits every path alike (``--warmup`` rounds dropped first):

* **direct**: ``await client.call_tool("add", {...})`` on an ``mcp.Client`` session that the
  benchmark opened itself, on the step's event loop: what any MCP client pays;
* **erpoz session**: ``McpSession.call`` — erpoz's per-process session, which lives on an
  event loop thread of its own (the hop there and back is what it adds);
* **ctx.tools (read-only)**: ``await ctx.tools.call("bench__add", ...)`` — policy decision,
  argument check against the server's JSON schema, ``policy_decided``, ``mcp_called`` and
  ``tool_called`` events appended to the run's log;
* **ctx.tools (side effect)**: the same for ``bench__note``, a tool without the read-only hint:
  an idempotency key per call (sent in ``_meta``), the result journaled.

Each call is timed on its own (``perf_counter_ns``); the table gives p50 / p99 / mean and what
each path adds to the direct one at p50 and p99, with the load average before and after.

Options: ``--n`` calls per path (default 1000), ``--warmup`` (default 100), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import erpoz
from erpoz import Engine
from erpoz.store import MemoryStore
from erpoz.tools import Rule, ToolPolicy, ToolRegistry

SERVER = str(Path(__file__).resolve().parent / "mcp_server.py")
Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Stats:
    path: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    added_p50_ms: float | None
    added_p99_ms: float | None


def pct(xs: list[int], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e6


def summarise(times: dict[str, list[int]], baseline: str) -> list[Stats]:
    base = times[baseline]
    out = []
    for name, xs in times.items():
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        added = name != baseline
        out.append(
            Stats(
                name,
                len(xs),
                p50,
                p99,
                statistics.fmean(xs) / 1e6,
                p50 - pct(base, 0.5) if added else None,
                p99 - pct(base, 0.99) if added else None,
            )
        )
    return out


async def interleaved(calls: dict[str, Call], n: int, warmup: int) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {name: [] for name in calls}
    clock = time.perf_counter_ns
    for i in range(warmup + n):
        for name, call in calls.items():
            t0 = clock()
            await call()
            dt = clock() - t0
            if i >= warmup:
                times[name].append(dt)
    return times


async def measure(n: int, warmup: int) -> tuple[list[Stats], dict[str, int]]:
    from mcp import Client, StdioServerParameters

    from erpoz.integrations.mcp import ServerSpec, close_sessions, session, tools_of

    def spec(name: str) -> ServerSpec:
        # a distinct env per path: each path gets its own server process
        return ServerSpec(
            name="bench",
            transport="stdio",
            command=sys.executable,
            args=(SERVER,),
            env={"BENCH_PATH": name},
            prefix="bench__",
        )

    registry = ToolRegistry(
        await tools_of([spec("tools")]), ToolPolicy([Rule("bench", "allow", "bench__*")])
    )
    own = session(spec("session"))
    await own.list_tools()
    args = {"a": 20, "b": 22}
    params = StdioServerParameters(command=sys.executable, args=[SERVER])

    @erpoz.step
    async def calls(rounds: int, ctx: erpoz.Context) -> dict[str, list[int]]:
        async with Client(params) as client:
            await client.list_tools()
            return await interleaved(
                {
                    "direct (mcp.Client)": lambda: client.call_tool("add", args),
                    "erpoz session": lambda: own.call("add", args),
                    "ctx.tools (read-only)": lambda: ctx.tools.call("bench__add", **args),
                    "ctx.tools (side effect)": lambda: ctx.tools.call("bench__note", text="hi"),
                },
                rounds,
                warmup,
            )

    flow = erpoz.Flow("mcp_overhead", inputs={"rounds": int})
    flow.output(flow.add(calls, rounds=flow.input("rounds")))
    store = MemoryStore()
    try:
        result = await Engine(store, services={ToolRegistry: registry}).run(flow, {"rounds": n})
        times = result.unwrap()
        kinds: dict[str, int] = {}
        for e in await store.events(result.run_id):
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        expected = 2 * (n + warmup)
        if kinds.get("tool_called") != expected or kinds.get("mcp_called") != expected:
            raise RuntimeError(f"expected {expected} tool_called and mcp_called events: {kinds}")
    finally:
        await store.close()
        close_sessions()
    return summarise(times, "direct (mcp.Client)"), kinds


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mcp_overhead",
        description="Latency erpoz adds to one MCP tool call, against a direct SDK call.",
        epilog="example: python -m bench.mcp_overhead --n 1000 --warmup 100",
    )
    parser.add_argument("--n", type=int, default=1000, help="timed calls per path (1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed rounds first (100)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    console = Console()
    load_before = os.getloadavg()
    rows, kinds = asyncio.run(measure(args.n, args.warmup))
    load_after = os.getloadavg()
    table = Table(title=f"one MCP tool call (stdio), {args.n} calls per path, interleaved")
    for col in ("path", "p50 ms", "p99 ms", "mean ms", "added p50", "added p99", "p50 ratio"):
        table.add_column(col, justify="left" if col == "path" else "right")
    base = rows[0].p50_ms
    for r in rows:
        table.add_row(
            r.path,
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _ms(r.mean_ms),
            _ms(r.added_p50_ms, True),
            _ms(r.added_p99_ms, True),
            f"{r.p50_ms / base:.2f}×",
        )
    console.print(table)
    from importlib.metadata import version

    console.print(
        f"mcp {version('mcp')} · Python {platform.python_version()} · {os.cpu_count()} cores · "
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/"
        f"{load_after[2]:.2f} · events per run: {kinds}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [asdict(r) for r in rows],
                    "load_before": load_before,
                    "load_after": load_after,
                    "n": args.n,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
