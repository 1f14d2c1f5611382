"""What durable waits cost: a timer and a message per run (µs and events written), and the
memory one worker needs to hold many sleeping runs.

    python -m bench.waits_bench                 # SQLite file, sync durability, 10,000 sleepers
    python -m bench.waits_bench --runs 2000 --store postgresql://postgres@127.0.0.1/test

Per-run costs (each case a one-step async flow, on the same store and durability; repetitions
interleaved, medians of 5; the time is that of the engine calls, not of the wait itself):

- ``baseline``: the step does nothing;
- ``timer held``: ``await ctx.sleep(0)`` — the deadline is recorded and committed, the process
  waits it out (a wait within ``hold_s``);
- ``timer suspended``: ``await ctx.sleep(0.05)`` with ``hold_s=0`` — the run records
  ``run_waiting`` and is let go; after the deadline ``resume`` wakes it (the step runs again);
- ``message``: ``await ctx.recv("reply", timeout=60)`` with ``hold_s=0`` — the run waits,
  ``send`` records a message and wakes it, ``resume`` takes it.

Sleeping runs held by one worker: ``--runs`` runs are submitted; a worker drives each until it
sleeps (an hour). ``suspended`` (``hold_s=0``, concurrency 64): the runs wait in the store and
the worker keeps nothing of them; ``held`` (``hold_s`` an hour, concurrency ``--runs``: what a
library whose sleep holds a task does) keeps one task per run. Reported: the worker process's
RSS growth per sleeping run and the asyncio tasks alive, each case in a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from erpoz import Context, Engine, Flow, open_store, step
from erpoz.engine import Worker

HERE = Path(__file__).resolve()
SLEEP_S = 3600.0


@step
async def nothing(x: int) -> int:
    return x


@step
async def timer0(x: int, ctx: Context) -> int:
    await ctx.sleep(0)
    return x


@step
async def timer_short(x: int, ctx: Context) -> int:
    await ctx.sleep(0.05)
    return x


@step
async def message(x: int, ctx: Context) -> int:
    got = await ctx.recv("reply", timeout=60)
    return x + int(got or 0)


@step
async def sleeper(x: int, ctx: Context) -> int:
    await ctx.sleep(SLEEP_S)
    return x


def one_step(name: str, fn: Any) -> Flow:
    f = Flow(name, inputs={"x": int}, source=f"{HERE}:{name}")
    f.add(fn, x=f.input("x"))
    return f


baseline = one_step("baseline", nothing)
held = one_step("held", timer0)
suspended = one_step("suspended", timer_short)
messaged = one_step("messaged", message)
sleepers = one_step("sleepers", sleeper)


async def _case(engine: Engine, name: str, n: int) -> tuple[float, float]:
    """µs per run (engine calls only) and events per run, for ``n`` runs of case ``name``."""
    store = engine.store
    ids: list[str] = []
    spent = 0.0
    if name in ("baseline", "held"):
        flow = baseline if name == "baseline" else held
        t0 = time.perf_counter()
        for i in range(n):
            ids.append((await engine.run(flow, {"x": i})).run_id)
        spent = time.perf_counter() - t0
    elif name == "suspended":
        t0 = time.perf_counter()
        for i in range(n):
            ids.append((await engine.run(suspended, {"x": i})).run_id)
        spent = time.perf_counter() - t0
        await asyncio.sleep(0.06)  # all due (not timed)
        t0 = time.perf_counter()
        for rid in ids:
            assert (await engine.resume(rid, suspended)).status == "succeeded"
        spent += time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        for i in range(n):
            rid = (await engine.run(messaged, {"x": i})).run_id
            await engine.send(rid, "reply", 1)
            assert (await engine.resume(rid, messaged)).output == i + 1
            ids.append(rid)
        spent = time.perf_counter() - t0
    events = sum([len(await store.events(r)) for r in ids[:20]]) / min(n, 20)
    return spent / n * 1e6, events


async def per_run(url: str, n: int, reps: int) -> dict[str, dict[str, float]]:
    store = open_store(url)
    engine = Engine(store, hold_s=0.0)
    cases = ["baseline", "held", "suspended", "message"]
    for c in cases:  # warm-up
        await _case(engine, c, 5)
    times: dict[str, list[float]] = {c: [] for c in cases}
    events: dict[str, float] = {}
    for _ in range(reps):  # interleaved repetitions
        for c in cases:
            us, ev = await _case(engine, c, n)
            times[c].append(us)
            events[c] = ev
    await store.close()
    base = statistics.median(times["baseline"])
    return {
        c: {
            "us_per_run": round(statistics.median(times[c]), 1),
            "extra_us": round(statistics.median(times[c]) - base, 1),
            "events_per_run": events[c],
            "extra_events": events[c] - events["baseline"],
        }
        for c in cases
    }


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def hold_sleepers(url: str, n: int, mode: str) -> dict[str, Any]:
    """In a fresh process: submit ``n`` sleepers, let one worker drive them all to sleep."""
    store = open_store(url)
    engine = Engine(store)
    for i in range(n):
        await engine.submit(sleepers, {"x": i})
    hold = SLEEP_S * 2 if mode == "held" else 0.0
    worker = Worker(
        Engine(store, hold_s=hold), concurrency=n if mode == "held" else 64, poll_s=0.05
    )
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    asleep = 0
    while asleep < n:
        await asyncio.sleep(0.5)
        asleep = worker.in_flight if mode == "held" else worker.stats.waiting
    if mode == "held":  # every task has recorded its deadline and sleeps
        await asyncio.sleep(1.0)
    took = time.perf_counter() - t0
    rss1 = _rss_kb()
    tasks = len(asyncio.all_tasks())
    worker.stop(grace_s=0)
    await task
    await store.close()
    return {
        "mode": mode,
        "runs": n,
        "seconds_to_sleep": round(took, 1),
        "rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        "rss_per_sleeping_run_kb": round((rss1 - rss0) / n, 2),
        "asyncio_tasks": tasks,
    }


def _child(url: str, n: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.waits_bench",
            "--child",
            mode,
            "--runs",
            str(n),
            "--store",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent.parent,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="a store URL (default: a SQLite file in a temp folder)")
    ap.add_argument("--runs", type=int, default=10_000, help="sleeping runs for one worker")
    ap.add_argument("--per-run", type=int, default=200, help="runs per repetition, per case")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--child", choices=["held", "suspended"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(hold_sleepers(args.store, args.runs, args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or str(Path(tmp) / "runs.db")
        rows = asyncio.run(per_run(url, args.per_run, args.reps))
        print(f"store {url.split('?')[0]} · sync durability · load {os.getloadavg()[0]:.2f}")
        print(f"{'case':<18}{'µs/run':>10}{'+µs':>10}{'events':>8}{'+events':>9}")
        for c, r in rows.items():
            print(
                f"{c:<18}{r['us_per_run']:>10}{r['extra_us']:>10}{r['events_per_run']:>8g}"
                f"{r['extra_events']:>9g}"
            )
        sleeping = []
        for mode in ("suspended", "held"):
            sub = args.store or str(Path(tmp) / f"sleepers-{mode}.db")
            sleeping.append(_child(sub, args.runs, mode))
        print(f"\n{args.runs} sleeping runs, one worker · load {os.getloadavg()[0]:.2f}")
        print(f"{'mode':<12}{'s to sleep':>12}{'RSS +MB':>10}{'KB/run':>9}{'tasks':>8}")
        for r in sleeping:
            print(
                f"{r['mode']:<12}{r['seconds_to_sleep']:>12}{r['rss_growth_mb']:>10}"
                f"{r['rss_per_sleeping_run_kb']:>9}{r['asyncio_tasks']:>8}"
            )
        print(json.dumps({"per_run": rows, "sleeping": sleeping}))


if __name__ == "__main__":
    main()
