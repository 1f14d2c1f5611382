"""Structural sharing of stored values: a large JSON payload is stored as content-addressed
pieces, an unchanged part once; reads, the hash chain, verify and ``erpoz migrate`` see the
whole value, and a changed piece is caught by ``verify``."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import erpoz
from erpoz import Flow, StoreError, step
from erpoz.audit import verify
from erpoz.store import Store, open_store
from erpoz.store._pieces import SEP, expand_rows, split_payload
from pgtest import Schema, need_postgres, throwaway_schema
from store.contract import OWNER, assert_valid_chain, new_run

NOTE = 1000
"""Characters each iteration adds to the state."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _round_trip(text: str) -> tuple[str, dict[str, str]]:
    pieces: dict[str, str] = {}
    stored = split_payload(text, pieces)
    row = ("r", 1, 0.0, "k", None, 0, "{}", stored, "p", "h")
    (back,) = expand_rows([row], lambda keys: {k: pieces[k] for k in keys}, "test")
    assert back[7] == text
    return stored, pieces


@pytest.mark.parametrize(
    "value",
    [
        {"n": 3, "notes": ["x" * 1000] * 50, "done": False},
        [{"a": i, "b": "é" * i, "c": [i, None, True, 1.5]} for i in range(200)],
        {"doc": "y" * 100_000, "nested": {"l": list(range(3000)), "m": {"q": ["z" * 5000]}}},
        {"ctl\u001f": 'a\u001fb\n\t"\\' * 1000, "emoji": "🙂" * 2000},
        [[[["deep"] * 300] * 3] * 3],
    ],
)
def test_split_values_come_back_exactly(value: Any) -> None:
    stored, pieces = _round_trip(_dumps(value))
    assert pieces and SEP in stored


@pytest.mark.parametrize(
    "text",
    [
        '"' + "s" * 10_000 + '"',  # a string: nothing to share
        "[" + ",".join(["1e20"] * 1000) + "]",  # pydantic's float format, not json.dumps'
        '{"a": ' + "[1, 2]" * 0 + '"' + "s" * 5000 + '"}',  # spaces after separators
        "[" + "1," * 2000,  # not JSON
        "short",
    ],
)
def test_other_payloads_are_stored_as_they_are(text: str) -> None:
    stored, pieces = _round_trip(text)
    assert stored == text and not pieces


def test_a_grown_value_shares_what_it_had() -> None:
    state: dict[str, Any] = {"n": 0, "notes": []}
    rng = random.Random(7)
    pieces: dict[str, str] = {}
    written = 0
    for i in range(100):
        note = "".join(rng.choices("abcdefghij klmnop", k=NOTE))
        state = {"n": i, "notes": [*state["notes"], note]}
        written += len(note)
        split_payload(_dumps(state), pieces)
    stored = sum(len(k) + len(t) for k, t in pieces.items())
    assert stored <= 1.3 * written  # every note once, plus its key and link


# --- through the engine, in the stores --------------------------------------------------------
@dataclass
class State:
    n: int = 0
    notes: list[str] = field(default_factory=list)
    done: bool = False


@step
def grow(state: State, limit: int) -> State:
    note = "".join(random.Random(state.n).choices("abcdefghij klmnop", k=NOTE))
    return State(state.n + 1, [*state.notes, note], state.n + 1 >= limit)


def _loop() -> Flow:
    flow = Flow("grow", inputs={"limit": int})
    flow.loop(
        grow,
        state="state",
        init=State(),
        until="done",
        max_iterations=500,
        limit=flow.input("limit"),
    )
    return flow


def _run_loop(store: Store, n: int) -> str:
    async def main() -> str:
        result = await erpoz.Engine(store).run(_loop(), {"limit": n})
        assert result.status == "succeeded"
        assert len(result.output.notes) == n
        return result.run_id

    return asyncio.run(main())


def _sqlite_bytes(path: Path) -> int:
    """What the stored values take: blobs (pieces) and the payload column."""
    with sqlite3.connect(path) as db:
        (blobs,) = db.execute(
            "SELECT coalesce(sum(length(sha256) + length(data)), 0) FROM blobs"
        ).fetchone()
        (events,) = db.execute("SELECT coalesce(sum(length(payload)), 0) FROM events").fetchone()
        (runs,) = db.execute("SELECT coalesce(sum(length(output)), 0) FROM runs").fetchone()
    return int(blobs) + int(events) + int(runs)


def test_a_growing_loop_state_is_stored_in_linear_space(tmp_path: Path) -> None:
    sizes = []
    for n in (20, 40, 80):
        path = tmp_path / f"loop{n}.db"
        store = open_store(path)
        _run_loop(store, n)
        asyncio.run(store.close())
        sizes.append(_sqlite_bytes(path))
    # each iteration stores its note once, plus keys and links (every state whole: ~n/2 notes)
    assert sizes[2] - sizes[1] <= 1.3 * 40 * NOTE
    assert sizes[1] - sizes[0] <= 1.3 * 20 * NOTE
    assert sizes[2] <= 1.3 * 80 * NOTE


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "s.db")
        return
    need_postgres()
    with throwaway_schema() as schema:
        yield schema.url


def _tamper(url: str) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    def sql(query: str, args: tuple[Any, ...] = ()) -> list[Any]:
        if not url.startswith("postgresql"):
            with sqlite3.connect(url) as db:
                return db.execute(query, args).fetchall()
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            cur = db.execute(query.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []

    return sql


def test_reads_resume_and_verify_see_whole_values_and_catch_a_changed_piece(
    store_url: str,
) -> None:
    store = open_store(store_url)
    run_id = _run_loop(store, 12)

    async def check() -> None:
        info, events = await store.run_with_events(run_id)
        assert info is not None and info.output is not None
        assert SEP not in info.output and len(json.loads(info.output)["notes"]) == 12
        assert_valid_chain(events, run_id)
        assert [e.payload for e in events] == [e.payload for e in await store.events(run_id)]
        last = [e for e in events if e.kind == "step_succeeded"][-1]
        assert json.loads(last.payload or "")["n"] == 12
        assert (await verify(store)).ok
        assert (await verify(store, run_id)).ok
        assert (await store.list_runs())[0].output == info.output

    asyncio.run(check())
    asyncio.run(store.close())

    sql = _tamper(store_url)
    stored = [r[0] for r in sql("SELECT payload FROM events WHERE payload IS NOT NULL", ())]
    assert any(SEP in p for p in stored), "the large states were split"
    pieces = sql("SELECT sha256, data FROM blobs ORDER BY sha256", ())
    key, text = pieces[0]
    at = text.rindex(SEP) + 3 if SEP in text else 1  # inside a note (after `,"`), not a key
    changed = text[:at] + ("b" if text[at] != "b" else "c") + text[at + 1 :]
    sql("UPDATE blobs SET data = ? WHERE sha256 = ?", (changed, key))
    _caught(store_url, run_id)

    key, text = pieces[1]  # a reference to a piece that is not there
    sql("UPDATE blobs SET data = ? WHERE sha256 = ?", (SEP + "f" * 32 + SEP + text, key))
    _caught(store_url, run_id)

    sql("DELETE FROM blobs WHERE sha256 = ?", (key,))

    async def missing() -> None:
        again = open_store(store_url)
        with pytest.raises(StoreError, match="missing"):
            await again.events(run_id)
        await again.close()

    asyncio.run(missing())
    _caught(store_url, run_id)


def _caught(url: str, run_id: str) -> None:
    async def main() -> None:
        store = open_store(url)
        for report in (await verify(store, run_id), await verify(store)):
            assert not report.ok
            assert any(p.run_id == run_id for p in report.problems)
        await store.close()

    asyncio.run(main())


GROWN: list[int] = []


@step
def counted_grow(state: State, limit: int) -> State:
    GROWN.append(state.n)
    return grow(state, limit)


@step(review=True)
def count_notes(state: State) -> int:
    return len(state.notes)


def _reviewed_loop() -> Flow:
    flow = Flow("grow-then-review", inputs={"limit": int})
    last = flow.loop(
        counted_grow,
        id="grow",
        state="state",
        init=State(),
        until="done",
        max_iterations=500,
        limit=flow.input("limit"),
    )
    flow.add(count_notes, state=last)
    return flow


def test_resume_and_replay_use_the_recorded_split_values(store_url: str) -> None:
    from erpoz import Decision

    GROWN.clear()
    flow = _reviewed_loop()

    async def main() -> None:
        store = open_store(store_url)
        engine = erpoz.Engine(store)
        paused = await engine.run(flow, {"limit": 15})
        assert paused.status == "waiting" and len(GROWN) == 15
        done = await engine.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.status == "succeeded" and done.output == 15
        assert len(GROWN) == 15  # the loop's iterations were not run again
        again = await engine.replay(paused.run_id, "count_notes", flow)
        assert again.status in ("waiting", "succeeded") and len(GROWN) == 15
        assert (await verify(store)).ok
        await store.close()

    asyncio.run(main())


def test_migrate_carries_split_values_between_stores(tmp_path: Path) -> None:
    from erpoz.store._copy import migrate

    src = tmp_path / "src.db"
    store = open_store(src)
    run_id = _run_loop(store, 10)
    asyncio.run(store.close())
    need_postgres()
    with throwaway_schema() as schema:
        asyncio.run(_migrate_and_compare(migrate, str(src), schema, run_id))


async def _migrate_and_compare(migrate: Any, src: str, schema: Schema, run_id: str) -> None:
    report = await migrate(src, schema.url, verify=verify)
    assert report.copied == 1 and report.blobs > 0
    a, b = open_store(src), open_store(schema.url)
    try:
        assert [e.payload for e in await a.events(run_id)] == [
            e.payload for e in await b.events(run_id)
        ]
        assert (await verify(b)).ok
    finally:
        await a.close()
        await b.close()


def test_old_blobs_are_carried_into_the_new_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    big = json.dumps("z" * 70_000)  # a JSON string: stored whole, as a blob

    async def make() -> str:
        store = open_store(path)
        w = await store.create_run(new_run("old-run"), OWNER)
        w.append("note", payload=big)
        await w.release()
        await store.close()
        return "old-run"

    run_id = asyncio.run(make())
    with sqlite3.connect(path) as db:  # the blobs table as schema 6 had it
        for table in ("schedules", "schedule_ticks", "limit_grants", "limit_slots"):  # 9
            db.execute(f"DROP TABLE {table}")
        for table in ("messages", "run_events"):  # 8
            db.execute(f"DROP TABLE {table}")
        for index in ("runs_due", "runs_wake_on"):
            db.execute(f"DROP INDEX {index}")
        db.execute("ALTER TABLE runs DROP COLUMN wake_at")
        db.execute("ALTER TABLE runs DROP COLUMN wake_on")
        db.executescript(
            "CREATE TABLE old_blobs (sha256 TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;"
            "INSERT INTO old_blobs SELECT * FROM blobs; DROP TABLE blobs;"
            "ALTER TABLE old_blobs RENAME TO blobs; PRAGMA user_version=6;"
        )

    async def check() -> None:
        store = open_store(path)
        events = await store.events(run_id)
        assert events[-1].payload == big
        assert (await verify(store)).ok
        await store.close()

    asyncio.run(check())
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'blobs'").fetchone()
        assert "WITHOUT ROWID" not in sql
