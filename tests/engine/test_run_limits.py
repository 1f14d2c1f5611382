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
