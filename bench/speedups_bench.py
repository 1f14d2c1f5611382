"""``python -m bench.speedups_bench``: what the C extension (``erpoz.speedups._speedups``) saves the
writers: CPU µs per step of a 100-step chain of ``async inc(x)`` steps (one run per call; the
memory store and SQLite with ``batch`` durability), with and without the extension,
interleaved (``--reps`` rounds, medians), and the per-call cost of ``chain_hash`` and
``leaf_hash`` both ways. CPU time (``time.process_time``), so a busy machine changes little.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from erpoz import Engine, speedups
from erpoz.store import chain_hash, leaf_hash, open_store

from .audit_bench import _chain


def _calls(n: int) -> dict[str, Callable[[], object]]:
    args = ("a" * 64, "3f2a9c1e-0000-4000-8000-000000000017", 17, time.time(), "step_succeeded")
    rest = ("s12", 0, '{"key":"s12","ms":0.12}', '{"output":18}')

    def chains() -> None:
        for _ in range(n):
            chain_hash(*args, *rest)

    def leaves() -> None:
        for _ in range(n):
            leaf_hash(args[1], 17, args[0])

    return {"chain_hash (µs/call)": chains, "leaf_hash (µs/call)": leaves}


async def _runs(store_kind: str, runs: int, where: Path) -> float:
    """CPU seconds of ``runs`` runs of the chain on a fresh store."""
    plan = _chain(100).compile()
    store = open_store(
        "memory" if store_kind == "memory" else where / f"w-{time.monotonic_ns()}.db",
        **({} if store_kind == "memory" else {"durability": "batch"}),
    )
    engine = Engine(store)
    await engine.run(plan, {"x": 0})  # warm
    t0 = time.process_time()
    for _ in range(runs):
        await engine.run(plan, {"x": 0})
    cpu = time.process_time() - t0
    await store.close()
    return cpu


def main(reps: int, runs: int, calls: int) -> None:
    if not speedups.available():
        raise SystemExit("the C extension is not built: pip install -e . with a C compiler")
    results: dict[str, dict[bool, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            for on in (True, False):
                speedups.use(on)
                for name, fn in _calls(calls).items():
                    t0 = time.process_time()
                    fn()
                    us = (time.process_time() - t0) / calls * 1e6
                    results.setdefault(name, {True: [], False: []})[on].append(us)
                for kind in ("memory", "sqlite batch"):
                    us = asyncio.run(_runs(kind, runs, Path(tmp))) / (runs * 100) * 1e6
                    name = f"chain of 100 steps, {kind} (CPU µs/step)"
                    results.setdefault(name, {True: [], False: []})[on].append(us)
    speedups.use(True)
    load = os.getloadavg()
    print(f"{reps} interleaved rounds, medians; load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'what':<48}{'C':>9}{'Python':>9}{'saved':>9}")
    for name, by in results.items():
        c, py = statistics.median(by[True]), statistics.median(by[False])
        print(f"{name:<48}{c:>9.3f}{py:>9.3f}{py - c:>9.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--calls", type=int, default=100_000)
    a = ap.parse_args()
    main(a.reps, a.runs, a.calls)
