"""``python -m bench.audit_bench``: how fast ``erpoz audit verify --all`` checks a store.

Builds SQLite stores of runs of a 100-step chain (202 events a run, batch durability) of about
each size asked for (``--sizes``, default 10⁴, 10⁵ and 10⁶ events), then times, interleaved
(``--reps`` rounds, median of each):

* **chains only**: what ``verify`` did before the Merkle tree: read the events, recompute every
  chain, check heads and seals (:func:`erpoz.audit._verify.check_shard` without leaves);
* **verify, 1 process**: everything: every event's hash recomputed from its content, the chain
  links, heads and seals, every leaf recomputed and matched with the stored one, the whole tree
  rebuilt and compared with its stored state (root) and nodes;
* **verify, N processes**: the same, the store cut into N ranges of runs, N - 1 checked by
  forked children while this process checks the first (the smallest) and then builds the tree.

Wall time and CPU time (this process and its children; for N processes also apart) are given:
on a shared machine the CPU time is the steadier figure, and events/s of CPU is what one idle
core would do. With N processes the wall time on N idle cores is about the larger of the two
CPU parts. ``--phases``: then where one process's CPU goes, step by step, per event (the
largest store). Target: ≥ 300,000 events/s. ``--keep DIR`` keeps the stores there and reuses them
(outside the repository; they are large: ~360 MB for 10⁶ events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from erpoz import Engine, Flow, speedups, step
from erpoz.audit import _verify as v
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


Sample = tuple[float, float, float]
"""Wall seconds, CPU seconds of this process, CPU seconds of its children."""


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system, microsecond resolution) of this process and of its
    children that have ended (the forked parts: the pool joins them before verify returns)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


async def _timed(fn: Callable[[], Awaitable[int]]) -> tuple[Sample, int]:
    (h0, k0), w0 = _cpu(), time.perf_counter()
    n = await fn()
    wall = time.perf_counter() - w0
    h1, k1 = _cpu()
    return (wall, h1 - h0, k1 - k0), n


def _with_speedups(on: bool, fn: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        was = speedups.use(on)
        try:
            return await fn()
        finally:
            speedups.use(was)

    return run


async def measure(
    path: Path, reps: int, workers: int, compare: bool
) -> tuple[int, dict[str, list[Sample]]]:
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
    if compare:  # each case with the C extension and with the pure-Python code, interleaved
        cases = {
            f"{name} [{'C' if on else 'Python'}]": _with_speedups(on, fn)
            for name, fn in cases.items()
            for on in (True, False)
        }
    results: dict[str, list[Sample]] = {k: [] for k in cases}
    events = 0
    for fn in cases.values():  # warm up: page cache, imports
        await fn()
    for _ in range(reps):
        for name, fn in cases.items():
            sample, events = await _timed(fn)
            results[name].append(sample)
    await store.close()
    return events, results


def report(events: int, built: str, results: dict[str, list[Sample]], reps: int) -> None:
    load = os.getloadavg()
    print(
        f"\n{events:,} events ({built}); {reps} interleaved rounds, medians; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs"
    )
    print(
        f"{'case':<36}{'wall s':>8}{'events/s wall':>15}{'CPU s':>8}{'events/s CPU':>14}"
        f"{'CPU here / children':>22}"
    )
    for name, samples in results.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] + s[2] for s in samples)
        here = statistics.median(s[1] for s in samples)
        kids = statistics.median(s[2] for s in samples)
        split = f"{here:.3f} / {kids:.3f}" if kids else ""
        print(
            f"{name:<36}{wall:>8.3f}{events / wall:>15,.0f}{cpu:>8.3f}{events / cpu:>14,.0f}"
            f"{split:>22}"
        )


async def phases(path: Path, reps: int) -> None:
    """Where one process's CPU goes, per event: each step of ``verify`` timed apart on the
    same rows (``time.process_time``, median of ``reps``)."""
    store = SQLiteStore(path)
    head, heads = await store.audit_head()
    size = head.size
    recorded = {h[0]: h for h in heads}
    rows, placed = await store.audit_rows(keys=False, as_of=size)
    db = store._db  # the bench reads the two queries apart; verify reads both in one snapshot
    sql = (
        "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
        "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
        "LEFT JOIN blobs b ON b.sha256 = e.blob ORDER BY e.run_id, e.seq"
    )
    hashes = v._recompute(rows)
    runs = v._by_run(rows)
    paired = v._pair_fast(rows, placed)
    assert paired is not None
    found = v._Findings(v.AuditReport(), set())
    leaves = v._placed(paired.positions, paired.stored, size, found)
    assert leaves is not None
    c = speedups.C
    if c is not None:
        ours = c.scan(rows, v.GENESIS, True)[1]
        steps: dict[str, Callable[[], object]] = {
            "read the events (10 values a row)": lambda: db.execute(sql).fetchall(),
            "read the leaves (position, hash)": lambda: db.execute(
                "SELECT pos, leaf FROM merkle_leaves ORDER BY run_id, seq"
            ).fetchall(),
            "C: chain hashes, seqs, links, leaves": lambda: c.scan(rows, v.GENESIS, True),
            "leaves matched": lambda: v._pair_fast(rows, placed, ours),
            "runs, heads and seals": lambda: [
                v._sealing(rid, rows[a:b], recorded.get(rid)) for rid, a, b in runs
            ],
            "leaves put in commit order": lambda: v._placed(
                paired.positions, paired.stored, size, found
            ),
            "C: the tree (n - 1 node hashes)": lambda: v._levels(leaves),
        }
    else:
        steps = {
            "read the events (10 values a row)": lambda: db.execute(sql).fetchall(),
            "  of which: a bare row (SELECT 1)": lambda: db.execute(
                "SELECT 1 FROM events ORDER BY run_id, seq"
            ).fetchall(),
            "read the leaves (position, hash)": lambda: db.execute(
                "SELECT pos, leaf FROM merkle_leaves ORDER BY run_id, seq"
            ).fetchall(),
            "chain hash (f-string, SHA-256, hex)": lambda: v._recompute(rows),
            "  of which: repr(ts)": lambda: [repr(r[2]) for r in rows],
            "leaf hash and match": lambda: v._pair_fast(rows, placed),
            "seqs, links, hashes compared": lambda: v._chains_ok(rows, hashes, runs),
            "runs, heads and seals": lambda: [
                v._sealing(rid, rows[a:b], recorded.get(rid)) for rid, a, b in runs
            ],
            "leaves put in commit order": lambda: v._placed(
                paired.positions, paired.stored, size, found
            ),
            "the tree (n - 1 node hashes)": lambda: v._levels(leaves),
        }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for name, fn in steps.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    await store.close()
    n = len(rows)
    load = os.getloadavg()
    print(
        f"\nwhere the CPU goes, {n:,} events, one process, "
        f"{'with' if c else 'without'} the C extension, µs per event (median of {reps}); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    total = 0.0
    for name, samples in times.items():
        us = statistics.median(samples) / n * 1e6
        total += 0 if name.startswith("  ") else us
        print(f"{name:<40}{us:>8.3f}")
    print(f"{'sum (floor of one process)':<40}{total:>8.3f}  = {1e6 / total:,.0f} events/s")


async def main(
    sizes: list[int],
    steps: int,
    reps: int,
    workers: int,
    keep: Path | None,
    where_cpu: bool,
    compare: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        path = where
        for size in sizes:
            runs = max(1, round(size / (2 * steps + 2)))  # events of a run: 2 a step + 2
            path = where / f"audit-{runs}x{steps}.db"
            if path.exists():
                built = f"{runs} runs × {steps} steps, reused from {path}"
            else:
                seconds = await build(path, runs, steps)
                built = f"{runs} runs × {steps} steps, built in {seconds:.1f} s"
            events, results = await measure(path, reps, workers, compare)
            report(events, built, results, reps)
        if where_cpu:
            await phases(path, reps)
            if compare and speedups.C is not None:
                speedups.use(False)
                await phases(path, reps)
                speedups.use(True)
    print("\ntarget: verify ≥ 300,000 events/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="events, comma-separated")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="keep and reuse the stores here")
    ap.add_argument(
        "--phases", action="store_true", help="then where one process's CPU goes (largest size)"
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="each case with the C extension and with the pure-Python code, interleaved",
    )
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    asyncio.run(main(sizes, a.steps, a.reps, a.workers, a.keep, a.phases, a.compare))
