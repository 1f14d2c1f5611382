"""The durable path side by side: erpoz on SQLite in each durability mode, LangGraph with its
SQLite checkpointer at the same ``synchronous`` setting, Haystack (no persistence) and the
plain-asyncio floor, interleaved in one process.

    python -m bench.durable_bench [--reps 7] [--runs 1000] [--no-peers] [--markdown]
    python -m bench.durable_bench --sql-profile sync [--runs 1000]  # where the time goes

Like for like:

* every SQLite case runs in WAL mode with the same ``synchronous`` on both sides: ``NORMAL``
  (erpoz's default; LangGraph's ``SqliteSaver`` on a connection set to ``NORMAL``) or ``FULL``
  (erpoz ``fsync=True``; LangGraph's saver on a connection set to ``FULL``, which is also what
  its ``AsyncSqliteSaver`` runs by default);
* erpoz ``sync`` (a step's success committed before the next starts) is compared with
  LangGraph ``durability="sync"`` (a checkpoint written before the next step); erpoz
  ``effects`` and ``batch`` (committed before anything leaves the process / every 50 ms) with
  LangGraph ``durability="exit"`` (written when the graph exits). Every erpoz case includes the
  run's final commit (``engine.run`` returns after it);
* the floor and every peer are measured in the same process as erpoz, in rotated order: each
  repetition runs every case once (a batch of calls lasting ``--rep-s``), starting one case
  further along each time; a figure is the median over repetitions.

The concurrent rows gather ``--runs`` runs of a 5-step chain whose steps ``await
asyncio.sleep(0.01)`` (fresh store per gather), against ``--runs`` coroutines doing the same
sleeps (the floor), rotated the same way. LangGraph and Haystack are optional: without them
their cells read ``–``. A second table gives the CPU seconds of this process for the same
calls (steadier than the wall clock on a machine that other work loads: what a case costs, not
what it waits for).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from erpoz import Engine
from erpoz.store import Store, open_store

from .erpoz_bench import _make_sleep_inc, build_chain
from .peers import _build_lg_chain, _floor_chain, _floor_sleep_chain, _lg_config

N_STEPS = 100
Call = Callable[[], Any]  # returns None or an awaitable


async def _call(fn: Call) -> None:
    out = fn()
    if isinstance(out, Awaitable):
        await out


# --- chain cases ----------------------------------------------------------------------------------
async def _erpoz_chain(stack: AsyncExitStack, tmp: Path, durability: str, fsync: bool) -> Call:
    plan = build_chain(N_STEPS).compile()
    if durability == "memory":
        store: Store = open_store("memory")
    else:
        path = tmp / f"erpoz-{durability}-{fsync}.db"
        store = open_store(path, durability=durability, fsync=fsync)
    stack.push_async_callback(store.close)
    engine = Engine(store)

    async def once() -> None:
        result = await engine.run(plan, {"x": 0})
        if result.status != "succeeded" or result.output != N_STEPS:
            raise RuntimeError(f"erpoz {durability}: run ended {result.status}: {result.error}")

    return once


def _lg_chain(tmp: Path, synchronous: str | None, durability: str) -> Call:
    builder = _build_lg_chain(N_STEPS, _lg_inc_sync)
    if synchronous is None:
        graph = builder.compile()

        def plain() -> None:
            assert graph.invoke({"x": 0}, _lg_config(N_STEPS))["x"] == N_STEPS

        return plain
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(
        str(tmp / f"lg-{synchronous}-{durability}.sqlite"), check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    saver = SqliteSaver(conn)
    saver.setup()
    got = conn.execute("PRAGMA synchronous").fetchone()[0]
    if got != {"NORMAL": 1, "FULL": 2}[synchronous]:
        raise RuntimeError(f"LangGraph's saver runs synchronous={got}, not {synchronous}")
    graph = builder.compile(checkpointer=saver)

    def once() -> None:
        config = _lg_config(N_STEPS, uuid.uuid4().hex)
        assert graph.invoke({"x": 0}, config, durability=durability)["x"] == N_STEPS

    return once


def _lg_inc_sync(state: dict[str, int]) -> dict[str, int]:
    return {"x": state["x"] + 1}


def _haystack_chain() -> Call:
    from haystack import Pipeline, component

    @component
    class Inc:
        @component.output_types(x=int)
        def run(self, x: int) -> dict[str, int]:
            return {"x": x + 1}

    pipe = Pipeline(max_runs_per_component=1)
    for i in range(N_STEPS):
        pipe.add_component(f"s{i}", Inc())
    for i in range(N_STEPS - 1):
        pipe.connect(f"s{i}.x", f"s{i + 1}.x")
    last = f"s{N_STEPS - 1}"

    def once() -> None:
        assert pipe.run({"s0": {"x": 0}})[last]["x"] == N_STEPS

    return once


async def _chain_cases(stack: AsyncExitStack, tmp: Path, peers: bool) -> dict[str, Call]:
    cases: dict[str, Call] = {"floor": lambda: _floor_chain(N_STEPS)}
    cases["erpoz memory"] = await _erpoz_chain(stack, tmp, "memory", False)
    for d in ("sync", "batch", "effects"):
        cases[f"erpoz {d} NORMAL"] = await _erpoz_chain(stack, tmp, d, False)
    for d in ("sync", "effects"):
        cases[f"erpoz {d} FULL"] = await _erpoz_chain(stack, tmp, d, True)
    if not peers:
        return cases
    try:
        cases["langgraph memory"] = _lg_chain(tmp, None, "sync")
        cases["langgraph sync NORMAL"] = _lg_chain(tmp, "NORMAL", "sync")
        cases["langgraph exit NORMAL"] = _lg_chain(tmp, "NORMAL", "exit")
        cases["langgraph sync FULL"] = _lg_chain(tmp, "FULL", "sync")
        cases["langgraph exit FULL"] = _lg_chain(tmp, "FULL", "exit")
    except ImportError as exc:
        print(f"LangGraph left out: {exc}", file=sys.stderr)
    try:
        cases["haystack memory"] = _haystack_chain()
    except ImportError as exc:
        print(f"Haystack left out: {exc}", file=sys.stderr)
    return cases


async def _rotated(
    cases: dict[str, Call], reps: int, rep_s: float, cpu: dict[str, float]
) -> dict[str, float]:
    """Median seconds per call of each case over ``reps`` rotated repetitions (wall clock;
    the median CPU seconds of this process per call go to ``cpu``)."""
    inner: dict[str, int] = {}
    for name, fn in cases.items():  # warm up, then calibrate a batch to last ``rep_s``
        await _call(fn)
        t0 = time.perf_counter()
        await _call(fn)
        inner[name] = max(1, round(rep_s / max(time.perf_counter() - t0, 1e-9)))
    names = list(cases)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            fn, n = cases[name], inner[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await _call(fn)
            samples[name].append((time.perf_counter() - t0) / n)
            cpus[name].append((time.process_time() - c0) / n)
    cpu.update({n: statistics.median(v) for n, v in cpus.items()})
    return {n: statistics.median(v) for n, v in samples.items()}


# --- concurrent runs ------------------------------------------------------------------------------
async def _concurrent(
    n_runs: int,
    reps: int,
    tmp: Path,
    cpu: dict[str, float],
    modes: tuple[str, ...] = ("memory", "sync", "batch", "effects"),
) -> dict[str, float]:
    plan = build_chain(5, _make_sleep_inc(0.01), name="sleep_chain").compile()

    def erpoz(durability: str) -> Callable[[], Awaitable[None]]:
        async def gather() -> None:
            store = (
                open_store("memory")
                if durability == "memory"
                else open_store(tmp / f"conc-{uuid.uuid4().hex[:8]}.db", durability=durability)
            )
            try:
                engine = Engine(store)
                results = await asyncio.gather(*(engine.run(plan, {"x": 0}) for _ in range(n_runs)))
            finally:
                await store.close()
            if any(r.status != "succeeded" or r.output != 5 for r in results):
                raise RuntimeError(f"erpoz {durability}: a concurrent run did not succeed")

        return gather

    async def floor() -> None:
        await asyncio.gather(*(_floor_sleep_chain(5, 0.01) for _ in range(n_runs)))

    cases: dict[str, Callable[[], Awaitable[None]]] = {"floor": floor}
    for d in modes:
        cases[f"erpoz {d}"] = erpoz(d)
    timed: dict[str, list[float]] = {n: [] for n in cases}
    cpus: dict[str, list[float]] = {n: [] for n in cases}
    names = list(cases)
    for name in names:  # warm-up
        await cases[name]()
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            await cases[name]()
            timed[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    cpu.update({n: statistics.median(v) for n, v in cpus.items()})
    return {n: statistics.median(v) for n, v in timed.items()}


# --- where a concurrent gather's time goes -------------------------------------------------------
class _TimedConnection:
    """A SQLite store's connection that adds up, per statement, the calls, the rows, and the
    wall and CPU seconds spent inside SQLite on the calling (event loop's) thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.stats: dict[str, list[float]] = {}

    def _add(self, sql: str, t0: float, c0: float, rows: int) -> None:
        st = self.stats.setdefault(" ".join(sql.split())[:60], [0, 0, 0.0, 0.0])
        st[0] += 1
        st[1] += rows
        st[2] += time.perf_counter() - t0
        st[3] += time.process_time() - c0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return self._db.execute(sql, *args)
        finally:
            self._add(sql, t0, c0, 0)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return self._db.executemany(sql, rows)
        finally:
            self._add(sql, t0, c0, len(rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def _sql_profile(n_runs: int, durability: str, tmp: Path, reps: int) -> None:
    """``n_runs`` concurrent runs on a SQLite store whose connection is timed: how many
    commits, and how much of the gather's wall clock the loop's thread spent inside SQLite."""
    plan = build_chain(5, _make_sleep_inc(0.01), name="sleep_chain").compile()
    for rep in range(reps + 1):  # the first is a warm-up
        store: Any = open_store(tmp / f"prof-{uuid.uuid4().hex[:8]}.db", durability=durability)
        timed = _TimedConnection(store._db)
        store._db = timed
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            results = await asyncio.gather(
                *(Engine(store).run(plan, {"x": 0}) for _ in range(n_runs))
            )
        finally:
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            await store.close()
        if any(r.status != "succeeded" for r in results):
            raise RuntimeError(f"erpoz {durability}: a concurrent run did not succeed")
        if rep == 0:
            continue
        st = timed.stats
        in_sql = sum(v[2] for v in st.values())
        in_sql_cpu = sum(v[3] for v in st.values())
        commits = int(st.get("COMMIT", [0])[0])
        print(
            f"\n{n_runs:,} concurrent `{durability}` runs: wall {wall:.3f} s, CPU {cpu:.3f} s; "
            f"{commits} commits; inside SQLite on the loop's thread {in_sql:.3f} s wall, "
            f"{in_sql_cpu:.3f} s CPU ({in_sql / wall:.0%} of the wall clock)"
        )
        for sql, (calls, rows, w, c) in sorted(st.items(), key=lambda kv: -kv[1][2])[:8]:
            print(
                f"  {w * 1e3:8.1f} ms wall {c * 1e3:8.1f} ms CPU {int(calls):6d} calls "
                f"{int(rows):7d} rows  {sql}"
            )


# --- the table ------------------------------------------------------------------------------------
def _rows(
    chain: dict[str, float], conc: dict[str, float], n_runs: int, unit: str = ""
) -> list[list[str]]:
    us = {k: v / N_STEPS * 1e6 for k, v in chain.items()}

    def cell(d: dict[str, float], key: str, fmt: str = "{:.1f}") -> str:
        return fmt.format(d[key]) if key in d else "–"

    def ratio(a: str, b: str, d: dict[str, float]) -> str:
        return f"{d[a] / d[b]:.2f}×" if a in d and b in d else "–"

    rows = [
        [
            f"chain 100 steps, memory (µs{unit}/step)",
            cell(us, "erpoz memory"),
            cell(us, "langgraph memory"),
            cell(us, "haystack memory"),
            cell(us, "floor", "{:.2f}"),
            ratio("erpoz memory", "langgraph memory", us),
        ],
    ]
    for sync in ("NORMAL", "FULL"):
        for d, lg in (("sync", "sync"), ("batch", "exit"), ("effects", "exit")):
            key = f"erpoz {d} {sync}"
            if key not in us:
                continue
            rows.append(
                [
                    f"chain 100 steps, SQLite synchronous={sync}, erpoz `{d}` vs LangGraph "
                    f"durability=`{lg}` (µs{unit}/step)",
                    cell(us, key),
                    cell(us, f"langgraph {lg} {sync}"),
                    "–",
                    cell(us, "floor", "{:.2f}"),
                    ratio(key, f"langgraph {lg} {sync}", us),
                ]
            )
    floor = conc.get("floor")
    for d in ("memory", "sync", "batch", "effects"):
        key = f"erpoz {d}"
        if key in conc and floor:
            rows.append(
                [
                    f"{n_runs:,} concurrent runs of 5 × 10 ms steps, {d} (s{unit}; × floor)",
                    f"{conc[key]:.3f} ({conc[key] / floor:.2f}×)",
                    "–",
                    "–",
                    f"{floor:.3f}",
                    "–",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="rotated repetitions (default 7)")
    parser.add_argument("--rep-s", type=float, default=0.2, help="seconds per case and rep")
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs (default 1000)")
    parser.add_argument("--conc-reps", type=int, default=5)
    parser.add_argument(
        "--conc-modes",
        default="memory,sync,batch,effects",
        help="the erpoz stores of the concurrent rows (comma-separated; default all four)",
    )
    parser.add_argument("--no-peers", action="store_true", help="leave LangGraph, Haystack out")
    parser.add_argument("--no-chain", action="store_true")
    parser.add_argument("--no-concurrent", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--sql-profile",
        metavar="DURABILITY",
        choices=("sync", "batch", "effects"),
        help="only time --runs concurrent runs in this mode: commits, and the time spent "
        "inside SQLite on the event loop's thread (per statement), --conc-reps times",
    )
    args = parser.parse_args(argv)
    if args.sql_profile:

        async def profile() -> None:
            with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
                await _sql_profile(args.runs, args.sql_profile, Path(tmp), args.conc_reps)

        asyncio.run(profile())
        print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    load_before = os.getloadavg()

    chain_cpu: dict[str, float] = {}
    conc_cpu: dict[str, float] = {}

    async def run() -> tuple[dict[str, float], dict[str, float]]:
        with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
            chain: dict[str, float] = {}
            conc: dict[str, float] = {}
            if not args.no_chain:
                async with AsyncExitStack() as stack:
                    cases = await _chain_cases(stack, Path(tmp), not args.no_peers)
                    chain = await _rotated(cases, args.reps, args.rep_s, chain_cpu)
            if not args.no_concurrent:
                modes = tuple(m for m in args.conc_modes.split(",") if m)
                unknown = set(modes) - {"memory", "sync", "batch", "effects"}
                if unknown:
                    parser.error(f"--conc-modes: unknown {', '.join(sorted(unknown))}")
                conc = await _concurrent(args.runs, args.conc_reps, Path(tmp), conc_cpu, modes)
            return chain, conc

    chain, conc = asyncio.run(run())
    load_after = os.getloadavg()
    header = ["benchmark", "erpoz", "LangGraph", "Haystack", "floor", "erpoz/LangGraph"]
    for figures, unit in (((chain, conc), ""), ((chain_cpu, conc_cpu), " CPU")):
        print("\n| " + " | ".join(header) + " |")
        print("|:---|" + "---:|" * (len(header) - 1))
        for row in _rows(*figures, args.runs, unit):
            print("| " + " | ".join(row) + " |")
    loads = " / ".join(" ".join(f"{x:.2f}" for x in la) for la in (load_before, load_after))
    print(f"\nload average before / after: {loads} ({os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "chain_s_per_run": chain,
                    "concurrent_s": conc,
                    "chain_cpu_s_per_run": chain_cpu,
                    "concurrent_cpu_s": conc_cpu,
                    "load": [load_before, load_after],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
