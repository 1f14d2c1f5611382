"""Run-start limits for workers (``erpoz worker --rate QUEUE=N/S``): across workers sharing a
store, no window of S seconds starts more than N runs of a queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from erpoz import Engine
from erpoz.engine import Rate, RunLimits, Worker
from erpoz.errors import ConfigError
from erpoz.flow import load_flow
from erpoz.store import SQLiteStore

STAMP = f"{Path(__file__).resolve().parent / 'schedule_flows.py'}:stamp"


def most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def test_workers_sharing_a_store_start_at_most_the_limit_per_window(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> list[float]:
        first = SQLiteStore(path)
        plan = load_flow(STAMP)
        for _ in range(12):
            await Engine(first).submit(plan, {"who": "x"})
        await Engine(first).submit(plan, {"who": "y"}, queue="other")
        stores = [SQLiteStore(path) for _ in range(3)]
        workers = [
            Worker(
                Engine(s),
                queues=["default", "other"],
                burst=True,
                poll_s=0.05,
                limits=RunLimits({"default": Rate(3, 0.5)}),
            )
            for s in stores
        ]
        stats = await asyncio.gather(*(w.run() for w in workers))
        assert sum(s.succeeded for s in stats) == 13
        grants = [at for at, n in await first.rate_grants("runs:default") if n > 0]
        assert await first.rate_grants("runs:other") == []  # no limit: no grants taken
        for s in [first, *stores]:
            await s.close()
        return grants

    grants = asyncio.run(main())
    assert len(grants) == 12  # one per run started; the claims that found nothing gave theirs back
    assert most_in_a_window(grants, 0.5) == 3


def test_rate_flags_are_checked() -> None:
    limits = RunLimits.parse(["default=5/1", "*=20/2.5s"])
    assert limits.queues == {"default": Rate(5, 1.0), "*": Rate(20, 2.5)}
    for bad in ("default=5", "default=0/1", "=5/1", "default=5/0"):
        with pytest.raises(ConfigError, match="QUEUE=N/S"):
            RunLimits.parse([bad])


CHAIN = f"{Path(__file__).resolve().parent / 'queue_flows.py'}:chain5"


def test_workers_sharing_a_store_keep_at_most_the_limit_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> list[tuple[float, float]]:
        first = SQLiteStore(path)
        plan = load_flow(CHAIN)
        ids = [await Engine(first).submit(plan, {"x": i}) for i in range(10)]
        stores = [SQLiteStore(path) for _ in range(3)]
        workers = [
            Worker(
                Engine(s),
                burst=True,
                poll_s=0.05,
                concurrency=4,
                limits=RunLimits(running={"default": 2}),
            )
            for s in stores
        ]
        stats = await asyncio.gather(*(w.run() for w in workers))
        assert sum(s.succeeded for s in stats) == 10
        assert await first.slots_in_use("running:default") == 0  # all given back
        spans = []
        for rid in ids:
            events = await first.events(rid)
            start = next(e.ts for e in events if e.kind == "run_resumed")
            spans.append((start, events[-1].ts))
        for s in [first, *stores]:
            await s.close()
        return spans

    spans = asyncio.run(main())
    # the most runs in flight at once: at each start, the runs started and not yet ended
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


def test_max_running_flags_are_checked() -> None:
    assert RunLimits.parse([], ["default=4", "*=16"]).running == {"default": 4, "*": 16}
    for bad in ("default", "default=0", "=3", "default=x"):
        with pytest.raises(ConfigError, match="QUEUE=N"):
            RunLimits.parse([], [bad])


def test_the_slot_of_a_process_that_died_comes_free_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "s.db"
    code = (
        "import asyncio, os, sys\n"
        "from erpoz.store import SQLiteStore\n"
        "s = SQLiteStore(sys.argv[1])\n"
        "assert asyncio.run(s.acquire_slot('running:default', 1, 'run-a', 3600.0))\n"
        "os._exit(0)  # dies holding it, its lease an hour long\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)

    async def main() -> tuple[int, bool]:
        store = SQLiteStore(path)
        try:
            return (
                await store.slots_in_use("running:default"),
                await store.acquire_slot("running:default", 1, "run-b", 30.0),
            )
        finally:
            await store.close()

    assert asyncio.run(main()) == (0, True)
