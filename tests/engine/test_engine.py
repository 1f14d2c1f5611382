"""The engine as users drive it: retries, timeouts, cache, types, ctx, review, resume, replay,
cancel, on the in-memory and the SQLite store."""

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import erpoz
from erpoz import Decision, Engine, FlowError, RetryPolicy, ReviewRequired, RunError
from erpoz.store import GENESIS, Event, MemoryStore, SQLiteStore, Store, chain_hash


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "e.db")
    yield s
    asyncio.run(s.close())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def of_kind(events: list[Event], kind: str, step: str | None = None) -> list[Event]:
    return [e for e in events if e.kind == kind and (step is None or e.step == step)]


def assert_chain(events: list[Event]) -> None:
    prev = GENESIS
    for i, e in enumerate(events, start=1):
        assert e.seq == i
        assert e.prev_hash == prev
        data = json.dumps(e.data, separators=(",", ":"), ensure_ascii=False) if e.data else "{}"
        assert e.hash == chain_hash(
            prev, e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, data, e.payload
        )
        prev = e.hash


async def check_log(store: Store, run_id: str, succeeded: set[str] | None = None) -> list[Event]:
    """The run's log is a valid chain and records each step's success at most once (exactly
    once for the steps in ``succeeded``). Returns the events."""
    events = await store.events(run_id)
    assert_chain(events)
    counts = Counter(e.step for e in of_kind(events, "step_succeeded"))
    twice = {s: n for s, n in counts.items() if n > 1}
    assert not twice, f"steps recorded as succeeded more than once: {twice}"
    if succeeded is not None:
        assert set(counts) == succeeded
    info = await store.get_run(run_id)
    assert info is not None
    assert info.head_seq == len(events)
    assert info.head_hash == events[-1].hash
    return events


async def status_of(store: Store, run_id: str) -> str:
    info = await store.get_run(run_id)
    assert info is not None
    return info.status


def one_step_flow(fn: Any, name: str = "one", **add: Any) -> erpoz.Flow:
    flow = erpoz.Flow(name, inputs={"x": int})
    flow.output(flow.add(fn, x=flow.input("x"), **add))
    return flow


# --- retries ------------------------------------------------------------------------------------
def test_a_step_failing_twice_then_succeeding_is_retried(store: Store) -> None:
    calls = Counter()

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0))
    def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError(f"try {calls['flaky']} failed")
        return x * 10

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(flaky), {"x": 4})
        assert result.status == "succeeded"
        assert result.output == 40
        assert calls["flaky"] == 3
        events = await check_log(store, result.run_id, {"flaky"})
        retried = of_kind(events, "step_retried", "flaky")
        assert [e.attempt for e in retried] == [1, 2]
        assert "ConnectionError: try 1 failed" in retried[0].data["error"]
        assert [e.attempt for e in of_kind(events, "step_started", "flaky")] == [1, 2, 3]
        assert of_kind(events, "step_succeeded", "flaky")[0].attempt == 3
        assert not of_kind(events, "step_failed")
        assert await status_of(store, result.run_id) == "succeeded"

    run(main())


def test_retry_delays_grow_by_the_multiplier(store: Store) -> None:
    calls = Counter()

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0.01, multiplier=3))
    def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("down")
        return x

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(flaky), {"x": 1})
        assert result.ok
        events = await store.events(result.run_id)
        assert [e.data["delay_s"] for e in of_kind(events, "step_retried")] == pytest.approx(
            [0.01, 0.03]
        )

    run(main())


@pytest.mark.parametrize(
    ("policy", "exc", "expected_calls"),
    [
        (RetryPolicy(attempts=5, backoff=0, give_up_on=(ValueError,)), ValueError("bad"), 1),
        (RetryPolicy(attempts=5, backoff=0, retry_on=(ConnectionError,)), KeyError("k"), 1),
        (
            RetryPolicy(attempts=3, backoff=0, retry_on=(ConnectionError,)),
            ConnectionResetError("reset"),
            3,
        ),
        (
            RetryPolicy(
                attempts=4, backoff=0, retry_on=(OSError,), give_up_on=(FileNotFoundError,)
            ),
            FileNotFoundError("gone"),
            1,
        ),
    ],
    ids=["give_up_on", "not_in_retry_on", "subclass_of_retry_on", "give_up_beats_retry_on"],
)
def test_retry_on_and_give_up_on_are_respected(
    store: Store, policy: RetryPolicy, exc: Exception, expected_calls: int
) -> None:
    calls = Counter()

    @erpoz.step
    def failing(x: int) -> int:
        calls["failing"] += 1
        raise exc

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(failing, retry=policy), {"x": 1})
        assert result.status == "failed"
        assert calls["failing"] == expected_calls
        events = await check_log(store, result.run_id, set())
        assert len(of_kind(events, "step_retried")) == expected_calls - 1
        failed = of_kind(events, "step_failed", "failing")
        assert len(failed) == 1
        assert failed[0].attempt == expected_calls
        assert failed[0].data["type"] == type(exc).__name__

    run(main())


def test_exhausted_attempts_fail_the_run_naming_step_and_error(store: Store) -> None:
    calls = Counter()

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0))
    def always(x: int) -> int:
        calls["always"] += 1
        raise RuntimeError(f"boom {x}")

    @erpoz.step
    def after(v: int) -> int:
        calls["after"] += 1
        return v

    flow = erpoz.Flow("exhaust", inputs={"x": int})
    flow.output(flow.add(after, v=flow.add(always, x=flow.input("x"))))

    async def main() -> None:
        result = await Engine(store).run(flow, {"x": 42})
        assert result.status == "failed"
        assert result.failed_step == "always"
        assert "boom 42" in (result.error or "")
        assert "RuntimeError" in (result.error or "")
        assert calls == {"always": 3}
        with pytest.raises(RunError, match="boom 42"):
            result.unwrap()
        info = await store.get_run(result.run_id)
        assert info is not None
        assert info.status == "failed"
        assert "always" in (info.error or "")
        assert "boom 42" in (info.error or "")
        events = await check_log(store, result.run_id, set())
        assert len(of_kind(events, "step_retried", "always")) == 2
        (failed,) = of_kind(events, "step_failed", "always")
        assert failed.attempt == 3
        assert "boom 42" in failed.data["traceback"]
        assert events[-1].kind == "run_failed"
        assert not of_kind(events, "step_started", "after")

    run(main())


def test_retry_given_to_flow_add_overrides_the_steps_own(store: Store) -> None:
    calls = Counter()

    @erpoz.step(retry=RetryPolicy(attempts=1))
    def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("once")
        return x

    async def main() -> None:
        flow = one_step_flow(flaky, retry=RetryPolicy(attempts=2, backoff=0))
        result = await Engine(store).run(flow, {"x": 5})
        assert result.ok
        assert calls["flaky"] == 2

    run(main())


# --- timeouts -----------------------------------------------------------------------------------
def test_an_async_step_that_times_out_fails_the_run(store: Store) -> None:
    @erpoz.step(timeout=0.05)
    async def slow(x: int) -> int:
        await asyncio.sleep(30)
        return x

    async def main() -> None:
        t0 = time.monotonic()
        result = await Engine(store).run(one_step_flow(slow), {"x": 1})
        assert time.monotonic() - t0 < 5
        assert result.status == "failed"
        assert result.failed_step == "slow"
        assert "timed out" in (result.error or "")
        assert await status_of(store, result.run_id) == "failed"
        events = await check_log(store, result.run_id, set())
        assert "timed out" in of_kind(events, "step_failed", "slow")[0].data["error"]

    run(main())


def test_a_sync_step_that_times_out_fails_the_run(store: Store) -> None:
    @erpoz.step(timeout=0.05)
    def slow_sync(x: int) -> int:
        time.sleep(0.5)
        return x

    async def main() -> None:
        t0 = time.monotonic()
        result = await Engine(store).run(one_step_flow(slow_sync), {"x": 1})
        assert time.monotonic() - t0 < 0.45  # the run does not wait for the thread
        assert result.status == "failed"
        assert result.failed_step == "slow_sync"
        assert "timed out" in (result.error or "")
        assert await status_of(store, result.run_id) == "failed"

    run(main())


def test_a_timed_out_attempt_is_retried(store: Store) -> None:
    calls = Counter()

    @erpoz.step(timeout=0.05, retry=RetryPolicy(attempts=2, backoff=0))
    async def sometimes_slow(x: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(30)
        return x + 1

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(sometimes_slow), {"x": 1})
        assert result.ok
        assert result.output == 2
        events = await check_log(store, result.run_id, {"sometimes_slow"})
        assert "timed out" in of_kind(events, "step_retried")[0].data["error"]

    run(main())


# --- output cache -------------------------------------------------------------------------------
def make_cached_step(calls: Counter, version: str) -> Any:
    @erpoz.step(cache=True, version=version)
    def expensive(x: int) -> dict[str, int]:
        calls[version] += 1
        return {"square": x * x}

    return expensive


def test_cached_step_is_not_called_again(store: Store) -> None:
    calls: Counter = Counter()
    flow = one_step_flow(make_cached_step(calls, "1"))

    async def main() -> None:
        engine = Engine(store)
        first = await engine.run(flow, {"x": 3})
        second = await engine.run(flow, {"x": 3})
        assert first.output == second.output == {"square": 9}
        assert calls["1"] == 1
        e1 = of_kind(await check_log(store, first.run_id, {"expensive"}), "step_succeeded")
        e2 = of_kind(await check_log(store, second.run_id, {"expensive"}), "step_succeeded")
        assert not e1[0].data.get("cached")
        assert e2[0].data["cached"] is True
        assert json.loads(e2[0].payload or "") == {"square": 9}
        # Other inputs are other cache entries.
        third = await engine.run(flow, {"x": 4})
        assert third.output == {"square": 16}
        assert calls["1"] == 2

    run(main())


def test_changing_the_step_version_reruns_it(store: Store) -> None:
    calls: Counter = Counter()

    async def main() -> None:
        engine = Engine(store)
        v1 = one_step_flow(make_cached_step(calls, "1"))
        v2 = one_step_flow(make_cached_step(calls, "2"))
        await engine.run(v1, {"x": 3})
        result = await engine.run(v2, {"x": 3})
        assert result.output == {"square": 9}
        assert calls == {"1": 1, "2": 1}
        (ok,) = of_kind(await store.events(result.run_id), "step_succeeded")
        assert not ok.data.get("cached")
        await engine.run(v2, {"x": 3})
        assert calls == {"1": 1, "2": 1}

    run(main())


def test_the_cache_survives_reopening_a_sqlite_store(tmp_path: Path) -> None:
    calls: Counter = Counter()
    flow = one_step_flow(make_cached_step(calls, "1"))

    async def once() -> Any:
        store = SQLiteStore(tmp_path / "cache.db")
        try:
            return await Engine(store).run(flow, {"x": 5})
        finally:
            await store.close()

    assert run(once()).output == {"square": 25}
    assert run(once()).output == {"square": 25}
    assert calls["1"] == 1


def test_a_failing_cached_step_is_not_cached(store: Store) -> None:
    calls: Counter = Counter()

    @erpoz.step(cache=True)
    def fails_once(x: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first time")
        return x

    async def main() -> None:
        engine = Engine(store)
        flow = one_step_flow(fails_once)
        assert (await engine.run(flow, {"x": 1})).status == "failed"
        assert (await engine.run(flow, {"x": 1})).output == 1
        assert (await engine.run(flow, {"x": 1})).output == 1
        assert calls["n"] == 2

    run(main())


# --- output types -------------------------------------------------------------------------------
def test_a_step_returning_the_wrong_type_fails_naming_the_declared_type(store: Store) -> None:
    @erpoz.step
    def liar(x: int) -> int:
        return "seven"  # type: ignore[return-value]

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(liar), {"x": 1})
        assert result.status == "failed"
        assert result.failed_step == "liar"
        assert "declared output type is int" in (result.error or "")
        assert "str" in (result.error or "")
        assert await status_of(store, result.run_id) == "failed"
        await check_log(store, result.run_id, set())

    run(main())


def test_an_output_that_cannot_be_serialised_fails_the_run_cleanly(store: Store) -> None:
    @erpoz.step
    def opaque(x: int) -> object:
        return object()

    @erpoz.step
    def opaque_any(x: int) -> Any:
        return {"handle": object()}

    async def main() -> None:
        engine = Engine(store)
        for fn in (opaque, opaque_any):
            result = await engine.run(one_step_flow(fn), {"x": 1})
            assert result.status == "failed"
            assert result.failed_step == fn.__name__
            assert "cannot serialise" in (result.error or "")
            info = await store.get_run(result.run_id)
            assert info is not None
            assert info.status == "failed"
            assert "cannot serialise" in (info.error or "")
            await check_log(store, result.run_id, set())

    run(main())


@dataclass
class Doc:
    text: str
    score: float


def test_structured_outputs_reach_dependents_as_their_declared_type(store: Store) -> None:
    @erpoz.step
    def make(x: int) -> Doc:
        return Doc(text="t" * x, score=0.5)

    @erpoz.step
    def use(doc: Doc) -> str:
        assert isinstance(doc, Doc)
        return f"{doc.text}:{doc.score}"

    flow = erpoz.Flow("docs", inputs={"x": int})
    flow.output(flow.add(use, doc=flow.add(make, x=flow.input("x"))))

    async def main() -> None:
        result = await Engine(store).run(flow, {"x": 2})
        assert result.output == "tt:0.5"
        events = await check_log(store, result.run_id, {"make", "use"})
        (made,) = of_kind(events, "step_succeeded", "make")
        assert json.loads(made.payload or "") == {"text": "tt", "score": 0.5}

    run(main())


# --- ctx ----------------------------------------------------------------------------------------
def test_ctx_sees_the_run_step_and_attempt_and_emits_events(store: Store) -> None:
    seen: list[tuple[str, str, int]] = []

    @erpoz.step(retry=RetryPolicy(attempts=2, backoff=0))
    async def probe(x: int, ctx: erpoz.Context) -> int:
        seen.append((ctx.run_id, ctx.step_id, ctx.attempt))
        ctx.emit("model_called", {"model": "tiny", "tokens": x, "attempt": ctx.attempt})
        if ctx.attempt == 1:
            raise ConnectionError("flaky model")
        return x

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(probe), {"x": 7})
        assert result.ok
        assert seen == [(result.run_id, "probe", 1), (result.run_id, "probe", 2)]
        events = await check_log(store, result.run_id, {"probe"})
        called = of_kind(events, "model_called", "probe")
        assert [(e.attempt, e.data) for e in called] == [
            (1, {"model": "tiny", "tokens": 7, "attempt": 1}),
            (2, {"model": "tiny", "tokens": 7, "attempt": 2}),
        ]
        # Emitted events sit between the step's start and its outcome.
        kinds = [e.kind for e in events if e.step == "probe"]
        assert kinds == [
            "step_started",
            "model_called",
            "step_retried",
            "step_started",
            "model_called",
            "step_succeeded",
        ]

    run(main())


def test_ctx_in_a_sync_step(store: Store) -> None:
    @erpoz.step
    def sync_probe(x: int, ctx: erpoz.Context) -> str:
        ctx.emit("tool.called", {"tool": "calc"})
        return f"{ctx.step_id}@{ctx.attempt}"

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(sync_probe), {"x": 1})
        assert result.output == "sync_probe@1"
        (called,) = of_kind(await store.events(result.run_id), "tool.called")
        assert called.data == {"tool": "calc"}

    run(main())


@pytest.mark.parametrize(
    "kind", ["step_succeeded", "run_succeeded", "review_resolved", "bad kind!", ""]
)
def test_ctx_refuses_reserved_and_malformed_event_kinds(store: Store, kind: str) -> None:
    raised: list[BaseException] = []

    @erpoz.step
    async def cheater(x: int, ctx: erpoz.Context) -> int:
        try:
            ctx.emit(kind, {"forged": True})
        except Exception as exc:
            raised.append(exc)
        return x

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(cheater), {"x": 1})
        assert result.ok
        assert len(raised) == 1
        assert isinstance(raised[0], RunError)
        events = await check_log(store, result.run_id, {"cheater"})
        assert not [e for e in events if e.data.get("forged")]

    run(main())


def test_an_uncaught_reserved_emit_fails_the_step(store: Store) -> None:
    @erpoz.step
    async def forger(x: int, ctx: erpoz.Context) -> int:
        ctx.emit("step_succeeded")
        return x

    async def main() -> None:
        result = await Engine(store).run(one_step_flow(forger), {"x": 1})
        assert result.status == "failed"
        assert "reserved" in (result.error or "")
        await check_log(store, result.run_id, set())

    run(main())


def test_idempotency_key_is_stable_across_attempts(store: Store) -> None:
    keys: list[tuple[str, str]] = []

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0))
    def charge(x: int, ctx: erpoz.Context) -> int:
        keys.append((ctx.run_id, ctx.idempotency_key))
        if len([k for k in keys if k[0] == ctx.run_id]) < 3:
            raise ConnectionError("payment gateway timeout")
        return x

    async def main() -> None:
        engine = Engine(store)
        first = await engine.run(one_step_flow(charge), {"x": 1})
        assert first.ok
        run_keys = {k for r, k in keys if r == first.run_id}
        assert len(run_keys) == 1
        (key,) = run_keys
        assert key
        second = await engine.run(one_step_flow(charge), {"x": 1})
        assert second.ok
        assert {k for r, k in keys if r == second.run_id} != run_keys  # per run

    run(main())


# --- review -------------------------------------------------------------------------------------
def review_flow(calls: Counter, *, via: str = "option") -> erpoz.Flow:
    """draft (review) -> publish; ``via`` says how draft asks for review."""

    @erpoz.step(review=via == "option")
    def draft(x: int) -> int:
        calls["draft"] += 1
        if via == "raise":
            raise ReviewRequired("low confidence", output=x * 2, evidence={"score": 0.3})
        return x * 2

    @erpoz.step
    def publish(v: int) -> str:
        calls["publish"] += 1
        return f"published {v}"

    flow = erpoz.Flow("review", inputs={"x": int})
    flow.output(flow.add(publish, v=flow.add(draft, x=flow.input("x"))))
    return flow


def test_a_review_step_pauses_the_run(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        result = await Engine(store).run(flow, {"x": 21})
        assert result.status == "waiting"
        assert result.waiting_steps == ("draft",)
        assert result.output is None
        with pytest.raises(RunError, match="waiting for review of draft"):
            result.unwrap()
        assert calls == {"draft": 1}
        info = await store.get_run(result.run_id)
        assert info is not None
        assert info.status == "waiting"
        assert info.waiting_step == "draft"
        assert info.owner is None
        events = await check_log(store, result.run_id, set())
        (request,) = of_kind(events, "review_requested", "draft")
        assert json.loads(request.payload or "") == 42
        assert events[-1].kind == "run_waiting"
        waiting = await store.list_runs(status="waiting")
        assert [r.run_id for r in waiting] == [result.run_id]

    run(main())


def test_resume_without_a_decision_is_refused(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        result = await engine.run(flow, {"x": 21})
        with pytest.raises(RunError, match="waiting for review"):
            await engine.resume(result.run_id, flow)
        assert await status_of(store, result.run_id) == "waiting"
        assert calls == {"draft": 1}

    run(main())


def test_approve_continues_with_the_proposal(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 21})
        done = await Engine(store).resume(
            paused.run_id, flow, decision=Decision("approve", reviewer="ana", comment="fine")
        )
        assert done.run_id == paused.run_id
        assert done.status == "succeeded"
        assert done.output == "published 42"
        assert calls == {"draft": 1, "publish": 1}
        events = await check_log(store, done.run_id, {"draft", "publish"})
        (resolved,) = of_kind(events, "review_resolved", "draft")
        assert resolved.data["decision"] == "approve"
        assert resolved.data["reviewer"] == "ana"
        assert resolved.data["comment"] == "fine"
        assert json.loads(of_kind(events, "step_succeeded", "draft")[0].payload or "") == 42
        assert await status_of(store, done.run_id) == "succeeded"
        with pytest.raises(RunError, match="already succeeded"):
            await engine.resume(done.run_id, flow, decision=Decision("approve"))

    run(main())


def test_edit_continues_with_the_edited_value(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 21})
        done = await engine.resume(paused.run_id, flow, decision=Decision("edit", output=7))
        assert done.status == "succeeded"
        assert done.output == "published 7"
        events = await check_log(store, done.run_id, {"draft", "publish"})
        assert json.loads(of_kind(events, "step_succeeded", "draft")[0].payload or "") == 7

    run(main())


def test_an_edit_that_does_not_fit_the_type_is_refused_and_the_run_keeps_waiting(
    store: Store,
) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 21})
        with pytest.raises(RunError, match="does not fit its type int"):
            await engine.resume(
                paused.run_id, flow, decision=Decision("edit", output="not a number")
            )
        info = await store.get_run(paused.run_id)
        assert info is not None
        assert info.status == "waiting"
        assert info.waiting_step == "draft"
        assert info.owner is None
        assert [r.run_id for r in await store.list_runs(status="waiting")] == [paused.run_id]
        # The reviewer tries again, with a value that fits.
        done = await engine.resume(paused.run_id, flow, decision=Decision("edit", output=8))
        assert done.output == "published 8"
        await check_log(store, done.run_id, {"draft", "publish"})

    run(main())


def test_reject_fails_the_run(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 21})
        done = await engine.resume(
            paused.run_id, flow, decision=Decision("reject", reviewer="bo", comment="wrong tone")
        )
        assert done.status == "failed"
        assert done.failed_step == "draft"
        assert "rejected" in (done.error or "")
        assert "wrong tone" in (done.error or "")
        assert calls == {"draft": 1}
        info = await store.get_run(paused.run_id)
        assert info is not None
        assert info.status == "failed"
        await check_log(store, paused.run_id, set())

    run(main())


def test_a_decision_is_approve_reject_or_edit() -> None:
    with pytest.raises(RunError, match="approve, reject or edit"):
        Decision("maybe")


def test_a_decision_for_a_run_not_waiting_is_refused(store: Store) -> None:
    @erpoz.step
    def plain(x: int) -> int:
        return x

    async def main() -> None:
        engine = Engine(store)
        flow = one_step_flow(plain)
        result = await engine.run(flow, {"x": 1})
        with pytest.raises(RunError, match="already succeeded"):
            await engine.resume(result.run_id, flow, decision=Decision("approve"))
        with pytest.raises(RunError, match="no run"):
            await engine.resume("no-such-run", flow)

    run(main())


def test_raising_review_required_pauses_likewise(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls, via="raise")

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 5})
        assert paused.status == "waiting"
        assert paused.waiting_steps == ("draft",)
        assert await status_of(store, paused.run_id) == "waiting"
        events = await check_log(store, paused.run_id, set())
        (request,) = of_kind(events, "review_requested", "draft")
        assert request.data["reason"] == "low confidence"
        assert request.data["evidence"] == {"score": 0.3}
        assert json.loads(request.payload or "") == 10
        done = await engine.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.output == "published 10"
        assert calls == {"draft": 1, "publish": 1}
        await check_log(store, done.run_id, {"draft", "publish"})

    run(main())


def test_review_requested_by_flow_add(store: Store) -> None:
    @erpoz.step
    def plain(x: int) -> int:
        return x + 1

    async def main() -> None:
        engine = Engine(store)
        flow = one_step_flow(plain, review=True)
        paused = await engine.run(flow, {"x": 1})
        assert paused.status == "waiting"
        done = await engine.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.output == 2

    run(main())


def test_independent_branches_keep_running_while_one_waits(store: Store) -> None:
    calls: Counter = Counter()

    @erpoz.step(review=True)
    def proposal(x: int) -> int:
        calls["proposal"] += 1
        return x + 1

    @erpoz.step
    def after_review(v: int) -> int:
        calls["after_review"] += 1
        return v * 100

    @erpoz.step
    async def side(x: int) -> int:
        calls["side"] += 1
        await asyncio.sleep(0.01)
        return x + 2

    @erpoz.step
    def side_next(v: int) -> int:
        calls["side_next"] += 1
        return v * 10

    @erpoz.step
    def join(a: int, b: int) -> list[int]:
        calls["join"] += 1
        return [a, b]

    flow = erpoz.Flow("branches", inputs={"x": int})
    reviewed = flow.add(after_review, v=flow.add(proposal, x=flow.input("x")))
    other = flow.add(side_next, v=flow.add(side, x=flow.input("x")))
    flow.output(flow.add(join, a=reviewed, b=other))

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 1})
        assert paused.status == "waiting"
        assert paused.waiting_steps == ("proposal",)
        assert calls == {"proposal": 1, "side": 1, "side_next": 1}
        await check_log(store, paused.run_id, {"side", "side_next"})
        done = await engine.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.output == [200, 30]
        assert calls == {"proposal": 1, "side": 1, "side_next": 1, "after_review": 1, "join": 1}
        await check_log(
            store, done.run_id, {"proposal", "after_review", "side", "side_next", "join"}
        )

    run(main())


# --- resume after an interruption ---------------------------------------------------------------
def test_resume_after_an_interruption_runs_only_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "resume.db"
    calls: Counter = Counter()
    state: dict[str, Any] = {"block": True}

    @erpoz.step
    def fetch(x: int) -> Doc:
        calls["fetch"] += 1
        return Doc(text="a" * x, score=1.0)

    @erpoz.step
    async def enrich(doc: Doc) -> Doc:
        calls["enrich"] += 1
        assert isinstance(doc, Doc)
        return Doc(text=doc.text.upper(), score=doc.score / 2)

    @erpoz.step
    async def finish(doc: Doc) -> str:
        calls["finish"] += 1
        assert isinstance(doc, Doc), "recorded outputs come back as their declared type"
        if state["block"]:
            state["started"].set()
            await asyncio.Event().wait()  # never fires: the process is interrupted here
        return f"{doc.text}/{doc.score}"

    flow = erpoz.Flow("pipeline", inputs={"x": int})
    flow.output(flow.add(finish, doc=flow.add(enrich, doc=flow.add(fetch, x=flow.input("x")))))

    async def interrupted() -> None:
        state["started"] = asyncio.Event()
        store = SQLiteStore(path)
        task = asyncio.create_task(Engine(store).run(flow, {"x": 3}, run_id="run-int"))
        await asyncio.wait_for(state["started"].wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()

    run(interrupted())
    assert calls == {"fetch": 1, "enrich": 1, "finish": 1}
    state["block"] = False

    async def resumed() -> None:
        store = SQLiteStore(path)  # a new process opening the same file
        info = await store.get_run("run-int")
        assert info is not None
        assert info.status == "running"
        assert info.owner is None
        result = await Engine(store).resume("run-int", flow)
        assert result.status == "succeeded"
        assert result.output == "AAA/0.5"
        events = await check_log(store, "run-int", {"fetch", "enrich", "finish"})
        assert len(of_kind(events, "run_resumed")) == 1
        assert await status_of(store, "run-int") == "succeeded"
        await store.close()

    run(resumed())
    assert calls == {"fetch": 1, "enrich": 1, "finish": 2}


# --- replay -------------------------------------------------------------------------------------
def test_replay_reruns_from_a_step_as_a_new_linked_run(store: Store) -> None:
    calls: Counter = Counter()
    state = {"offset": 0}

    @erpoz.step
    def step_a(x: int) -> int:
        calls["step_a"] += 1
        return x + 1

    @erpoz.step
    def step_b(v: int) -> int:
        calls["step_b"] += 1
        return v * 10 + state["offset"]

    @erpoz.step
    def step_c(v: int) -> str:
        calls["step_c"] += 1
        return f"c{v}"

    flow = erpoz.Flow("abc", inputs={"x": int})
    flow.output(flow.add(step_c, v=flow.add(step_b, v=flow.add(step_a, x=flow.input("x")))))

    async def main() -> None:
        engine = Engine(store)
        original = await engine.run(flow, {"x": 1})
        assert original.output == "c20"
        state["offset"] = 5  # the fix being tried
        replayed = await engine.replay(original.run_id, "step_b", flow)
        assert replayed.run_id != original.run_id
        assert replayed.status == "succeeded"
        assert replayed.output == "c25"
        assert calls == {"step_a": 1, "step_b": 2, "step_c": 2}
        info = await store.get_run(replayed.run_id)
        assert info is not None
        assert info.parent_run_id == original.run_id
        assert info.replay_from == "step_b"
        assert json.loads(info.inputs) == {"x": 1}
        events = await check_log(store, replayed.run_id, {"step_a", "step_b", "step_c"})
        (copied,) = of_kind(events, "step_succeeded", "step_a")
        assert copied.data["copied_from"] == original.run_id
        assert json.loads(copied.payload or "") == 2
        assert not of_kind(events, "step_started", "step_a")
        # The original run is untouched.
        assert await status_of(store, original.run_id) == "succeeded"
        await check_log(store, original.run_id, {"step_a", "step_b", "step_c"})
        with pytest.raises(FlowError, match="no step 'step_z'"):
            await engine.replay(original.run_id, "step_z", flow)

    run(main())


# --- cancel -------------------------------------------------------------------------------------
def test_cancel_a_waiting_run(store: Store) -> None:
    calls: Counter = Counter()
    flow = review_flow(calls)

    async def main() -> None:
        engine = Engine(store)
        paused = await engine.run(flow, {"x": 1})
        assert await engine.cancel(paused.run_id) == "cancelled"
        info = await store.get_run(paused.run_id)
        assert info is not None
        assert info.status == "cancelled"
        events = await check_log(store, paused.run_id, set())
        assert events[-1].kind == "run_cancelled"
        with pytest.raises(RunError, match="already cancelled"):
            await engine.resume(paused.run_id, flow, decision=Decision("approve"))
        with pytest.raises(RunError, match="already cancelled"):
            await engine.cancel(paused.run_id)
        with pytest.raises(RunError, match="no run"):
            await engine.cancel("no-such-run")
        assert calls == {"draft": 1}

    run(main())


def cancellable_flow(calls: Counter, state: dict[str, Any]) -> erpoz.Flow:
    @erpoz.step
    async def first(x: int) -> int:
        calls["first"] += 1
        state["started"].set()
        await state["go"].wait()
        return x

    @erpoz.step
    def second(v: int) -> int:
        calls["second"] += 1
        return v

    flow = erpoz.Flow("cancellable", inputs={"x": int})
    flow.output(flow.add(second, v=flow.add(first, x=flow.input("x"))))
    return flow


@pytest.mark.parametrize("canceller", ["another_engine", "the_same_engine"])
def test_cancel_a_running_run_stops_it_before_its_next_step(store: Store, canceller: str) -> None:
    calls: Counter = Counter()
    state: dict[str, Any] = {}
    flow = cancellable_flow(calls, state)

    async def main() -> None:
        state["started"], state["go"] = asyncio.Event(), asyncio.Event()
        engine = Engine(store)
        task = asyncio.create_task(engine.run(flow, {"x": 1}, run_id="run-c"))
        await asyncio.wait_for(state["started"].wait(), 5)
        other = Engine(store) if canceller == "another_engine" else engine
        assert await other.cancel("run-c") == "requested"
        state["go"].set()
        result = await task
        assert result.status == "cancelled"
        assert calls == {"first": 1}
        assert await status_of(store, "run-c") == "cancelled"
        events = await check_log(store, "run-c", {"first"})
        assert [e.kind for e in events].count("run_cancelled") == 1
        assert events[-1].kind == "run_cancelled"

    run(main())


# --- exactly-once recording ---------------------------------------------------------------------
def test_every_run_records_each_step_success_exactly_once(store: Store) -> None:
    calls: Counter = Counter()

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0))
    def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] % 2:
            raise ConnectionError("odd call")
        return x

    @erpoz.step(review=True)
    def check(v: int) -> int:
        return v

    @erpoz.step
    def items(v: int) -> list[int]:
        return list(range(v))

    @erpoz.step(cache=True)
    def double(i: int) -> int:
        return i * 2

    @erpoz.step
    def total(values: list[int]) -> int:
        return sum(values)

    flow = erpoz.Flow("mixed", inputs={"x": int})
    checked = flow.add(check, v=flow.add(flaky, x=flow.input("x")))
    doubled = flow.map(double, over=flow.add(items, v=checked), item="i", concurrency=3)
    flow.output(flow.add(total, values=doubled))

    async def main() -> None:
        engine = Engine(store)
        run_ids = []
        for x in (3, 4, 3):
            paused = await engine.run(flow, {"x": x})
            run_ids.append(paused.run_id)
            done = await engine.resume(paused.run_id, flow, decision=Decision("approve"))
            assert done.output == sum(i * 2 for i in range(x))
        replayed = await engine.replay(run_ids[0], "items", flow)
        assert replayed.ok
        runs = await store.list_runs()
        assert {r.run_id for r in runs} == {*run_ids, replayed.run_id}
        for r in runs:
            events = await check_log(store, r.run_id)
            ok = Counter(e.step for e in of_kind(events, "step_succeeded"))
            x = json.loads(r.inputs)["x"]
            expected = {
                "flaky",
                "check",
                "items",
                "double",
                "total",
                *(f"double[{i}]" for i in range(x)),
            }
            assert set(ok) == expected, r.run_id

    run(main())


def test_batch_durability_has_the_whole_run_once_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "batch.db"

    @erpoz.step
    def numbers(x: int) -> list[int]:
        return list(range(x))

    @erpoz.step(inline=True)
    def square(i: int) -> int:
        return i * i

    flow = erpoz.Flow("batched", inputs={"x": int})
    flow.output(flow.map(square, over=flow.add(numbers, x=flow.input("x")), item="i"))

    async def main() -> None:
        store = erpoz.open_store(path, durability="batch")
        result = await Engine(store).run(flow, {"x": 50})
        assert result.output == [i * i for i in range(50)]
        reader = SQLiteStore(path)  # another process reading the file
        info = await reader.get_run(result.run_id)
        assert info is not None
        assert info.status == "succeeded"
        events = await check_log(
            reader, result.run_id, {"numbers", "square", *(f"square[{i}]" for i in range(50))}
        )
        assert events[-1].kind == "run_succeeded"
        await reader.close()
        await store.close()

    run(main())


# --- the fast path of plain steps ---------------------------------------------------------------
def _fast_path_flow(general: bool) -> erpoz.Flow:
    """Async steps: a flaky one (retried), a chain, one whose output has the wrong type; with
    ``general`` each gets a timeout, which takes it off the fast path (PlanNode.plain)."""
    calls = Counter()
    extra: dict[str, Any] = {"timeout": 60.0} if general else {}

    @erpoz.step(retry=RetryPolicy(attempts=3, backoff=0))
    async def flaky(x: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError(f"try {calls['flaky']} failed")
        return x + 1

    @erpoz.step
    async def double(x: int) -> int:
        return x * 2

    @erpoz.step
    async def wrong(x: int) -> int:
        return f"{x}"  # type: ignore[return-value]

    flow = erpoz.Flow("fast-or-not", inputs={"x": int})
    a = flow.add(flaky, id="a", x=flow.input("x"), **extra)
    b = flow.add(double, id="b", x=a, **extra)
    flow.output(flow.add(wrong, id="c", x=b, **extra))
    return flow


def test_plain_steps_take_the_fast_path_and_write_what_the_general_path_writes(
    store: Store,
) -> None:
    fast, general = _fast_path_flow(False), _fast_path_flow(True)
    assert all(n.plain for n in fast.compile().nodes)
    assert not any(n.plain for n in general.compile().nodes)

    def shape(events: list[Event]) -> list[tuple[Any, ...]]:
        out = []
        for e in events:
            data = {k: v for k, v in (e.data or {}).items() if k not in ("ms", "traceback")}
            data.pop("fingerprint", None)
            data.pop("flow", None)
            out.append((e.kind, e.step, e.attempt, json.dumps(data, sort_keys=True), e.payload))
        return out

    async def main() -> None:
        shapes = []
        for flow in (fast, general):
            result = await Engine(store).run(flow, {"x": 4})
            assert result.status == "failed"
            assert result.failed_step == "c"
            assert "declared output type is int" in (result.error or "")
            events = await check_log(store, result.run_id, {"a", "b"})
            assert [e.attempt for e in of_kind(events, "step_started", "a")] == [1, 2, 3]
            assert of_kind(events, "step_succeeded", "b")[0].payload == "10"
            shapes.append(shape(events))
        assert shapes[0] == shapes[1]

    run(main())


def test_the_gc_is_held_back_while_a_thousand_runs_are_in_flight_and_put_back_after() -> None:
    import gc

    from erpoz.engine._gc import MANY, YOUNG

    seen: list[int] = []

    @erpoz.step
    async def look(x: int) -> int:
        await asyncio.sleep(0.01)  # every run is in flight at once
        seen.append(gc.get_threshold()[0])
        return x

    flow = one_step_flow(look)
    before = gc.get_threshold()

    async def main(n: int) -> None:
        engine = Engine(MemoryStore())
        results = await asyncio.gather(*(engine.run(flow, {"x": i}) for i in range(n)))
        assert [r.output for r in results] == list(range(n))

    run(main(MANY - 1))
    assert set(seen) == {before[0]}  # fewer runs: the GC as the process had it
    seen.clear()
    run(main(MANY + 10))
    assert YOUNG in seen
    assert gc.get_threshold() == before  # put back when they drained


def test_a_results_json_is_the_one_shape_the_cli_and_the_api_show() -> None:
    """``RunResult.to_json``: the output as the store records it (bytes as base64, a
    dataclass as an object), ``repr`` for what has no JSON form, and where the run stopped."""
    import base64

    from erpoz import RunResult

    @dataclass
    class Point:
        x: int

    shown = RunResult("r1", "succeeded", output={"b": b"\x00\xff", "p": Point(3)}).to_json()
    assert base64.urlsafe_b64decode(shown["output"]["b"]) == b"\x00\xff"
    assert shown["output"]["p"] == {"x": 3}
    assert json.loads(json.dumps(shown)) == shown
    waiting = RunResult("r2", "waiting", waiting_steps=("check",), wake_at=5.0).to_json()
    assert waiting["waiting_steps"] == ["check"] and waiting["wake_at"] == 5.0
    assert waiting["output"] is None and waiting["error"] is None

    class Opaque:
        __slots__ = ()

        def __repr__(self) -> str:
            return "<opaque>"

    assert RunResult("r3", "succeeded", output=Opaque()).to_json()["output"] == "<opaque>"
