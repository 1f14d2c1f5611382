"""Queued runs and workers, in one process: submit, claim, drive, hand back, review, abandon.

The runs go through real stores (memory and SQLite files); what crosses process boundaries
(SIGKILL, SIGTERM, PostgreSQL restarts) is in ``test_workers_postgres.py``.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine, Flow, FlowError, open_store, step
from erpoz.audit import verify
from erpoz.engine import Decision, Worker
from erpoz.errors import RunError, StoreError
from erpoz.flow._load import load_flow
from erpoz.store import Store

FLOWS = Path(__file__).resolve().parent / "queue_flows.py"


def flow(name: str) -> Flow:
    return load_flow(f"{FLOWS}:{name}")


async def drain(store: Store, **kw: Any) -> Worker:
    w = Worker(Engine(store), burst=True, poll_s=0.05, **kw)
    await w.run()
    return w


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


def test_submitted_runs_are_run_by_a_worker_from_their_log() -> None:
    async def main() -> None:
        store = open_store("memory")
        engine = Engine(store)
        ids = [
            await engine.submit(flow("chain5"), {"x": i}, tags={"tenant": "acme"})
            for i in range(12)
        ]
        for rid in ids:
            info = await store.get_run(rid)
            assert info is not None and info.status == "queued" and info.queue == "default"
        w = await drain(store, concurrency=4)
        assert (w.stats.claimed, w.stats.succeeded) == (12, 12)
        assert len(w.stats.claim_s) >= 12
        for i, rid in enumerate(ids):
            info = await store.get_run(rid)
            assert info is not None and info.status == "succeeded"
            assert info.output == str(i + 5) and info.tenant == "acme"
            events = await store.events(rid)
            assert kinds(events)[:3] == ["run_started", "run_queued", "run_resumed"]
            resumed = events[2].data
            assert resumed["worker"] == w.engine.owner and resumed["claims"] == 1
            assert kinds(events).count("step_succeeded") == 5
        assert (await verify(store)).ok

    asyncio.run(main())


def test_two_workers_share_a_sqlite_file_and_run_every_run_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"

    async def main() -> None:
        first = open_store(path)
        ids = [await Engine(first).submit(flow("chain5"), {"x": i}) for i in range(30)]
        second = open_store(path)  # another connection, as another process would have
        w1, w2 = await asyncio.gather(drain(first, concurrency=3), drain(second, concurrency=3))
        assert w1.stats.succeeded + w2.stats.succeeded == 30
        assert w1.stats.succeeded > 0 and w2.stats.succeeded > 0
        for rid in ids:
            events = await first.events(rid)
            done = collections.Counter(e.step for e in events if e.kind == "step_succeeded")
            assert done == {f"s{i}": 1 for i in range(1, 6)}
        assert (await verify(first)).ok
        await first.close()
        await second.close()

    asyncio.run(main())


def test_submit_checks_what_a_worker_will_need() -> None:
    @step
    def one(x: int) -> int:
        return x

    sourceless = Flow("sourceless", inputs={"x": int})
    sourceless.add(one, x=sourceless.input("x"))

    async def main() -> None:
        engine = Engine(open_store("memory"))
        with pytest.raises(FlowError, match="no source, so a worker could not load it"):
            await engine.submit(sourceless, {"x": 1})
        with pytest.raises(FlowError, match="input"):
            await engine.submit(flow("chain5"), {"x": "not a number"})
        with pytest.raises(RunError, match="queue name"):
            await engine.submit(flow("chain5"), {"x": 1}, queue="no spaces please")
        assert await engine.store.list_runs() == []  # nothing half-recorded

    asyncio.run(main())


def test_a_worker_takes_only_its_queues() -> None:
    async def main() -> None:
        store = open_store("memory")
        engine = Engine(store)
        gpu = await engine.submit(flow("chain5"), {"x": 1}, queue="gpu")
        cpu = await engine.submit(flow("chain5"), {"x": 2}, queue="cpu")
        await drain(store, queues=["gpu"])
        assert [(await store.get_run(r)).status for r in (gpu, cpu)] == ["succeeded", "queued"]  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_review_decision_sends_a_queued_run_back_to_its_queue() -> None:
    async def main() -> None:
        store = open_store("memory")
        engine = Engine(store)
        rid = await engine.submit(flow("reviewed"), {"x": 3})
        w = await drain(store)
        assert w.stats.waiting == 1
        result = await Engine(store).resume(rid, decision=Decision("approve", reviewer="ana"))
        assert result.status == "queued"
        info = await store.get_run(rid)
        assert info is not None and (info.status, info.owner) == ("queued", None)
        events = await store.events(rid)
        assert kinds(events)[-3:] == ["review_resolved", "step_succeeded", "run_queued"]
        assert events[-1].data == {"queue": "default", "after": "review"}
        await drain(store)
        info = await store.get_run(rid)
        assert info is not None and info.status == "succeeded"
        assert info.output == '"published 30"'
        draft_runs = [e for e in await store.events(rid) if e.step == "draft"]
        assert kinds(draft_runs).count("step_started") == 1  # approved, not run again

        # a rejection ends the run where it is decided: nothing for a worker to do
        other = await engine.submit(flow("reviewed"), {"x": 4})
        await drain(store)
        result = await Engine(store).resume(other, decision=Decision("reject", reviewer="ana"))
        assert result.status == "failed"
        # and requeue=False runs the approved run here, not on a worker
        third = await engine.submit(flow("reviewed"), {"x": 5})
        await drain(store)
        here = await Engine(store).resume(third, decision=Decision("approve"), requeue=False)
        assert here.status == "succeeded" and here.output == "published 50"

    asyncio.run(main())


SLOW = {"on": True}
gate_started: asyncio.Event | None = None


@step
async def maybe_slow(x: int) -> int:
    if gate_started is not None:
        gate_started.set()
    if SLOW["on"]:
        await asyncio.sleep(60)
    return x + 100


slow = Flow("slow", inputs={"x": int}, source=f"{__name__}:slow")
slow.add(maybe_slow, x=slow.input("x"))


def test_stop_hands_a_run_in_flight_back_and_another_worker_goes_on() -> None:
    global gate_started

    async def main() -> None:
        global gate_started
        gate_started = asyncio.Event()
        SLOW["on"] = True
        store = open_store("memory")
        rid = await Engine(store).submit(slow, {"x": 1})
        w = Worker(Engine(store), poll_s=0.05)
        running = asyncio.ensure_future(w.run())
        await asyncio.wait_for(gate_started.wait(), 10)
        w.stop(grace_s=0.0)
        stats = await asyncio.wait_for(running, 10)
        assert stats.handed_back == 1 and stats.succeeded == 0
        info = await store.get_run(rid)
        assert info is not None and (info.status, info.owner) == ("running", None)
        SLOW["on"] = False
        w2 = await drain(store)
        assert w2.stats.succeeded == 1
        info = await store.get_run(rid)
        assert info is not None and info.output == "101" and info.claims == 2
        events = await store.events(rid)
        started = [e for e in events if e.kind == "step_started"]
        assert len(started) == 2  # the handed-back step ran again (at least once) …
        assert kinds(events).count("step_succeeded") == 1  # … and was recorded once

    try:
        asyncio.run(main())
    finally:
        gate_started = None
        SLOW["on"] = True


def test_stop_with_grace_lets_a_run_in_flight_finish() -> None:
    async def main() -> None:
        store = open_store("memory")
        rid = await Engine(store).submit(flow("chain5"), {"x": 0})
        w = Worker(Engine(store), poll_s=0.05)
        running = asyncio.ensure_future(w.run())
        while (await store.get_run(rid)).status == "queued":  # type: ignore[union-attr]
            await asyncio.sleep(0.005)
        w.stop(grace_s=30.0)
        stats = await asyncio.wait_for(running, 30)
        assert (stats.succeeded, stats.handed_back) == (1, 0)

    asyncio.run(main())


def test_a_run_that_keeps_losing_its_workers_is_abandoned() -> None:
    async def main() -> None:
        store = open_store("memory")
        rid = await Engine(store).submit(flow("chain5"), {"x": 0})
        for n in range(3):  # three workers took it and vanished without finishing it
            claim = await store.claim_next(f"gone-{n}", ["default"])  # type: ignore[attr-defined]
            assert claim is not None
            await claim.writer.release()
        w = await drain(store, max_claims=3)
        assert w.stats.abandoned == 1
        info = await store.get_run(rid)
        assert info is not None and info.status == "failed"
        assert info.error is not None and "abandoned" in info.error and "3 times" in info.error

    asyncio.run(main())


def test_a_worker_that_cannot_load_the_flow_fails_the_run_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"

    async def main() -> None:
        store = open_store(path)
        rid = await Engine(store).submit(flow("chain5"), {"x": 0})
        await store.close()
        with sqlite3.connect(path) as db:  # the flow file moved away since
            db.execute(
                "UPDATE runs SET source = '/nowhere/flows.py:chain5' WHERE run_id = ?", (rid,)
            )
        store = open_store(path)
        w = await drain(store)
        assert w.stats.failed == 1 and w.stats.claimed == 1
        info = await store.get_run(rid)
        assert info is not None and info.status == "failed"
        assert "cannot load the flow" in (info.error or "") and "/nowhere/flows.py" in (
            info.error or ""
        )
        await store.close()

    asyncio.run(main())


def test_a_store_without_a_queue_says_so() -> None:
    class NoQueue:
        url = "custom://store"

    engine = Engine(NoQueue())  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="keeps no queue"):
        asyncio.run(engine.submit(flow("chain5"), {"x": 1}))
