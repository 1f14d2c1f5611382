"""The contract every run store must pass (SQLite, memory, and any store that plugs in later).

A backend's test module subclasses :class:`StoreContract` and overrides the ``store`` fixture:

    class TestSQLite(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            ...

Only the public :class:`erpoz.store.Store` / ``RunWriter`` protocols are used here. Events reach
a durable store when the writer is flushed or released, so tests flush before reading.
"""

import asyncio
import hashlib
import json
import os
import time
from typing import Any

import pytest

from erpoz import StoreError
from erpoz.store import EMPTY_ROOT, GENESIS, Event, MerkleLog, NewRun, Store, chain_hash

OWNER = f"contract-host:{os.getpid()}:owner-a"
OTHER = f"contract-host:{os.getpid()}:owner-b"


def new_run(run_id: str, **kw: Any) -> NewRun:
    kw.setdefault("flow", "contract_flow")
    kw.setdefault("fingerprint", "f" * 16)
    kw.setdefault("inputs", json.dumps({"x": 1}))
    return NewRun(run_id, **kw)


def data_json(data: dict[str, Any]) -> str:
    """Event data as the chain hashes it: compact JSON, ``{}`` when empty."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False) if data else "{}"


def assert_valid_chain(events: list[Event], run_id: str) -> None:
    """seq is 1..n, each prev_hash is the previous hash (GENESIS first), each hash recomputes."""
    assert events, "a run has at least its run_started event"
    prev = GENESIS
    for i, e in enumerate(events, start=1):
        assert e.run_id == run_id
        assert e.seq == i
        assert e.prev_hash == prev, f"event {e.seq} ({e.kind}) does not link to its predecessor"
        expected = chain_hash(
            e.prev_hash,
            e.run_id,
            e.seq,
            e.ts,
            e.kind,
            e.step,
            e.attempt,
            data_json(e.data),
            e.payload,
        )
        assert e.hash == expected, f"event {e.seq} ({e.kind}) hash does not recompute"
        prev = e.hash


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class StoreContract:
    """Behaviour every :class:`erpoz.store.Store` implementation must have."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    # --- what the audit reads -------------------------------------------------------------------
    def test_chain_rows_and_recorded_heads_verify(self, store: Store) -> None:
        from erpoz.audit import verify

        async def main() -> None:
            for rid in ("run-a", "run-b"):
                w = await store.create_run(new_run(rid), OWNER)
                w.append("step_started", "s", 1)
                w.append(
                    "step_succeeded",
                    "s",
                    1,
                    {"ms": 1.5},
                    '"big"' if rid == "run-a" else json.dumps("x" * 70_000),
                )
                w.append("run_succeeded", payload='"done"')
                await w.release()
            rows = await store.chain_rows()
            assert [(r[0], r[1]) for r in rows] == [
                ("run-a", 1),
                ("run-a", 2),
                ("run-a", 3),
                ("run-a", 4),
                ("run-b", 1),
                ("run-b", 2),
                ("run-b", 3),
                ("run-b", 4),
            ]
            assert [r[1] for r in await store.chain_rows("run-b")] == [1, 2, 3, 4]
            heads = {h[0]: h for h in await store.recorded_heads()}
            assert heads["run-a"][2] == 4 and heads["run-a"][3] == rows[3][9]
            report = await verify(store)
            assert report.ok, report.problems
            assert (report.runs, report.events) == (2, 8)

        run(main())

    @pytest.fixture
    def batching(self, store: Store) -> tuple[Store, Store]:
        """A store that groups commits (``batch`` durability, where the backend has it) and
        another handle on the same data to read it back; a backend without such a mode
        returns its one store twice."""
        return store, store

    @pytest.fixture
    def holding(self, store: Store) -> tuple[Store, Store]:
        """A store with ``effects`` durability (it holds pure steps' events until something
        leaves the process) and another handle on the same data; a backend without such a
        mode returns its one store twice."""
        return store, store

    def test_effects_durability_commits_before_something_leaves_the_process(
        self, holding: tuple[Store, Store]
    ) -> None:
        writer_store, reader = holding
        apart = writer_store is not reader

        async def kinds() -> list[str]:
            return [e.kind for e in await reader.events("run-e")]

        async def main() -> None:
            w = await writer_store.create_run(new_run("run-e"), OWNER)
            assert await kinds() == ["run_started"]  # on record from the start: resumable
            w.append("step_succeeded", "s1", 1, {"ms": 1.0}, "1")
            await w.flush()  # a pure step's success: not waited for
            if apart:
                assert await kinds() == ["run_started"]
            await w.settle()  # a model request is about to leave: its causes go on record
            assert await kinds() == ["run_started", "step_succeeded"]
            w.append("tool_intent", "s2", 1, {"n": 1})
            await w.commit()
            assert await kinds() == ["run_started", "step_succeeded", "tool_intent"]
            w.append("step_succeeded", "s2", 1, {"ms": 1.0}, "2")
            await w.flush()
            w.append("run_succeeded", payload="2")
            await w.release()
            events = await reader.events("run-e")
            assert [e.kind for e in events][-2:] == ["step_succeeded", "run_succeeded"]
            assert_valid_chain(events, "run-e")
            info = await reader.get_run("run-e")
            assert info is not None and (info.status, info.head_seq) == ("succeeded", 5)

        run(main())

    def test_runs_that_flush_together_are_each_durable_when_flush_returns(
        self, store: Store
    ) -> None:
        # group commit: one transaction may carry many runs' events, and each writer still
        # returns only once its own are on record
        async def one(i: int) -> None:
            w = await store.create_run(new_run(f"run-g{i}"), OWNER)
            for n in range(3):
                w.append("step_succeeded", f"s{n}", 1, {"ms": 1.0}, str(n))
                await w.flush()
                assert [e.seq for e in await store.events(f"run-g{i}")][-1] == n + 2
            w.append("run_succeeded", payload="2")
            await w.release()

        async def main() -> None:
            await asyncio.gather(*(one(i) for i in range(20)))
            for i in range(20):
                events = await store.events(f"run-g{i}")
                assert len(events) == 5
                assert_valid_chain(events, f"run-g{i}")

        run(main())

    def test_a_taken_id_among_runs_started_together_fails_that_run_only(self, store: Store) -> None:
        async def start(run_id: str) -> str:
            try:
                w = await store.create_run(new_run(run_id), OWNER)
            except StoreError as exc:
                return str(exc)
            await w.release()
            return "ok"

        async def main() -> None:
            w = await store.create_run(new_run("run-t1"), OWNER)
            await w.release()
            got = await asyncio.gather(*(start(f"run-t{i}") for i in range(4)))
            assert "already exists" in got[1], got
            assert [got[0], got[2], got[3]] == ["ok", "ok", "ok"]
            for i in (0, 2, 3):
                assert [e.kind for e in await store.events(f"run-t{i}")] == ["run_started"]
            assert len(await store.events("run-t1")) == 1  # the first run's log is untouched

        run(main())

    def test_snapshot_reads_give_what_the_separate_reads_give(self, store: Store) -> None:
        async def main() -> None:
            for rid in ("run-a", "run-b"):
                w = await store.create_run(new_run(rid), OWNER)
                w.append("step_succeeded", "s", 1, {"ms": 1.0}, '"x"')
                w.append("run_succeeded", payload='"done"')
                await w.release()
            assert await store.chain_and_heads() == (
                await store.chain_rows(),
                await store.recorded_heads(),
            )
            rows, heads = await store.chain_and_heads("run-b")
            assert rows == await store.chain_rows("run-b")
            assert heads == await store.recorded_heads()
            info, events = await store.run_with_events("run-a")
            assert info == await store.get_run("run-a")
            assert events == await store.events("run-a")
            assert info is not None and info.head_seq == len(events) == 3
            assert await store.run_with_events("nope") == (None, [])

        run(main())

    # --- writing and reading events -----------------------------------------------------------
    def test_commit_records_at_once_even_when_commits_are_grouped(
        self, batching: tuple[Store, Store]
    ) -> None:
        # the effects journal: an intent must be on record before the side effect is sent
        writer_store, reader = batching

        async def main() -> None:
            w = await writer_store.create_run(new_run("run-j"), OWNER)
            await w.commit()
            for i in range(1, 4):
                w.append("tool_intent", "s1", 1, {"n": i})
                await w.commit()
                kinds = [e.kind for e in await reader.events("run-j")]
                assert kinds == ["run_started"] + ["tool_intent"] * i
            await w.release()

        run(main())

    def test_create_run_returns_a_writer_for_the_run(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            assert w.run_id == "run-1"
            assert w.cancel_requested is False
            await w.release()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.run_id == "run-1"
            assert info.flow == "contract_flow"
            assert info.fingerprint == "f" * 16
            assert json.loads(info.inputs) == {"x": 1}
            assert info.status == "running"

        run(main())

    def test_run_started_is_the_first_event_with_inputs_as_payload(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(
                new_run("run-1", source="flows/x.yaml", tags={"team": "a"}), OWNER
            )
            await w.flush()
            events = await store.events("run-1")
            assert [e.kind for e in events] == ["run_started"]
            first = events[0]
            assert first.seq == 1
            assert first.prev_hash == GENESIS
            assert json.loads(first.payload or "") == {"x": 1}
            assert first.data["flow"] == "contract_flow"
            assert first.data["source"] == "flows/x.yaml"
            assert first.data["tags"] == {"team": "a"}

        run(main())

    def test_append_assigns_seq_1_to_n_in_order(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            for i in range(10):
                w.append("step_started", f"s{i}", 1)
                w.append("note", f"s{i}", 1, {"i": i, "text": "héllo"})
            await w.flush()
            events = await store.events("run-1")
            assert [e.seq for e in events] == list(range(1, 22))
            assert [e.kind for e in events[1:3]] == ["step_started", "note"]
            assert events[2].step == "s0"
            assert events[2].attempt == 1
            assert events[2].data == {"i": 0, "text": "héllo"}
            assert events[-1].data == {"i": 9, "text": "héllo"}

        run(main())

    def test_events_form_a_valid_hash_chain(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            w.append("step_started", "a", 1)
            w.append("step_succeeded", "a", 1, {"ms": 1.5}, json.dumps([1, 2, 3]))
            w.append("model_called", "b", 2, {"model": "m", "tokens": 12})
            w.append("step_skipped", "c")
            await w.release()
            assert_valid_chain(await store.events("run-1"), "run-1")

        run(main())

    def test_events_after_returns_only_later_events(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            for i in range(5):
                w.append("note", data={"i": i})
            await w.flush()
            later = await store.events("run-1", after=3)
            assert [e.seq for e in later] == [4, 5, 6]
            assert later[0].data == {"i": 2}
            assert await store.events("run-1", after=6) == []

        run(main())

    def test_events_of_runs_do_not_mix(self, store: Store) -> None:
        async def main() -> None:
            w1 = await store.create_run(new_run("run-1"), OWNER)
            w2 = await store.create_run(new_run("run-2"), OWNER)
            for i in range(3):
                w1.append("note", data={"run": 1, "i": i})
                w2.append("note", data={"run": 2, "i": i})
            await w1.flush()
            await w2.flush()
            e1, e2 = await store.events("run-1"), await store.events("run-2")
            assert_valid_chain(e1, "run-1")
            assert_valid_chain(e2, "run-2")
            assert all(e.data.get("run", 1) == 1 for e in e1)
            assert all(e.data.get("run", 2) == 2 for e in e2)

        run(main())

    def test_head_hash_is_the_last_events_hash(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            await w.flush()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.head_seq == 1
            # Step events (no status change) move the head too.
            w.append("step_started", "a", 1)
            w.append("step_succeeded", "a", 1, payload="42")
            await w.flush()
            info = await store.get_run("run-1")
            events = await store.events("run-1")
            assert info is not None
            assert info.head_seq == len(events) == 3
            assert info.head_hash == events[-1].hash
            w.append("run_succeeded", payload="42")
            await w.release()
            info = await store.get_run("run-1")
            events = await store.events("run-1")
            assert info is not None
            assert info.head_seq == len(events) == 4
            assert info.head_hash == events[-1].hash

        run(main())

    def test_large_payloads_round_trip_intact(self, store: Store) -> None:
        big = json.dumps({"text": "é" + "x" * (200 * 1024) + "ü", "n": list(range(100))})
        assert len(big) > 64 * 1024

        async def main() -> None:
            w1 = await store.create_run(new_run("run-1"), OWNER)
            w1.append("step_succeeded", "a", 1, payload=big)
            w1.append("step_succeeded", "b", 1, payload="small")
            w1.append("run_succeeded", payload=big)
            await w1.release()
            # The same large payload in another run (stored once, content-addressed, in SQLite).
            w2 = await store.create_run(new_run("run-2"), OWNER)
            w2.append("step_succeeded", "a", 1, payload=big)
            await w2.release()
            e1 = await store.events("run-1")
            assert e1[1].payload == big
            assert e1[2].payload == "small"
            assert e1[3].payload == big
            assert_valid_chain(e1, "run-1")
            e2 = await store.events("run-2")
            assert e2[1].payload == big
            assert_valid_chain(e2, "run-2")
            info = await store.get_run("run-1")
            assert info is not None
            assert info.output == big

        run(main())

    def test_values_that_grow_round_trip_intact_and_chain(self, store: Store) -> None:
        """A state that grows by appending (stored as shared pieces where the store splits
        values): every version reads back exactly, in runs that share parts of it."""
        notes = [f"note {i}: " + 'ab\u001fc"é ' * 100 for i in range(30)]
        compact = {"separators": (",", ":"), "ensure_ascii": False}
        versions = [
            json.dumps({"n": i, "notes": notes[:i], "meta": {"k": [1.5, None, True]}}, **compact)
            for i in range(30)
        ] + [json.dumps(notes), json.dumps(notes, **compact)]  # (spaced JSON is kept whole)

        async def main() -> None:
            for run_id in ("grow-1", "grow-2"):
                w = await store.create_run(new_run(run_id), OWNER)
                for i, text in enumerate(versions):
                    w.append("step_succeeded", f"s#{i}", 1, payload=text)
                w.append("run_succeeded", payload=versions[-1])
                await w.release()
                events = await store.events(run_id)
                assert [e.payload for e in events[1:]] == [*versions, versions[-1]]
                assert_valid_chain(events, run_id)
                info, both = await store.run_with_events(run_id)
                assert info is not None and info.output == versions[-1]
                assert [e.payload for e in both] == [e.payload for e in events]
            assert (await store.list_runs())[0].output == versions[-1]

        run(main())

    # --- the run projection -------------------------------------------------------------------
    def test_status_follows_run_events_to_succeeded(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            await w.flush()

            async def status() -> tuple[str, str | None]:
                info = await store.get_run("run-1")
                assert info is not None
                return info.status, info.waiting_step

            assert await status() == ("running", None)
            w.append("review_requested", "check", 1, {"reason": "r"}, "1")
            w.append("run_waiting", data={"step": "check", "steps": ["check"]})
            await w.release()
            assert await status() == ("waiting", "check")
            w = await store.claim_run("run-1", OWNER)
            w.append("run_resumed", data={"decision": "approve"})
            await w.flush()
            assert await status() == ("running", None)
            w.append("run_succeeded", data={"steps": 1}, payload='{"answer":42}')
            await w.release()
            assert await status() == ("succeeded", None)
            info = await store.get_run("run-1")
            assert info is not None
            assert json.loads(info.output or "") == {"answer": 42}
            assert info.error is None

        run(main())

    def test_status_failed_records_the_error(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            w.append("step_failed", "a", 1, {"error": "ValueError: boom"})
            w.append("run_failed", data={"error": "step 'a' failed: ValueError: boom", "step": "a"})
            await w.release()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.status == "failed"
            assert info.error == "step 'a' failed: ValueError: boom"
            assert info.output is None

        run(main())

    def test_status_cancelled(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            w.append("run_cancelled", data={"by": "request"})
            await w.release()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.status == "cancelled"

        run(main())

    def test_step_events_do_not_change_run_status(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            w.append("step_failed", "a", 1, {"error": "x"})
            w.append("step_succeeded", "b", 1, payload="1")
            w.append("review_requested", "c", 1, {}, "1")
            await w.flush()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.status == "running"

        run(main())

    def test_get_run_unknown_is_none(self, store: Store) -> None:
        async def main() -> None:
            assert await store.get_run("no-such-run") is None
            assert await store.events("no-such-run") == []

        run(main())

    def test_list_runs_newest_first_with_status_filter_and_limit(self, store: Store) -> None:
        async def main() -> None:
            for i in range(5):
                w = await store.create_run(
                    new_run(f"run-{i}", flow="even" if i % 2 == 0 else "odd"), OWNER
                )
                if i in (1, 3):
                    w.append("run_failed", data={"error": "no"})
                await w.release()
                time.sleep(0.002)  # distinct creation times
            runs = await store.list_runs()
            assert [r.run_id for r in runs] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
            failed = await store.list_runs(status="failed")
            assert [r.run_id for r in failed] == ["run-3", "run-1"]
            running = await store.list_runs(status="running")
            assert [r.run_id for r in running] == ["run-4", "run-2", "run-0"]
            assert [r.run_id for r in await store.list_runs(limit=2)] == ["run-4", "run-3"]
            assert [r.run_id for r in await store.list_runs(status="running", limit=1)] == ["run-4"]
            assert [r.run_id for r in await store.list_runs(flow="odd")] == ["run-3", "run-1"]
            assert await store.list_runs(status="succeeded") == []

        run(main())

    def test_every_run_belongs_to_a_tenant_and_lists_filter_by_it(self, store: Store) -> None:
        async def main() -> None:
            for i, tenant in enumerate(["acme", "globex", None, "acme"]):
                tags = {"tenant": tenant} if tenant else {}
                w = await store.create_run(new_run(f"t-{i}", tags=tags), OWNER)
                await w.release()
                time.sleep(0.002)
            acme = await store.list_runs(tenant="acme")
            assert [r.run_id for r in acme] == ["t-3", "t-0"]
            assert all(r.tenant == "acme" for r in acme)
            assert [r.run_id for r in await store.list_runs(tenant="-")] == ["t-2"]
            assert await store.list_runs(tenant="initech") == []
            info = await store.get_run("t-1")
            assert info is not None and info.tenant == "globex"
            assert info.to_json()["tenant"] == "globex"

        run(main())

    def test_replay_links_are_kept(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(
                new_run("child", parent_run_id="parent", replay_from="b"), OWNER
            )
            await w.release()
            info = await store.get_run("child")
            assert info is not None
            assert info.parent_run_id == "parent"
            assert info.replay_from == "b"
            first = (await store.events("child"))[0]
            assert first.data["parent_run_id"] == "parent"
            assert first.data["replay_from"] == "b"

        run(main())

    # --- ownership ----------------------------------------------------------------------------
    def test_creating_the_same_run_id_twice_is_refused(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            await w.release()
            with pytest.raises(StoreError, match="run-1"):
                await store.create_run(new_run("run-1"), OTHER)
            # The original run is untouched.
            events = await store.events("run-1")
            assert [e.kind for e in events] == ["run_started"]

        run(main())

    def test_claim_run_unknown_is_a_store_error(self, store: Store) -> None:
        async def main() -> None:
            with pytest.raises(StoreError, match="no-such-run"):
                await store.claim_run("no-such-run", OWNER)

        run(main())

    def test_claim_after_release_continues_the_chain(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            w.append("step_succeeded", "a", 1, payload="1")
            await w.release()
            w2 = await store.claim_run("run-1", OTHER)
            w2.append("run_resumed")
            w2.append("step_succeeded", "b", 1, payload="2")
            await w2.release()
            events = await store.events("run-1")
            assert [e.kind for e in events] == [
                "run_started",
                "step_succeeded",
                "run_resumed",
                "step_succeeded",
            ]
            assert_valid_chain(events, "run-1")

        run(main())

    def test_claim_of_a_run_held_by_another_live_owner_is_refused(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            await w.flush()
            with pytest.raises(StoreError):
                await store.claim_run("run-1", OTHER)
            # The owner still writes normally.
            w.append("run_succeeded", payload="1")
            await w.release()
            info = await store.get_run("run-1")
            assert info is not None
            assert info.status == "succeeded"
            assert_valid_chain(await store.events("run-1"), "run-1")

        run(main())

    # --- cancellation -------------------------------------------------------------------------
    def test_request_cancel_reaches_the_writer(self, store: Store) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("run-1"), OWNER)
            await w.flush()
            assert w.cancel_requested is False
            await store.request_cancel("run-1")
            assert w.cancel_requested is True
            info = await store.get_run("run-1")
            assert info is not None
            assert info.cancel_requested is True
            # A request for an unknown run is harmless.
            await store.request_cancel("no-such-run")

        run(main())

    def test_request_cancel_of_one_run_leaves_others_alone(self, store: Store) -> None:
        async def main() -> None:
            w1 = await store.create_run(new_run("run-1"), OWNER)
            w2 = await store.create_run(new_run("run-2"), OWNER)
            await w1.flush()
            await store.request_cancel("run-2")
            assert w1.cancel_requested is False
            assert w2.cancel_requested is True

        run(main())

    # --- output cache -------------------------------------------------------------------------
    def test_cache_get_and_put(self, store: Store) -> None:
        async def main() -> None:
            assert await store.cache_get("k1") is None
            await store.cache_put("k1", "mod:step", '{"v":1}')
            assert await store.cache_get("k1") == '{"v":1}'
            assert await store.cache_get("k2") is None
            await store.cache_put("k1", "mod:step", '{"v":2}')
            assert await store.cache_get("k1") == '{"v":2}'
            big = json.dumps("y" * (100 * 1024))
            await store.cache_put("k3", "mod:step", big)
            assert await store.cache_get("k3") == big

        run(main())

    # --- the Merkle tree (erpoz.store.MerkleLog) --------------------------------------------------
    def test_every_event_is_a_leaf_in_the_order_committed(self, store: Store) -> None:
        async def main() -> None:
            assert isinstance(store, MerkleLog)
            empty = await store.tree_head()
            assert (empty.size, empty.root) == (0, EMPTY_ROOT) and len(empty.origin) >= 16
            w1 = await store.create_run(new_run("run-1"), OWNER)
            w2 = await store.create_run(new_run("run-2"), OWNER)
            await w1.flush()
            for i in range(3):  # interleaved, committed together
                w1.append("note", data={"i": i})
                w2.append("note", data={"i": i})
            await w1.flush()
            await w2.release()
            await w1.release()
            leaves = await store.tree_leaves()
            assert [(leaf[0], leaf[1]) for leaf in leaves] == sorted(
                (leaf[0], leaf[1]) for leaf in leaves
            ), "ordered by run and sequence, like chain_rows"
            by_pos = sorted(leaves, key=lambda leaf: leaf[2])
            assert [leaf[2] for leaf in by_pos] == list(range(8))
            assert [(leaf[0], leaf[1]) for leaf in by_pos[2:]] == [
                ("run-1", 2),
                ("run-2", 2),
                ("run-1", 3),
                ("run-2", 3),
                ("run-1", 4),
                ("run-2", 4),
            ], "events committed together go in the order they were appended"
            hashes = {(r[0], r[1]): r[9] for r in await store.chain_rows()}
            for run_id, seq, _pos, leaf in leaves:
                expected = hashlib.sha256(
                    b"\x00" + f"{run_id}\x1f{seq}\x1f{hashes[(run_id, seq)]}".encode()
                ).digest()
                assert leaf == expected
            head = await store.tree_head()
            assert head.size == 8 and head.origin == empty.origin
            assert head.root == mth([leaf[3] for leaf in by_pos])
            assert [leaf[:3] for leaf in await store.tree_leaves("run-2")] == [
                ("run-2", s, p) for _r, s, p, _l in leaves if _r == "run-2"
            ]

        run(main())

    def test_the_root_is_rfc_9162s_after_every_commit(self, store: Store) -> None:
        async def main() -> None:
            assert isinstance(store, MerkleLog)
            w = await store.create_run(new_run("run-1"), OWNER)
            for n in range(2, 40):
                w.append("note", data={"n": n})
                if n % 3:
                    await w.flush()
                else:
                    w.append("note", data={"n": -n})
                    await w.flush()
                head = await store.tree_head()
                leaves = sorted(await store.tree_leaves(), key=lambda leaf: leaf[2])
                assert head.size == len(leaves)
                assert head.root == mth([leaf[3] for leaf in leaves]), head.size
            await w.release()

        run(main())

    def test_stored_nodes_are_the_roots_of_complete_subtrees(self, store: Store) -> None:
        async def main() -> None:
            assert isinstance(store, MerkleLog)
            w = await store.create_run(new_run("run-1"), OWNER)
            for i in range(300):
                w.append("note", data={"i": i})
                if i % 64 == 0:
                    await w.flush()
            await w.release()
            leaves = [leaf[3] for leaf in sorted(await store.tree_leaves(), key=lambda x: x[2])]
            n = len(leaves)
            assert n == 301
            assert await store.tree_hashes(0, 10, 14) == leaves[10:14]
            level4 = await store.tree_hashes(4, 0, n)
            assert level4 == [mth(leaves[i * 16 : (i + 1) * 16]) for i in range(n // 16)]
            assert await store.tree_hashes(8, 0, 9) == [mth(leaves[:256])]
            assert await store.tree_hashes(4, 5, 7) == level4[5:7]
            with pytest.raises(StoreError, match="level 3"):
                await store.tree_hashes(3, 0, 1)

        run(main())


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162's Merkle Tree Hash of leaf hashes, as the RFC defines it (recursively)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def dead_owner() -> str:
    """An owner id naming a process of this host that has exited."""
    import socket
    import subprocess

    proc = subprocess.run(["true"], check=True)
    del proc
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:gone"


class QueueContract:
    """Behaviour every store that keeps a queue of runs (:class:`erpoz.store.RunQueue`) must
    have: what workers rely on."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    def test_a_submitted_run_is_queued_owned_by_nobody_and_on_record(self, store: Any) -> None:
        async def main() -> None:
            await store.submit_run(new_run("q-1", tags={"tenant": "acme"}), "default")
            info = await store.get_run("q-1")
            assert info is not None
            assert (info.status, info.owner, info.queue, info.claims) == (
                "queued",
                None,
                "default",
                0,
            )
            assert info.tenant == "acme"
            events = await store.events("q-1")
            assert [e.kind for e in events] == ["run_started", "run_queued"]
            assert events[1].data == {"queue": "default"}
            assert_valid_chain(events, "q-1")
            assert [r.run_id for r in await store.list_runs(status="queued")] == ["q-1"]
            with pytest.raises(StoreError, match="already exists"):
                await store.submit_run(new_run("q-1"), "default")

        run(main())

    def test_claim_next_takes_the_oldest_run_of_its_queues_only(self, store: Any) -> None:
        async def main() -> None:
            w = await store.create_run(new_run("mine"), OWNER)  # not submitted: never claimed
            await w.release()
            for rid, queue in (("q-1", "default"), ("g-1", "gpu"), ("q-2", "default")):
                await store.submit_run(new_run(rid), queue)
                time.sleep(0.002)  # created timestamps apart
            got = [await store.claim_next(OWNER, ["default"]) for _ in range(3)]
            assert [c.info.run_id if c else None for c in got] == ["q-1", "q-2", None]
            first = got[0]
            assert first.info.status == "queued" and first.info.claims == 1
            assert first.previous_owner is None
            info = await store.get_run("q-1")
            assert info is not None and info.owner == OWNER
            gpu = await store.claim_next(OTHER, ["gpu", "default"])
            assert gpu is not None and gpu.info.run_id == "g-1"
            assert await store.claim_next(OTHER, []) is None

        run(main())

    def test_the_claimer_continues_the_chain(self, store: Any) -> None:
        async def main() -> None:
            await store.submit_run(new_run("q-1"), "default")
            claim = await store.claim_next(OWNER, ["default"])
            w = claim.writer
            w.append("run_resumed", data={"worker": OWNER})
            w.append("step_succeeded", "a", 1, payload="1")
            w.append("run_succeeded", payload="1")
            await w.release()
            events = await store.events("q-1")
            assert [e.kind for e in events][-3:] == [
                "run_resumed",
                "step_succeeded",
                "run_succeeded",
            ]
            assert_valid_chain(events, "q-1")
            info = await store.get_run("q-1")
            assert info is not None and (info.status, info.owner) == ("succeeded", None)
            assert await store.claim_next(OTHER, ["default"]) is None  # finished runs stay put

        run(main())

    def test_concurrent_claimers_never_get_the_same_run(self, store: Any) -> None:
        async def main() -> None:
            for i in range(20):
                await store.submit_run(new_run(f"q-{i:02d}"), "default")
            owners = [f"{OWNER}-{k}" for k in range(4)]

            async def drain(owner: str) -> list[str]:
                got = []
                while (c := await store.claim_next(owner, ["default"])) is not None:
                    got.append(c.info.run_id)
                return got

            lists = await asyncio.gather(*(drain(o) for o in owners))
            claimed = [r for lst in lists for r in lst]
            assert sorted(claimed) == [f"q-{i:02d}" for i in range(20)]
            assert len(set(claimed)) == 20

        run(main())

    def test_a_run_handed_back_unfinished_is_claimable_again(self, store: Any) -> None:
        async def main() -> None:
            await store.submit_run(new_run("q-1"), "default")
            first = await store.claim_next(OWNER, ["default"])
            first.writer.append("run_resumed")
            first.writer.append("step_succeeded", "a", 1, payload="1")
            assert await store.claim_next(OTHER, ["default"]) is None  # held by a live owner
            await first.writer.release()  # handed back while running
            again = await store.claim_next(OTHER, ["default"])
            assert again is not None and again.info.run_id == "q-1"
            assert again.info.claims == 2 and again.info.status == "running"
            again.writer.append("run_resumed")
            await again.writer.release()
            assert_valid_chain(await store.events("q-1"), "q-1")

        run(main())

    def test_a_run_whose_lease_lapsed_is_taken_over(self, store: Any) -> None:
        store.lease_s = 0.3

        async def first() -> None:
            claim = await store.claim_next(OWNER, ["default"])
            claim.writer.append("run_resumed")
            await claim.writer.flush()  # and then this owner is never heard of again

        async def second() -> None:
            assert await store.claim_next(OTHER, ["default"]) is None  # the lease still holds
            await asyncio.sleep(0.6)
            claim = await store.claim_next(OTHER, ["default"])
            assert claim is not None and claim.previous_owner == OWNER
            assert claim.info.claims == 2
            claim.writer.append("run_resumed")
            claim.writer.append("run_succeeded", payload="1")
            await claim.writer.release()
            assert_valid_chain(await store.events("q-1"), "q-1")

        run(store.submit_run(new_run("q-1"), "default"))
        run(first())
        run(second())

    def test_a_run_of_a_dead_process_is_taken_at_once(self, store: Any) -> None:
        async def main() -> None:
            await store.submit_run(new_run("q-1"), "default")
            gone = dead_owner()
            claim = await store.claim_next(gone, ["default"])
            assert claim is not None
            await claim.writer.flush()
            again = await store.claim_next(OTHER, ["default"])  # its lease has 30 s to go
            assert again is not None and again.previous_owner == gone

        run(main())

    def test_submitted_and_claimed_runs_are_in_the_tree(self, store: Any) -> None:
        async def main() -> None:
            await store.submit_run(new_run("q-1"), "default")
            claim = await store.claim_next(OWNER, ["default"])
            assert claim is not None
            claim.writer.append("run_resumed")
            claim.writer.append("run_succeeded", payload="1")
            await claim.writer.release()
            rows = await store.chain_rows("q-1")
            leaves = await store.tree_leaves("q-1")
            assert [(leaf[0], leaf[1]) for leaf in leaves] == [(r[0], r[1]) for r in rows]
            assert len(rows) == 4 and (await store.tree_head()).size == 4

        run(main())

    def test_a_submission_wakes_a_waiting_worker(self, store: Any) -> None:
        async def main() -> None:
            waiting = asyncio.ensure_future(store.wait_for_runs(["default"], 30.0))
            await asyncio.sleep(0.1)
            await store.submit_run(new_run("q-1"), "default")
            # well before its 30 s: PostgreSQL and memory are told, SQLite looks again soon
            await asyncio.wait_for(waiting, 10.0)
            await store.wait_for_runs(["default"], 0.01)  # nothing new: returns after timeout

        run(main())


class MailboxContract:
    """What durable waits need of a store (:class:`erpoz.store.Mailbox`): a waiting run's wake
    time on its row, messages and run events, and waking."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    async def _waiting(self, store: Any, run_id: str, wake_in: float, on: str | None) -> None:
        await store.submit_run(new_run(run_id), "default")
        claim = await store.claim_next(OWNER, ["default"])
        assert claim is not None and claim.info.run_id == run_id
        data = {"step": "s", "steps": ["s"], "wake_at": time.time() + wake_in, "wake_on": on}
        claim.writer.append("run_waiting", data=data)
        await claim.writer.release()

    def test_a_waiting_run_is_claimed_when_due_and_not_before(self, store: Any) -> None:
        async def main() -> None:
            await self._waiting(store, "w-1", 0.3, None)
            info = await store.get_run("w-1")
            assert info is not None and info.status == "waiting" and info.owner is None
            assert info.wake_at is not None and info.wake_at > time.time()
            assert info.to_json()["wake_at"] == info.wake_at
            assert await store.claim_next(OTHER, ["default"]) is None
            await asyncio.sleep(0.35)
            assert await store.claim_next(OTHER, ["other-queue"]) is None
            claim = await store.claim_next(OTHER, ["default"])
            assert claim is not None and claim.info.run_id == "w-1"
            assert claim.info.status == "waiting" and claim.info.claims == 2
            assert await store.claim_next(OWNER, ["default"]) is None  # taken: once
            claim.writer.append("run_resumed")
            await claim.writer.flush()
            info = await store.get_run("w-1")
            assert info is not None and (info.status, info.wake_at, info.wake_on) == (
                "running",
                None,
                None,
            )

        run(main())

    def test_a_message_on_the_awaited_topic_makes_the_run_due(self, store: Any) -> None:
        async def main() -> None:
            await self._waiting(store, "w-2", 60, "msg:reply")
            first = await store.send_message("w-2", "other", '"not this"')
            info = await store.get_run("w-2")
            assert info is not None and info.wake_at is not None and info.wake_at > time.time()
            second = await store.send_message("w-2", "reply", '{"a": 1}')
            assert second > first
            info = await store.get_run("w-2")
            assert info is not None and info.wake_at is not None and info.wake_at <= time.time()
            assert info.wake_on == "msg:reply"
            assert await store.messages("w-2", "reply") == [(second, '{"a": 1}')]
            assert await store.messages("w-2", "nothing") == []
            assert await store.messages("nobody", "reply") == []
            assert (await store.claim_next(OTHER, ["default"])).info.run_id == "w-2"

        run(main())

    def test_run_events_are_published_and_wake_their_waiters(self, store: Any) -> None:
        async def main() -> None:
            await self._waiting(store, "w-3", 60, "event:pub-1:done")
            assert await store.get_run_event("pub-1", "done") is None
            await store.set_run_event("pub-1", "done", "1")
            await store.set_run_event("pub-1", "done", '{"n": 2}')  # the latest value wins
            assert await store.get_run_event("pub-1", "done") == '{"n": 2}'
            info = await store.get_run("w-3")
            assert info is not None and info.wake_at is not None and info.wake_at <= time.time()

        run(main())

    def test_wake_run_and_due_runs(self, store: Any) -> None:
        async def main() -> None:
            await self._waiting(store, "w-4", 60, None)
            w = await store.create_run(new_run("solo"), OWNER)  # of no queue
            w.append("run_waiting", data={"step": "s", "wake_at": time.time() + 60})
            await w.release()
            assert await store.due_runs() == []
            await store.wake_run("solo")
            await store.wake_run("w-4")
            await store.wake_run("nobody")  # nothing to wake: no error
            assert await store.due_runs() == ["solo"]  # a worker wakes runs of queues
            assert (await store.claim_next(OTHER, ["default"])).info.run_id == "w-4"
            assert await store.claim_due(OTHER) is None  # no source to load its flow from
            assert await store.claim_due(OTHER, flow="another_flow") is None
            claim = await store.claim_due(OTHER, flow="contract_flow")
            assert claim is not None and claim.info.run_id == "solo"
            assert claim.info.status == "waiting" and claim.info.claims == 1
            assert await store.claim_due(OWNER, flow="contract_flow") is None  # taken: once

        run(main())


class LedgerContract:
    """Behaviour every store that keeps a budget ledger (:class:`erpoz.store.BudgetLedger`)
    must have: what project and tenant budgets across processes rely on."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a store test class overrides the `store` fixture")

    @staticmethod
    async def reserve(store: Any, amount: float, tenant: str = "-", **kw: Any) -> Any:
        kw.setdefault("project_usd", 1.0)
        kw.setdefault("tenant_usd", None)
        kw.setdefault("ttl_s", 60.0)
        return await store.reserve(amount, tenant=tenant, **kw)

    @staticmethod
    async def scopes(store: Any) -> dict[str, tuple[float, float]]:
        return {
            s.scope: (round(s.spent_usd, 9), round(s.reserved_usd, 9))
            for s in await store.budget_scopes()
        }

    def test_a_hold_counts_until_it_is_settled_to_the_actual_cost(self, store: Any) -> None:
        async def main() -> None:
            hold = await self.reserve(store, 0.4)
            assert hold.refused is None and hold.id and hold.amount_usd == 0.4
            assert await self.scopes(store) == {"project": (0.0, 0.4)}
            await store.settle(hold, 0.25)
            assert await self.scopes(store) == {"project": (0.25, 0.0)}
            await store.settle(hold, 0.25)  # an answer lost, the settle sent again: no-op
            assert await self.scopes(store) == {"project": (0.25, 0.0)}

        run(main())

    def test_a_call_that_would_pass_a_ceiling_is_refused_and_holds_nothing(
        self, store: Any
    ) -> None:
        async def main() -> None:
            first = await self.reserve(store, 0.6)
            second = await self.reserve(store, 0.5)  # 0.6 held + 0.5 > 1.0
            assert second.refused is not None and not second.id
            assert second.refused.scope == "project" and second.refused.tenant is None
            assert second.refused.limit_usd == 1.0
            assert (second.refused.spent_usd, second.refused.reserved_usd) == (0.0, 0.6)
            assert await self.scopes(store) == {"project": (0.0, 0.6)}
            assert (await self.reserve(store, 0.4)).refused is None  # exactly the ceiling fits
            await store.settle(first, 0.1)
            assert (await self.reserve(store, 0.5)).refused is None  # the settle freed 0.5

        run(main())

    def test_tenants_have_their_own_ceilings_inside_the_projects(self, store: Any) -> None:
        async def main() -> None:
            acme = await self.reserve(store, 0.3, "acme", tenant_usd=0.5)
            assert acme.refused is None
            refused = await self.reserve(store, 0.3, "acme", tenant_usd=0.5)
            assert refused.refused is not None and refused.refused.tenant == "acme"
            assert refused.refused.limit_usd == 0.5
            other = await self.reserve(store, 0.3, "beta", tenant_usd=0.5)
            assert other.refused is None  # beta's budget is its own
            # the project's ceiling (1.0) binds both: 0.6 held, 0.5 more would pass it
            over = await self.reserve(store, 0.5, "gamma", tenant_usd=0.5)
            assert over.refused is not None and over.refused.scope == "project"
            await store.settle(acme, 0.3)
            assert await self.scopes(store) == {
                "project": (0.3, 0.3),
                "tenant:acme": (0.3, 0.0),
                "tenant:beta": (0.0, 0.3),
                "tenant:gamma": (0.0, 0.0),
            }
            only_tenant = await self.reserve(store, 0.1, "acme", project_usd=None, tenant_usd=0.5)
            assert only_tenant.refused is None and only_tenant.scopes == ("tenant:acme",)

        run(main())

    def test_a_scope_starts_from_what_the_log_says_was_spent(self, store: Any) -> None:
        async def main() -> None:
            for rid, tenant, costs in (("a", "acme", [0.2, 0.1]), ("b", "beta", [0.3])):
                w = await store.create_run(new_run(rid, tags={"tenant": tenant}), OWNER)
                for cost in costs:
                    w.append("model_called", "s", 1, {"model": "m", "cost_usd": cost})
                w.append("model_called", "s", 1, {"model": "m", "status": "refused"})
                await w.release()
            refused = await self.reserve(store, 0.5, "acme", tenant_usd=0.7)
            assert refused.refused is not None and refused.refused.scope == "project"
            assert round(refused.refused.spent_usd, 9) == 0.6  # every run's model_called
            hold = await self.reserve(store, 0.3, "acme", tenant_usd=0.7)
            assert hold.refused is None
            assert (await self.scopes(store))["tenant:acme"] == (0.3, 0.3)  # acme's runs only

        run(main())

    def test_a_hold_never_settled_expires_charged_at_its_estimate(self, store: Any) -> None:
        async def main() -> None:
            lost = await self.reserve(store, 0.3, ttl_s=0.05)  # its process died mid-call
            await asyncio.sleep(0.1)
            # the next reservation finds it expired: charged at the estimate, no longer held
            assert (await self.reserve(store, 0.7)).refused is None
            assert await self.scopes(store) == {"project": (0.3, 0.7)}
            await store.settle(lost, 0.1)  # it came back after all: corrected to its cost
            assert await self.scopes(store) == {"project": (0.1, 0.7)}

        run(main())

    def test_concurrent_reservations_never_pass_the_ceiling(self, store: Any) -> None:
        async def main() -> None:
            holds = await asyncio.gather(*(self.reserve(store, 0.15) for _ in range(20)))
            granted = [h for h in holds if h.refused is None]
            assert len(granted) == 6  # 6 x 0.15 = 0.9; a seventh would pass 1.0
            await asyncio.gather(*(store.settle(h, 0.15) for h in granted))
            assert await self.scopes(store) == {"project": (0.9, 0.0)}

        run(main())
