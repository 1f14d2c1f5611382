"""What the store's background beat does for a running engine: batch commits while a step is
still running, and cancel requests from another process noticed within about a second."""

import asyncio
import sqlite3
from pathlib import Path

from erpoz import Engine, Flow, step
from erpoz.store import SQLiteStore, open_store


@step
async def quick(x: int) -> int:
    return x + 1


@step
async def slow(x: int) -> int:
    await asyncio.sleep(0.4)
    return x + 1


def _chain(*steps: object) -> Flow:
    flow = Flow("beat", inputs={"x": int})
    prev = flow.input("x")
    for i, fn in enumerate(steps):
        prev = flow.add(fn, id=f"s{i}", x=prev)  # type: ignore[arg-type]
    return flow


def _succeeded_on_disk(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT step FROM events WHERE kind='step_succeeded' ORDER BY seq")
        return [r[0] for r in rows]
    finally:
        db.close()


def test_batch_mode_commits_while_a_long_step_runs(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    seen: list[list[str]] = []

    async def main() -> str:
        store = open_store(path, durability="batch")
        task = asyncio.create_task(Engine(store).run(_chain(quick, slow), {"x": 0}))
        await asyncio.sleep(0.25)  # s0 done, s1 sleeping: no step success has flushed since
        seen.append(_succeeded_on_disk(path))
        result = await task
        await store.close()
        return result.status

    assert asyncio.run(main()) == "succeeded"
    assert seen == [["s0"]]


def test_cancel_from_another_store_stops_the_run_at_its_next_step(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def main() -> tuple[str, str, list[str]]:
        owner_store = SQLiteStore(path)
        other_store = SQLiteStore(path)  # another process's view of the same file
        flow = _chain(slow, slow, slow, slow, slow, slow, slow, slow)
        task = asyncio.create_task(Engine(owner_store).run(flow, {"x": 0}))
        await asyncio.sleep(0.2)
        run_id = (await other_store.list_runs())[0].run_id
        outcome = await Engine(other_store).cancel(run_id)
        result = await task
        done = _succeeded_on_disk(path)
        await owner_store.close()
        await other_store.close()
        return outcome, result.status, done

    outcome, status, done = asyncio.run(main())
    assert outcome == "requested"
    assert status == "cancelled"
    assert len(done) < 8  # stopped before the end (the beat polls cancel requests every second)


def test_fsync_option_makes_every_commit_sync_to_the_device(tmp_path: Path) -> None:
    store = open_store(tmp_path / "f.db", fsync=True)
    assert isinstance(store, SQLiteStore)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    asyncio.run(store.close())
