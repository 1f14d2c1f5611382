"""``python -m bench.audit_bench``: how fast ``erpoz audit verify --all`` checks a store.

Builds a SQLite store of 1,000 runs of a 100-step chain (~202,000 events, batch durability),
then times, interleaved (``--reps`` rounds, median of each):

* **chains only**: what ``verify`` did before the Merkle tree: read the events, recompute every
  chain, check heads and seals (:func:`erpoz.audit._verify.check_shard` without leaves);
* **verify, 1 process**: the same plus the tree: every leaf recomputed and matched, the whole
  tree rebuilt and compared with its stored state and nodes;
* **verify, N processes**: the store cut into N ranges of runs, each checked by a forked child,
  while this process builds the tree over the stored leaves (the default for stores of 100,000
  events or more: one per CPU, up to 4).

Wall time and CPU time (this process and its children) are both given: on a shared machine the
CPU time is the steadier figure; events/s of CPU is what one idle core would do. Target:
≥ 300,000 events/s. Options: ``--runs``, ``--steps``, ``--reps``, ``--workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from erpoz import Engine, Flow, step
from erpoz.audit import verify
from erpoz.audit._verify import check_shard
from erpoz.store import SQLiteStore, open_store


@step
async def inc(x: int) -> int:
    return x + 1


def _chain(n: int) -> Flow:
    flow = Flow("chain", inputs={"x": int})
    prev = flow.input("x")
    for i in range(n):
        prev = flow.add(inc, id=f"s{i}", x=prev)
    return flow


async def build(path: Path, runs: int, steps: int) -> float:
    store = open_store(path, durability="batch")
    plan = _chain(steps).compile()
    engine = Engine(store)
    t0 = time.perf_counter()
    for _ in range(runs):
        await engine.run(plan, {"x": 0})
    await store.close()
    return time.perf_counter() - t0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


async def _timed(fn: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    c0, w0 = _cpu(), time.perf_counter()
    n = await fn()
    return time.perf_counter() - w0, _cpu() - c0, n


async def main(runs: int, steps: int, reps: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.db"
        built = await build(path, runs, steps)
        store = SQLiteStore(path)

        async def chains_only() -> int:
            rows = await store.chain_rows()
            recorded = {h[0]: h for h in await store.recorded_heads()}
            shard = check_shard(rows, None, recorded, 0)
            assert shard is not None and not shard.problems
            return shard.events

        def verify_with(n: int) -> Callable[[], Awaitable[int]]:
            async def run() -> int:
                report = await verify(store, workers=n)
                assert report.ok, report.problems[:3]
                return report.events

            return run

        cases = {
            "chains only (no tree)": chains_only,
            "verify, 1 process": verify_with(1),
            f"verify, {workers} processes": verify_with(workers),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        events = 0
        for fn in cases.values():  # warm up: page cache, imports
            await fn()
        for _ in range(reps):
            for name, fn in cases.items():
                wall, cpu, events = await _timed(fn)
                results[name].append((wall, cpu))
        await store.close()
    load = os.getloadavg()
    print(
        f"store: {runs} runs × {steps} steps = {events:,} events (built in {built:.1f} s); "
        f"{reps} interleaved rounds, medians; load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; {os.cpu_count()} CPUs"
    )
    print(f"{'case':<28}{'wall s':>8}{'events/s (wall)':>18}{'CPU s':>8}{'events/s (CPU)':>17}")
    for name, samples in results.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(f"{name:<28}{wall:>8.3f}{events / wall:>18,.0f}{cpu:>8.3f}{events / cpu:>17,.0f}")
    print("target: verify ≥ 300,000 events/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    asyncio.run(main(a.runs, a.steps, a.reps, a.workers))
