"""Durable waits on every store (memory, SQLite, PostgreSQL): ``ctx.sleep`` suspends a run
instead of holding a process and it goes on, once, when due; messages (``send`` / ``recv``)
and run events (``set_event`` / ``get_event``) with timeouts; idempotent starts by run id.

Kill -9 of a process that holds a sleeping run is in ``test_waits_crash.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, open_store, step
from erpoz.engine import Worker
from erpoz.errors import RunError, StoreError
from erpoz.flow._load import load_flow
from erpoz.store import Store
from pgtest import need_postgres, throwaway_schema

FLOWS = Path(__file__).resolve().parent / "wait_flows.py"


def flow(name: str) -> Flow:
    return load_flow(f"{FLOWS}:{name}")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
    elif request.param == "sqlite":
        yield str(tmp_path / "runs.db")
    else:
        need_postgres()
        with throwaway_schema("erpoz_waits") as schema:
            yield schema.url


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@step
async def nap(x: int, ctx: Context) -> int:
    await ctx.sleep(0.6)
    return x


@step
def plus(x: int) -> int:
    return x + 1


def napping(name: str = "nap_flow") -> Flow:
    f = Flow(name, inputs={"x": int})
    f.add(plus, id="after", x=f.add(nap, x=f.input("x")))
    return f


def test_a_long_sleep_suspends_the_run_and_it_goes_on_once_when_due(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        f = napping()
        result = await engine.run(f, {"x": 1})
        assert result.status == "waiting" and result.waiting_steps == ("nap",)
        assert result.wake_at is not None
        info = await store.get_run(result.run_id)
        assert info is not None and info.status == "waiting" and info.owner is None
        assert info.wake_at == pytest.approx(result.wake_at)
        events = await store.events(result.run_id)
        timer = [e for e in events if e.kind == "timer_set"]
        assert len(timer) == 1 and timer[0].data["wake_at"] == pytest.approx(result.wake_at)
        assert events[-1].kind == "run_waiting"
        assert events[-1].data["wake_at"] == pytest.approx(result.wake_at)

        early = await engine.resume(result.run_id, f)  # not due: left as it is
        assert early.status == "waiting" and early.wake_at == pytest.approx(result.wake_at)
        assert len(await store.events(result.run_id)) == len(events)

        done = await engine.resume(result.run_id, f, wait=True)
        assert done.status == "succeeded" and done.output == 2
        events = await store.events(result.run_id)
        assert kinds(events).count("timer_set") == 1  # the deadline is not set again
        assert kinds(events).count("run_resumed") == 1
        resumed = next(e for e in events if e.kind == "run_resumed")
        assert resumed.ts >= result.wake_at  # not before its time
        assert [e.step for e in events if e.kind == "step_succeeded"] == ["nap", "after"]
        info = await store.get_run(result.run_id)
        assert info is not None and info.wake_at is None and info.wake_on is None
        await store.close()

    run(main())


def test_a_short_sleep_is_slept_in_the_process_with_its_deadline_on_record(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        result = await Engine(store, hold_s=5).run(napping(), {"x": 1})
        assert result.status == "succeeded" and result.output == 2
        events = await store.events(result.run_id)
        assert kinds(events).count("timer_set") == 1
        assert "run_waiting" not in kinds(events)
        timer = next(e for e in events if e.kind == "timer_set")
        after = next(e for e in events if e.kind == "step_succeeded" and e.step == "nap")
        assert after.ts >= timer.data["wake_at"]
        await store.close()

    run(main())


def test_a_worker_wakes_a_sleeping_run_of_its_queue_when_it_is_due(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        rid = await engine.submit(flow("napper"), {"x": 5})
        worker = Worker(Engine(store, hold_s=0.1), poll_s=0.05)
        task = asyncio.create_task(worker.run())
        info = await store.get_run(rid)
        while info is not None and info.status not in ("succeeded", "failed"):
            await asyncio.sleep(0.05)
            info = await store.get_run(rid)
        worker.stop()
        await task
        assert info is not None and info.status == "succeeded" and info.output == "6"
        events = await store.events(rid)
        woke = [e for e in events if e.kind == "run_resumed" and "woke" in e.data]
        assert len(woke) == 1 and woke[0].ts >= woke[0].data["woke"]
        assert kinds(events).count("woke") == 1
        assert (worker.stats.waiting, worker.stats.succeeded) == (1, 1)
        await store.close()

    run(main())


def test_engine_wake_due_resumes_the_due_runs_of_no_queue(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(tmp_path / "runs.db")
        engine = Engine(store, hold_s=0.1)
        first = await engine.run(flow("napper"), {"x": 1})
        assert first.status == "waiting"
        assert await engine.wake_due() == []  # none is due yet
        assert first.wake_at is not None
        await asyncio.sleep(max(0.0, first.wake_at - time.time()) + 0.05)
        woken = await engine.wake_due()
        assert [(r.run_id, r.status, r.output) for r in woken] == [(first.run_id, "succeeded", 2)]
        await store.close()

    run(main())


def test_messages_wake_a_waiting_run_and_each_is_taken_once(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        f = flow("replier")
        first = await engine.run(f, {"ticket": "T1"})
        assert first.status == "waiting" and first.wake_at is not None
        info = await store.get_run(first.run_id)
        assert info is not None and info.wake_on == "msg:reply"
        assert first.wake_at - time.time() > 20  # waits up to its 30 s timeout
        await engine.send(first.run_id, "other", "not for this wait")
        info = await store.get_run(first.run_id)
        assert info is not None and info.wake_at == pytest.approx(first.wake_at)
        await engine.send(first.run_id, "reply", "yes please")
        await engine.send(first.run_id, "reply", "and a second one")
        info = await store.get_run(first.run_id)
        assert info is not None and info.wake_at is not None and info.wake_at <= time.time()
        done = await engine.resume(first.run_id, f)
        assert done.output == "T1: yes please"
        events = await store.events(first.run_id)
        got = [e for e in events if e.kind == "message_received"]
        assert len(got) == 1 and got[0].data["topic"] == "reply"
        assert await engine.get_event(first.run_id, "answered") == {
            "ticket": "T1",
            "reply": "yes please",
        }
        await store.close()

    run(main())


@step
async def three_replies(x: int, ctx: Context) -> list[Any]:
    return [await ctx.recv("reply", timeout=0.3) for _ in range(3)]


def test_recv_takes_messages_in_order_and_times_out_with_none(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        f = Flow("three_replies", inputs={"x": int})
        f.add(three_replies, x=f.add(nap, x=f.input("x")))
        first = await engine.run(f, {"x": 1})
        assert first.status == "waiting"  # sleeping in nap: messages sent now are kept
        await engine.send(first.run_id, "reply", "a")
        await engine.send(first.run_id, "reply", {"b": [1, 2]})
        # the third recv times out within hold_s: waited out here
        done = await Engine(store, hold_s=1).resume(first.run_id, f, wait=True)
        assert done.output == ["a", {"b": [1, 2]}, None]
        got = [e for e in await store.events(first.run_id) if e.kind == "message_received"]
        assert [("message_id" in e.data, e.data.get("timed_out", False)) for e in got] == [
            (True, False),
            (True, False),
            (False, True),
        ]
        assert got[0].data["message_id"] < got[1].data["message_id"]
        await store.close()

    run(main())


@step
async def publish(ctx: Context) -> str:
    await asyncio.sleep(0.3)
    await ctx.set_event("ready", {"n": 1})
    return "published"


def test_a_run_waits_for_another_runs_event(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        pub = Flow("publisher")
        pub.add(publish)
        other = "r-publisher-1"
        watching = await engine.run(flow("watcher"), {"other": other})
        assert watching.status == "waiting"
        info = await store.get_run(watching.run_id)
        assert info is not None and info.wake_on == f"event:{other}:answered"
        assert await engine.get_event(watching.run_id, "answered", timeout=0.05) is None
        replier = await engine.run(flow("replier"), {"ticket": "T9"}, run_id=other)
        await engine.send(replier.run_id, "reply", "done")
        assert (await engine.resume(replier.run_id)).output == "T9: done"
        info = await store.get_run(watching.run_id)
        assert info is not None and info.wake_at is not None and info.wake_at <= time.time()
        result = await engine.resume(watching.run_id)
        assert result.output == {"ticket": "T9", "reply": "done"}
        assert (await engine.run(pub)).output == "published"
        await store.close()

    run(main())


def test_a_start_with_an_existing_run_id_returns_that_run(url: str) -> None:
    async def main() -> None:
        store = open_store(url)
        engine = Engine(store, hold_s=0.1)
        f = flow("napper")
        first = await engine.run(f, {"x": 1}, run_id="order-42")
        assert first.status == "waiting"
        again = await engine.run(f, {"x": 1}, run_id="order-42")
        assert (again.run_id, again.status) == ("order-42", "waiting")
        assert again.wake_at == pytest.approx(first.wake_at)
        await engine.resume("order-42", wait=True)
        done = await engine.run(f, {"x": 1}, run_id="order-42")
        assert (done.status, done.output) == ("succeeded", 2)
        assert len([r for r in await store.list_runs() if r.run_id == "order-42"]) == 1
        with pytest.raises(RunError, match="exists already with other inputs"):
            await engine.run(f, {"x": 2}, run_id="order-42")
        with pytest.raises(RunError, match="exists already with other flow"):
            await engine.run(flow("replier"), {"ticket": "x"}, run_id="order-42")
        if url != "memory":
            rid = await engine.submit(f, {"x": 3}, run_id="job-7")
            assert await engine.submit(f, {"x": 3}, run_id="job-7") == rid
            with pytest.raises(RunError, match="other inputs"):
                await engine.submit(f, {"x": 4}, run_id="job-7")
        await store.close()

    run(main())


@step
async def bad_sleep(ctx: Context) -> None:
    await ctx.sleep(-1)


@step
def sync_sleeper(ctx: Context) -> None:
    asyncio.run(ctx.sleep(1))


def test_bad_waits_and_messages_get_clear_errors(tmp_path: Path) -> None:
    async def main() -> None:
        store: Store = open_store(tmp_path / "runs.db")
        engine = Engine(store)
        f = Flow("bad_sleep")
        f.add(bad_sleep)
        result = await engine.run(f)
        assert result.status == "failed" and "finite number of seconds >= 0" in (result.error or "")
        g = Flow("sync_sleeper")
        g.add(sync_sleeper)
        result = await engine.run(g)
        assert result.status == "failed" and "for async steps" in (result.error or "")
        with pytest.raises(RunError, match="no run 'nope'"):
            await engine.send("nope", "reply", 1)
        with pytest.raises(RunError, match="already failed"):
            await engine.send(result.run_id, "reply", 1)
        waiting = await Engine(store, hold_s=0).run(flow("replier"), {"ticket": "t"})
        with pytest.raises(RunError, match="topic 'bad topic'"):
            await engine.send(waiting.run_id, "bad topic", 1)
        with pytest.raises(RunError, match="JSON data"):
            await engine.send(waiting.run_id, "reply", {1, 2})
        await store.close()

    run(main())


def test_a_store_without_a_mailbox_says_so() -> None:
    class Plain:
        url = "plain://"

        async def get_run(self, run_id: str) -> None:
            return None

    engine = Engine(Plain())  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="keeps no messages"):
        run(engine.send("r", "t", 1))
