"""``python -m bench.audit_bench``: how fast ``erpoz audit verify --all`` recomputes chains.

Builds a SQLite store of 1,000 runs of a 100-step chain (~204,000 events, batch durability),
then times ``verify`` over all of it (median of 3). Target: ≥ 200,000 events/s.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from erpoz import Engine, Flow, step
from erpoz.audit import verify
from erpoz.store import open_store


@step
async def inc(x: int) -> int:
    return x + 1


def _chain(n: int) -> Flow:
    flow = Flow("chain", inputs={"x": int})
    prev = flow.input("x")
    for i in range(n):
        prev = flow.add(inc, id=f"s{i}", x=prev)
    return flow


async def main(runs: int = 1000, steps: int = 100) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.db"
        store = open_store(path, durability="batch")
        plan = _chain(steps).compile()
        engine = Engine(store)
        t0 = time.perf_counter()
        for _ in range(runs):
            await engine.run(plan, {"x": 0})
        await store.close()
        built = time.perf_counter() - t0
        store = open_store(path)
        times = []
        for _ in range(3):
            report = await verify(store)
            assert report.ok, report.problems[:3]
            times.append(report.seconds)
        await store.close()
    best = statistics.median(times)
    print(f"store: {report.runs} runs, {report.events} events (built in {built:.1f} s)")
    print(
        f"verify --all: {best:.3f} s median of 3 = {report.events / best:,.0f} events/s "
        f"(target ≥ 200,000)"
    )


if __name__ == "__main__":
    asyncio.run(main())
