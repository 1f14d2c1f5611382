"""Peer benchmarks: LangGraph and a plain-asyncio floor.

This module is the *peer* half of the erpoz benchmark. Every measurement is a
plain function returning a float, so the erpoz half can import it and put its
own numbers next to these.

Methodology (applies to every function unless its docstring says otherwise):

* Each function builds whatever it needs (graph, checkpointer, event loop)
  outside the timed region, then does its own **warm-up** first: at least one
  untimed call of the measured operation (two for the micro-benchmarks).
* Micro-benchmarks (chains, fan-out, compile) then take the **median of
  ``reps`` repetitions**. One repetition times ``inner`` back-to-back calls,
  with ``inner`` calibrated from the warm-up so that a repetition lasts at least
  ``min_rep_s`` (the floor runs in microseconds and needs many calls; a
  LangGraph invocation is long enough on its own). The result is the median of
  the per-call times.
* Concurrent-run benchmarks warm up with a small gather (``min(n_runs, 100)``
  runs) and then report the **median of ``reps``** full-size runs (``reps``
  defaults to 1 for LangGraph because a 10,000-run gather takes tens of
  seconds).
* Every timed region is wall clock (``time.perf_counter``) with the garbage
  collector left on, as in a real program. The event loop is the stdlib
  ``asyncio`` loop (no uvloop); one fresh loop per function call.
* LangGraph graphs are invoked with ``ainvoke`` and a ``recursion_limit`` large
  enough for the graph (LangGraph's default of 25 supersteps would stop a
  100-node chain). The SQLite checkpointer uses LangGraph's default
  ``durability="async"`` and a fresh ``thread_id`` per invocation so that the
  checkpoint history of one thread does not grow across repetitions.

Memory per run: ``ru_maxrss`` is a high-water mark for the whole process, so it
is taken in a fresh subprocess (see ``measure_concurrent_in_subprocess``)::

    python -m bench.peers rss langgraph 10000     # prints one JSON object

The child imports the implementation, does a small warm-up call of the
concurrent-runs function (imports, compile, first invocation), records the
peak RSS as the baseline, then calls it with ``n_runs`` and records the new
peak; ``rss_per_run_kb = (peak - baseline) / n_runs`` is the memory the runs
held at their high-water mark, per run in flight. On Linux the child reads
``VmHWM`` from ``/proc/self/status`` rather than ``ru_maxrss``, because
``ru_maxrss`` carries the parent's peak across fork/exec. The implementation
can be ``floor``, ``langgraph`` or any ``module:function`` with the signature
of ``floor_concurrent_runs_s`` (for the erpoz half).

Run everything (about a minute on a 2-core machine, two thirds of it the
10,000-run LangGraph case), from the repository root::

    python -m bench.peers            # table (rich if installed)
    python -m bench.peers --json     # same numbers as JSON

LangGraph and ``langgraph-checkpoint-sqlite`` are imported lazily inside the
LangGraph functions, so this module (and the floor) imports without them.
"""

import argparse
import asyncio
import importlib
import itertools
import json
import math
import operator
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypedDict, TypeVar

__all__ = [
    "ConcurrentRunsFn",
    "PeerResult",
    "RssResult",
    "compile_ms",
    "floor_chain_us_per_step",
    "floor_concurrent_runs_s",
    "floor_fanout_ms",
    "langgraph_chain_us_per_step",
    "langgraph_compile_only_ms",
    "langgraph_concurrent_runs_s",
    "langgraph_fanout_ms",
    "measure_concurrent_in_subprocess",
    "median_prepared_call_s",
    "peak_rss_mb",
    "run_all",
]

Checkpointer = Literal["none", "sqlite"]
#: Signature shared by every ``*_concurrent_runs_s`` function.
ConcurrentRunsFn = Callable[..., float]

REPO_ROOT = Path(__file__).resolve().parent.parent

_T = TypeVar("_T")
_P = TypeVar("_P")


# --------------------------------------------------------------------------- #
# Timing helpers
# --------------------------------------------------------------------------- #


async def _median_per_call_s(
    call: Callable[[], Awaitable[object]],
    *,
    reps: int,
    min_rep_s: float,
    warmup: int = 2,
) -> float:
    """Warm up, calibrate, then return the median over ``reps`` of seconds per call."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    # Warm-up: the first call pays for lazy imports and caches; the last one is
    # timed only to calibrate how many calls make up one repetition.
    warm_s = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        await call()
        warm_s = time.perf_counter() - t0
    inner = max(1, math.ceil(min_rep_s / max(warm_s, 1e-9)))
    samples: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            await call()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def median_prepared_call_s(
    prepare: Callable[[], _P],
    call: Callable[[_P], object],
    *,
    reps: int,
    min_rep_s: float,
    warmup: int = 2,
) -> float:
    """Like ``_median_per_call_s`` for a synchronous ``call`` that needs fresh input each time.

    Every call gets its own ``prepare()`` result, built before the repetition starts, so only
    ``call`` is timed (used to time ``compile()`` without building the graph).
    """
    if reps < 1:
        raise ValueError("reps must be >= 1")
    warm_s = 0.0
    for _ in range(max(1, warmup)):
        obj = prepare()
        t0 = time.perf_counter()
        call(obj)
        warm_s = time.perf_counter() - t0
    inner = max(1, math.ceil(min_rep_s / max(warm_s, 1e-9)))
    samples: list[float] = []
    for _ in range(reps):
        objs = [prepare() for _ in range(inner)]
        t0 = time.perf_counter()
        for obj in objs:
            call(obj)
        samples.append((time.perf_counter() - t0) / inner)
        del objs
    return statistics.median(samples)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``).

    Caveat: on Linux ``ru_maxrss`` survives ``fork``/``exec``, so a freshly spawned
    child starts with its parent's high-water mark. ``_image_peak_rss_mb`` avoids that.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS reports bytes.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _image_peak_rss_mb() -> float:
    """Peak RSS of the current process image, in MiB.

    ``VmHWM`` from ``/proc/self/status`` where available (Linux): unlike ``ru_maxrss``
    it starts afresh at ``exec``, so a child does not inherit the parent's peak.
    Falls back to ``peak_rss_mb()`` elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return peak_rss_mb()


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- #
# Plain-Python floor
# --------------------------------------------------------------------------- #


async def _step(x: int) -> int:
    return x + 1


async def _floor_chain(n_steps: int) -> int:
    x = 0
    for _ in range(n_steps):
        x = await _step(x)
    return x


def floor_chain_us_per_step(n_steps: int = 100, *, reps: int = 5, min_rep_s: float = 0.05) -> float:
    """µs per step of ``n_steps`` trivial coroutines awaited in sequence in one coroutine.

    Median of ``reps`` repetitions after warm-up (see module docstring).
    """

    async def main() -> float:
        async def once() -> None:
            assert await _floor_chain(n_steps) == n_steps

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

    return _run(main()) / n_steps * 1e6


async def _floor_fanout(width: int) -> int:
    x = await _step(0)  # source
    results = await asyncio.gather(*(_step(x) for _ in range(width)))  # parallel branches
    return sum(results)  # join


def floor_fanout_ms(width: int = 50, *, reps: int = 5, min_rep_s: float = 0.05) -> float:
    """ms per invocation: source -> ``width`` concurrent coroutines (``asyncio.gather``) -> join.

    Median of ``reps`` repetitions after warm-up.
    """

    async def main() -> float:
        async def once() -> None:
            assert await _floor_fanout(width) == 2 * width

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

    return _run(main()) * 1e3


async def _floor_sleep_chain(n_steps: int, sleep_s: float) -> int:
    x = 0
    for _ in range(n_steps):
        await asyncio.sleep(sleep_s)
        x += 1
    return x


async def _timed_gather(make_run: Callable[[], Awaitable[object]], n_runs: int, reps: int) -> float:
    """Warm up with a small gather, then median wall seconds of ``reps`` full gathers."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    await asyncio.gather(*(make_run() for _ in range(min(n_runs, 100))))
    samples: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await asyncio.gather(*(make_run() for _ in range(n_runs)))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def floor_concurrent_runs_s(
    n_runs: int, n_steps: int = 5, sleep_s: float = 0.01, *, reps: int = 3
) -> float:
    """Wall s for ``n_runs`` concurrent chains of ``n_steps`` × ``await asyncio.sleep(sleep_s)``.

    ``asyncio.gather`` of ``n_runs`` coroutines. Small warm-up gather, then median of ``reps``.
    """
    return _run(_timed_gather(lambda: _floor_sleep_chain(n_steps, sleep_s), n_runs, reps))


# --------------------------------------------------------------------------- #
# LangGraph
# --------------------------------------------------------------------------- #


class ChainState(TypedDict):
    x: int


class FanoutState(TypedDict):
    x: int
    results: Annotated[list[int], operator.add]


class _ChainNode(Protocol):
    def __call__(self, state: ChainState) -> Awaitable[dict[str, int]]: ...


async def _lg_inc(state: ChainState) -> dict[str, int]:
    return {"x": state["x"] + 1}


def _make_lg_sleep_inc(sleep_s: float) -> _ChainNode:
    async def sleep_inc(state: ChainState) -> dict[str, int]:
        await asyncio.sleep(sleep_s)
        return {"x": state["x"] + 1}

    return sleep_inc


def _build_lg_chain(
    n_steps: int,
    node: _ChainNode = _lg_inc,
) -> Any:
    """Uncompiled ``StateGraph`` of ``n_steps`` linear nodes ``s0 -> s1 -> ...``."""
    from langgraph.graph import END, START, StateGraph

    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    builder = StateGraph(ChainState)
    names = [f"s{i}" for i in range(n_steps)]
    for name in names:
        builder.add_node(name, node)
    builder.add_edge(START, names[0])
    for prev, nxt in itertools.pairwise(names):
        builder.add_edge(prev, nxt)
    builder.add_edge(names[-1], END)
    return builder


def _lg_config(n_supersteps: int, thread_id: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"recursion_limit": n_supersteps + 10}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    return config


def langgraph_chain_us_per_step(
    n_steps: int = 100,
    checkpointer: Checkpointer = "none",
    *,
    reps: int = 5,
    min_rep_s: float = 0.2,
) -> float:
    """µs per step of one ``ainvoke`` of a ``n_steps``-node linear LangGraph ``StateGraph``.

    ``checkpointer="sqlite"`` compiles with ``AsyncSqliteSaver`` on a SQLite file in a
    temporary directory (WAL, ``synchronous=NORMAL`` as erpoz's store) and gives each
    invocation its own ``thread_id``. Per-step =
    wall per invocation / ``n_steps``; median of ``reps`` after warm-up.
    """
    if checkpointer not in ("none", "sqlite"):
        raise ValueError(f"checkpointer must be 'none' or 'sqlite', not {checkpointer!r}")
    builder = _build_lg_chain(n_steps)

    async def measure(graph: Any, with_thread: bool) -> float:
        async def once() -> None:
            thread = uuid.uuid4().hex if with_thread else None
            out = await graph.ainvoke({"x": 0}, _lg_config(n_steps, thread))
            assert out["x"] == n_steps, out

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

    async def main() -> float:
        if checkpointer == "none":
            return await measure(builder.compile(), with_thread=False)
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        with tempfile.TemporaryDirectory(prefix="bench-lg-") as tmp:
            db = Path(tmp) / "checkpoints.sqlite"
            async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
                await saver.setup()
                # like for like: erpoz's SQLite rows run synchronous=NORMAL; the saver would
                # run FULL (an fsync per commit) if left alone
                await saver.conn.execute("PRAGMA synchronous=NORMAL")
                return await measure(builder.compile(checkpointer=saver), with_thread=True)

    return _run(main()) / n_steps * 1e6


async def _lg_source(state: FanoutState) -> dict[str, int]:
    return {"x": state["x"] + 1}


async def _lg_branch(state: FanoutState) -> dict[str, list[int]]:
    return {"results": [state["x"] + 1]}


async def _lg_join(state: FanoutState) -> dict[str, int]:
    return {"x": sum(state["results"])}


def _build_lg_fanout(width: int) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(FanoutState)
    builder.add_node("source", _lg_source)
    builder.add_node("join", _lg_join)
    builder.add_edge(START, "source")
    for i in range(width):
        name = f"b{i}"
        builder.add_node(name, _lg_branch)
        builder.add_edge("source", name)
        builder.add_edge(name, "join")
    builder.add_edge("join", END)
    return builder


def langgraph_fanout_ms(width: int = 50, *, reps: int = 5, min_rep_s: float = 0.2) -> float:
    """ms per ``ainvoke``: source -> ``width`` parallel async nodes -> one join node.

    Branch outputs are merged through a ``list`` state key with an ``operator.add``
    reducer. Median of ``reps`` after warm-up.
    """
    graph = _build_lg_fanout(width).compile()

    async def main() -> float:
        async def once() -> None:
            out = await graph.ainvoke({"x": 0, "results": []}, _lg_config(3))
            assert len(out["results"]) == width and out["x"] == 2 * width, out

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

    return _run(main()) * 1e3


def langgraph_concurrent_runs_s(
    n_runs: int, n_steps: int = 5, sleep_s: float = 0.01, *, reps: int = 1
) -> float:
    """Wall s for ``n_runs`` concurrent ``ainvoke`` of a ``n_steps``-node chain (in memory).

    Each node awaits ``asyncio.sleep(sleep_s)``. One compiled graph, ``asyncio.gather``
    of ``n_runs`` invocations. Small warm-up gather, then median of ``reps`` (default 1).
    """
    graph = _build_lg_chain(n_steps, _make_lg_sleep_inc(sleep_s)).compile()
    config = _lg_config(n_steps)

    async def one_run() -> None:
        out = await graph.ainvoke({"x": 0}, config)
        assert out["x"] == n_steps, out

    return _run(_timed_gather(one_run, n_runs, reps))


def compile_ms(n_steps: int = 100, *, reps: int = 5, min_rep_s: float = 0.2) -> float:
    """ms to build (nodes + edges) and ``compile()`` a ``n_steps``-node linear LangGraph.

    Median of ``reps`` after warm-up.
    """

    async def main() -> float:
        async def once() -> None:
            _build_lg_chain(n_steps).compile()

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

    return _run(main()) * 1e3


def langgraph_compile_only_ms(
    n_steps: int = 100, *, reps: int = 5, min_rep_s: float = 0.2
) -> float:
    """ms for ``compile()`` alone of a ``n_steps``-node linear LangGraph ``StateGraph``.

    Each call compiles a freshly built builder; building is done before the timed
    repetition (see ``median_prepared_call_s``). Median of ``reps`` after warm-up.
    """
    return (
        median_prepared_call_s(
            lambda: _build_lg_chain(n_steps),
            lambda builder: builder.compile(),
            reps=reps,
            min_rep_s=min_rep_s,
        )
        * 1e3
    )


# --------------------------------------------------------------------------- #
# Memory per run (fresh subprocess)
# --------------------------------------------------------------------------- #

_CONCURRENT_IMPLS: dict[str, ConcurrentRunsFn] = {
    "floor": floor_concurrent_runs_s,
    "langgraph": langgraph_concurrent_runs_s,
}


@dataclass(frozen=True)
class RssResult:
    impl: str
    n_runs: int
    n_steps: int
    sleep_s: float
    reps: int
    wall_s: float
    baseline_rss_mb: float
    peak_rss_mb: float
    rss_per_run_kb: float


def _resolve_concurrent(impl: str) -> ConcurrentRunsFn:
    if impl in _CONCURRENT_IMPLS:
        return _CONCURRENT_IMPLS[impl]
    if ":" not in impl:
        raise ValueError(f"unknown impl {impl!r}: use floor, langgraph or module:function")
    module_name, func_name = impl.split(":", 1)
    fn: ConcurrentRunsFn = getattr(importlib.import_module(module_name), func_name)
    return fn


def _rss_child(impl: str, n_runs: int, n_steps: int, sleep_s: float, reps: int) -> RssResult:
    """Body of ``python -m bench.peers rss ...``; meant to run in a fresh process."""
    fn = _resolve_concurrent(impl)
    # Warm-up call: imports, graph construction and first invocations happen here,
    # so the baseline below includes them and the delta is the runs' own memory.
    fn(min(n_runs, 100), n_steps, sleep_s, reps=1)
    baseline = _image_peak_rss_mb()
    wall = fn(n_runs, n_steps, sleep_s, reps=reps)
    peak = _image_peak_rss_mb()
    return RssResult(
        impl=impl,
        n_runs=n_runs,
        n_steps=n_steps,
        sleep_s=sleep_s,
        reps=reps,
        wall_s=wall,
        baseline_rss_mb=baseline,
        peak_rss_mb=peak,
        rss_per_run_kb=(peak - baseline) * 1024 / n_runs,
    )


def measure_concurrent_in_subprocess(
    impl: str,
    n_runs: int,
    n_steps: int = 5,
    sleep_s: float = 0.01,
    *,
    reps: int = 1,
    timeout_s: float | None = None,
    python: str | None = None,
) -> RssResult | None:
    """Run ``python -m bench.peers rss IMPL N_RUNS`` in a fresh process; parse its JSON.

    Gives both the wall time and the peak-RSS growth per run. Returns ``None`` if the
    child did not finish within ``timeout_s`` (the child is killed).
    """
    cmd = [
        python or sys.executable,
        "-m",
        "bench.peers",
        "rss",
        impl,
        str(n_runs),
        "--n-steps",
        str(n_steps),
        "--sleep-s",
        str(sleep_s),
        "--reps",
        str(reps),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return RssResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- #
# Run everything
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class PeerResult:
    name: str
    impl: str
    value: float | None  # None: capped / did not finish
    unit: str
    note: str = ""


def run_all(
    *,
    n_steps: int = 100,
    width: int = 50,
    run_counts: tuple[int, ...] = (1_000, 10_000),
    cap_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[PeerResult]:
    """Run every peer measurement; the concurrent cases run in fresh subprocesses.

    A concurrent case whose child is still running after ``cap_s`` seconds is killed
    and reported with ``value=None``.
    """

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    out: list[PeerResult] = []

    def add(name: str, impl: str, fn: Callable[[], float], unit: str, note: str = "") -> None:
        say(f"{name} [{impl}] ...")
        t0 = time.perf_counter()
        value = fn()
        say(f"  {value:.4g} {unit} ({time.perf_counter() - t0:.1f} s)")
        out.append(PeerResult(name, impl, value, unit, note))

    chain = f"chain {n_steps} steps"
    add(chain, "floor", lambda: floor_chain_us_per_step(n_steps), "µs/step")
    add(chain, "langgraph", lambda: langgraph_chain_us_per_step(n_steps, "none"), "µs/step")
    add(
        chain,
        "langgraph+sqlite",
        lambda: langgraph_chain_us_per_step(n_steps, "sqlite"),
        "µs/step",
        "AsyncSqliteSaver, file in tmp dir",
    )
    fan = f"fan-out {width}"
    add(fan, "floor", lambda: floor_fanout_ms(width), "ms/run")
    add(fan, "langgraph", lambda: langgraph_fanout_ms(width), "ms/run")
    add(f"compile {n_steps} nodes", "langgraph", lambda: compile_ms(n_steps), "ms")

    for n_runs in run_counts:
        for impl in ("floor", "langgraph"):
            reps = 3 if (impl == "floor" or n_runs <= 1_000) else 1
            name = f"{n_runs:,} concurrent runs (5×10 ms)"
            say(f"{name} [{impl}] in subprocess ...")
            t0 = time.perf_counter()
            res = measure_concurrent_in_subprocess(impl, n_runs, reps=reps, timeout_s=cap_s)
            took = time.perf_counter() - t0
            if res is None:
                say(f"  capped after {cap_s:.0f} s")
                out.append(PeerResult(name, impl, None, "s", f"did not finish in {cap_s:.0f} s"))
                continue
            say(f"  {res.wall_s:.3g} s, {res.rss_per_run_kb:.3g} KiB/run ({took:.1f} s)")
            out.append(PeerResult(name, impl, res.wall_s, "s", f"median of {reps}"))
            out.append(
                PeerResult(
                    f"{n_runs:,} runs: peak RSS growth",
                    impl,
                    res.rss_per_run_kb,
                    "KiB/run",
                    f"peak {res.peak_rss_mb:.0f} MiB, baseline {res.baseline_rss_mb:.0f} MiB",
                )
            )
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "capped"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _print_table(results: list[PeerResult], header: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(header)
        rows = [(r.name, r.impl, _fmt(r.value), r.unit, r.note) for r in results]
        titles = ("benchmark", "impl", "value", "unit", "note")
        widths = [max(len(t), *(len(row[i]) for row in rows)) for i, t in enumerate(titles)]
        for row in (titles, *rows):
            print(
                "  ".join(
                    c.rjust(w) if i == 2 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        return
    table = Table(title=header)
    table.add_column("benchmark")
    table.add_column("impl")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("note", style="dim")
    for r in results:
        table.add_row(r.name, r.impl, _fmt(r.value), r.unit, r.note)
    Console().print(table)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"python": sys.version.split()[0]}
    for pkg in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description="Peer benchmarks: LangGraph and a floor."
    )
    sub = parser.add_subparsers(dest="cmd")
    rss = sub.add_parser("rss", help="one concurrent-runs measurement in this process, as JSON")
    rss.add_argument("impl", help="floor, langgraph or module:function")
    rss.add_argument("n_runs", type=int)
    rss.add_argument("--n-steps", type=int, default=5)
    rss.add_argument("--sleep-s", type=float, default=0.01)
    rss.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--cap-s", type=float, default=60.0, help="cap per concurrent case")
    parser.add_argument(
        "--runs", type=int, nargs="+", default=[1_000, 10_000], help="concurrent run counts"
    )
    args = parser.parse_args(argv)

    if args.cmd == "rss":
        res = _rss_child(args.impl, args.n_runs, args.n_steps, args.sleep_s, args.reps)
        print(json.dumps(asdict(res)))
        return 0

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results = run_all(run_counts=tuple(args.runs), cap_s=args.cap_s, progress=progress)
    total = time.perf_counter() - t0
    versions = _versions()
    if args.json:
        payload = {
            "versions": versions,
            "total_s": total,
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(payload, indent=2))
    else:
        header = "peers: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        _print_table(results, header)
        print(f"total {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
