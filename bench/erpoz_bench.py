"""erpoz benchmarks: the same measurements as ``bench/peers.py``, for erpoz.

Every function returns a plain float so that ``python -m bench`` can put it next to the
LangGraph and plain-asyncio floor figures from ``bench.peers``. The methodology is the one
described in the ``bench.peers`` docstring, and the timing helpers are shared with it:

* Micro-benchmarks (chain, fan-out, compile) build the flow, plan, store and engine outside
  the timed region, warm up (two untimed calls; the second calibrates how many calls make one
  repetition of at least ``min_rep_s``), then report the **median of ``reps``** repetitions
  of the per-call time (``bench.peers._median_per_call_s``).
* Every run goes through the public API: ``await Engine(store).run(plan, inputs)``, one
  engine and one store per measurement, the plan compiled once up front. Each run's
  ``RunResult`` is checked (status ``succeeded`` and the expected output); a failed run raises
  ``ErpozRunFailed`` instead of being timed.
* Stores: ``open_store("memory")`` for durability ``memory``; for ``sync`` and ``batch`` a
  SQLite file in a fresh temporary directory per measurement (``open_store(path,
  durability=...)``), closed and deleted afterwards.
* Concurrent runs: ``asyncio.gather(engine.run(plan, inputs) for each run)`` on one engine;
  a warm-up gather of ``min(n_runs, 100)`` runs, then the median of ``reps`` full gathers.
  Each gather (warm-up and every repetition) gets a fresh store and engine, so a repetition
  does not run against, or hold in memory, the logs of the previous ones (that also keeps
  the per-run peak RSS measured by ``bench.peers.measure_concurrent_in_subprocess`` about one
  gather's worth of runs).

Wall clock (``time.perf_counter``), garbage collector on, stdlib ``asyncio`` loop, one
fresh loop per function call -- as in ``bench.peers``.

The concurrent-runs functions have the signature of ``bench.peers.floor_concurrent_runs_s``,
so they run in a fresh subprocess for the memory measurement::

    python -m bench.peers rss bench.erpoz_bench:erpoz_concurrent_runs_s 10000
    python -m bench.peers rss bench.erpoz_bench:erpoz_sqlite_concurrent_runs_s 1000
"""

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from erpoz import Engine, Flow, Plan, RunResult, Store, open_store

from .peers import _median_per_call_s, _run, median_prepared_call_s

__all__ = [
    "CONCURRENT_IMPLS",
    "Durability",
    "ErpozRunFailed",
    "build_chain",
    "build_fanout",
    "erpoz_chain_us_per_step",
    "erpoz_compile_ms",
    "erpoz_concurrent_runs_s",
    "erpoz_fanout_ms",
    "erpoz_sqlite_concurrent_runs_s",
]

Durability = Literal["memory", "sync", "batch", "effects"]

#: ``module:function`` names for ``bench.peers.measure_concurrent_in_subprocess``.
CONCURRENT_IMPLS: dict[Durability, str] = {
    "memory": "bench.erpoz_bench:erpoz_concurrent_runs_s",
    "sync": "bench.erpoz_bench:erpoz_sqlite_concurrent_runs_s",
}


class ErpozRunFailed(RuntimeError):
    """An erpoz run in a benchmark did not succeed with the expected output."""


# --------------------------------------------------------------------------- #
# Steps and flows
# --------------------------------------------------------------------------- #


async def inc(x: int) -> int:
    return x + 1


async def join(parts: list[int]) -> int:
    return sum(parts)


def _make_sleep_inc(sleep_s: float) -> Callable[[int], Awaitable[int]]:
    async def sleep_inc(x: int) -> int:
        await asyncio.sleep(sleep_s)
        return x + 1

    return sleep_inc


def build_chain(
    n_steps: int,
    step: Callable[[int], Awaitable[int]] = inc,
    *,
    name: str = "chain",
) -> Flow:
    """A flow of ``n_steps`` linear steps ``s0 -> s1 -> ...``; input ``x``, output the last."""
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    flow = Flow(name, inputs={"x": int})
    ref: Any = flow.input("x")
    for i in range(n_steps):
        ref = flow.add(step, id=f"s{i}", x=ref)
    flow.output(ref)
    return flow


def build_fanout(width: int) -> Flow:
    """``source`` -> ``width`` parallel ``inc`` steps -> ``join(parts=[b0, b1, ...])``."""
    flow = Flow("fanout", inputs={"x": int})
    source = flow.add(inc, id="source", x=flow.input("x"))
    branches = [flow.add(inc, id=f"b{i}", x=source) for i in range(width)]
    flow.output(flow.add(join, id="join", parts=branches))
    return flow


# --------------------------------------------------------------------------- #
# Engine and store set-up
# --------------------------------------------------------------------------- #


def _open(durability: Durability, directory: Path) -> Store:
    if durability == "memory":
        return open_store("memory")
    return open_store(directory / f"erpoz-{uuid.uuid4().hex[:8]}.db", durability=durability)


@asynccontextmanager
async def _engine(durability: Durability) -> AsyncIterator[Engine]:
    """One engine on a fresh store (a new SQLite file in a new temp dir unless ``memory``)."""
    with tempfile.TemporaryDirectory(prefix="bench-erpoz-") as tmp:
        store = _open(durability, Path(tmp))
        try:
            yield Engine(store)
        finally:
            await store.close()


def _check(result: RunResult, expected: int, case: str) -> None:
    if result.status != "succeeded":
        raise ErpozRunFailed(
            f"{case}: run {result.run_id} ended {result.status!r}"
            f" (failed step {result.failed_step!r}): {result.error}"
        )
    if result.output != expected:
        raise ErpozRunFailed(
            f"{case}: run {result.run_id} returned {result.output!r}, expected {expected!r}"
        )


async def _median_run_s(
    plan: Plan,
    durability: Durability,
    expected: int,
    case: str,
    *,
    reps: int,
    min_rep_s: float,
) -> float:
    async with _engine(durability) as engine:
        inputs = {"x": 0}

        async def once() -> None:
            _check(await engine.run(plan, inputs), expected, case)

        return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)


# --------------------------------------------------------------------------- #
# Micro-benchmarks
# --------------------------------------------------------------------------- #


def erpoz_chain_us_per_step(
    n_steps: int = 100,
    durability: Durability = "memory",
    *,
    reps: int = 5,
    min_rep_s: float = 0.2,
) -> float:
    """µs per step of one run of a ``n_steps``-step linear chain of ``async inc(x)`` steps.

    Per step = wall per ``engine.run`` / ``n_steps`` (the run's own start and end events are
    spread over its steps, as for LangGraph). The per-step *overhead* reported by
    ``python -m bench`` is this minus ``floor_chain_us_per_step``. Median of ``reps``.
    """
    plan = build_chain(n_steps).compile()
    case = f"chain {n_steps} steps [{durability}]"
    wall = _run(_median_run_s(plan, durability, n_steps, case, reps=reps, min_rep_s=min_rep_s))
    return wall / n_steps * 1e6


def erpoz_fanout_ms(
    width: int = 50,
    durability: Durability = "memory",
    *,
    reps: int = 5,
    min_rep_s: float = 0.2,
) -> float:
    """ms per run: ``source`` -> ``width`` parallel async steps -> ``join(parts: list[int])``.

    The join's ``parts`` is bound to the list of the ``width`` branch refs. Median of ``reps``.
    """
    plan = build_fanout(width).compile()
    case = f"fan-out {width} [{durability}]"
    expected = 2 * width
    return (
        _run(_median_run_s(plan, durability, expected, case, reps=reps, min_rep_s=min_rep_s)) * 1e3
    )


def erpoz_compile_ms(
    n_steps: int = 100,
    *,
    include_build: bool = False,
    reps: int = 5,
    min_rep_s: float = 0.2,
) -> float:
    """ms to ``compile()`` a ``n_steps``-step linear flow, built anew for every call.

    ``include_build=False`` times ``Flow.compile()`` only (the flows are built before each
    repetition; ``compile()`` caches its plan, so every call gets a new flow).
    ``include_build=True`` times ``Flow(...)`` + ``n_steps`` × ``flow.add`` + ``output`` +
    ``compile()``, like ``bench.peers.compile_ms`` does for LangGraph. Median of ``reps``.
    """
    if include_build:

        async def main() -> float:
            async def once() -> None:
                build_chain(n_steps).compile()

            return await _median_per_call_s(once, reps=reps, min_rep_s=min_rep_s)

        return _run(main()) * 1e3
    return (
        median_prepared_call_s(
            lambda: build_chain(n_steps),
            lambda flow: flow.compile(),
            reps=reps,
            min_rep_s=min_rep_s,
        )
        * 1e3
    )


# --------------------------------------------------------------------------- #
# Concurrent runs
# --------------------------------------------------------------------------- #


async def _gather_on_fresh_engine(
    plan: Plan, durability: Durability, n_runs: int, expected: int, case: str
) -> float:
    """Wall s of ``asyncio.gather`` of ``n_runs`` ``engine.run`` calls on one new engine."""
    async with _engine(durability) as engine:
        inputs = {"x": 0}
        t0 = time.perf_counter()
        results = await asyncio.gather(*(engine.run(plan, inputs) for _ in range(n_runs)))
        wall = time.perf_counter() - t0
    for result in results:
        _check(result, expected, case)
    return wall


def _concurrent_runs_s(
    n_runs: int, n_steps: int, sleep_s: float, reps: int, durability: Durability
) -> float:
    if reps < 1:
        raise ValueError("reps must be >= 1")
    plan = build_chain(n_steps, _make_sleep_inc(sleep_s), name="sleep_chain").compile()
    case = f"{n_runs} concurrent runs [{durability}]"

    async def main() -> float:
        await _gather_on_fresh_engine(plan, durability, min(n_runs, 100), n_steps, case)
        samples = [
            await _gather_on_fresh_engine(plan, durability, n_runs, n_steps, case)
            for _ in range(reps)
        ]
        return statistics.median(samples)

    return _run(main())


def erpoz_concurrent_runs_s(
    n_runs: int, n_steps: int = 5, sleep_s: float = 0.01, *, reps: int = 3
) -> float:
    """Wall s for ``n_runs`` concurrent runs of a ``n_steps``-step chain, memory store.

    Each step awaits ``asyncio.sleep(sleep_s)``. One engine on ``open_store("memory")`` per
    gather. Small warm-up gather, then median of ``reps``.
    """
    return _concurrent_runs_s(n_runs, n_steps, sleep_s, reps, "memory")


def erpoz_sqlite_concurrent_runs_s(
    n_runs: int, n_steps: int = 5, sleep_s: float = 0.01, *, reps: int = 3
) -> float:
    """As ``erpoz_concurrent_runs_s`` on a SQLite file with ``durability="sync"``.

    Every gather (warm-up and each repetition) uses a new file in a new temp directory.
    """
    return _concurrent_runs_s(n_runs, n_steps, sleep_s, reps, "sync")
