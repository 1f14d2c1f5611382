"""The SQLite store: the contract, plus what only a file on disk has to get right."""

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from erpoz import StoreError, open_store
from erpoz.store import SQLiteStore, Store
from store.contract import (
    OWNER,
    LedgerContract,
    MailboxContract,
    QueueContract,
    StoreContract,
    assert_valid_chain,
    new_run,
)
from store.schedule_contract import RateContract, ScheduleContract, SlotContract


class TestSQLite(
    StoreContract,
    QueueContract,
    LedgerContract,
    MailboxContract,
    ScheduleContract,
    RateContract,
    SlotContract,
):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = SQLiteStore(tmp_path / "runs.db")
        yield s
        asyncio.run(s.close())

    @pytest.fixture
    def batching(self, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
        writer = SQLiteStore(tmp_path / "batch.db", durability="batch")
        reader = SQLiteStore(tmp_path / "batch.db")
        yield writer, reader
        asyncio.run(writer.close())
        asyncio.run(reader.close())

    @pytest.fixture
    def holding(self, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
        writer = SQLiteStore(tmp_path / "effects.db", durability="effects")
        reader = SQLiteStore(tmp_path / "effects.db")
        yield writer, reader
        asyncio.run(writer.close())
        asyncio.run(reader.close())


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def latest_migration() -> int:
    folder = resources.files("erpoz.store").joinpath("migrations/sqlite")
    numbers = [
        int(p.name[:4])
        for p in folder.iterdir()
        if p.name.endswith(".sql") and p.name[:4].isdigit()
    ]
    assert numbers, "erpoz ships its SQLite migrations as package data"
    return max(numbers)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None, timeout=0.1)


def this_host_dead_pid() -> int:
    """The pid of a process on this host that has exited."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


# --- schema and migrations ----------------------------------------------------------------------
def test_migrations_bring_a_blank_file_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "erpoz.db"
    store = SQLiteStore(path)
    try:
        assert path.exists()
        assert store.schema_version == latest_migration()
    finally:
        run(store.close())
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_migration()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "events", "blobs", "cache"} <= tables


def test_reopening_a_migrated_file_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def first() -> None:
        store = SQLiteStore(path)
        w = await store.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.release()
        await store.close()

    run(first())
    with raw(path) as db:
        schema_before = db.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()

    async def again() -> None:
        store = SQLiteStore(path)
        assert store.schema_version == latest_migration()
        events = await store.events("run-1")
        assert [e.kind for e in events] == ["run_started", "step_succeeded"]
        await store.close()

    run(again())
    run(again())
    with raw(path) as db:
        assert (
            db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
            == schema_before
        )


def test_a_newer_schema_version_asks_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"
    with raw(path) as db:
        db.execute(f"PRAGMA user_version={latest_migration() + 1}")
    with pytest.raises(StoreError, match="upgrade erpoz") as info:
        SQLiteStore(path)
    assert info.value.path == str(path)
    # The file was left as it was.
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == latest_migration() + 1


def test_a_corrupt_file_is_a_store_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    message = str(info.value)
    assert str(path) in message
    assert "corrupt" in message
    assert info.value.path == str(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_open_store_urls(tmp_path: Path) -> None:
    async def main() -> None:
        a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
        b = open_store(tmp_path / "b.db")
        assert isinstance(a, SQLiteStore)
        assert isinstance(b, SQLiteStore)
        assert a.path == tmp_path / "a.db"
        await a.close()
        await b.close()

    run(main())
    with pytest.raises(StoreError, match="durability"):
        open_store(tmp_path / "c.db", durability="eventually")
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://localhost/x")


def test_a_locked_database_is_a_store_error_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def main() -> None:
        store = SQLiteStore(path)
        w = await store.create_run(new_run("run-1"), OWNER)
        await w.flush()
        w.append("step_succeeded", "a", 1, payload="1")
        other = raw(path)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock (> 5 s)
        try:
            with pytest.raises(StoreError, match="locked") as info:
                await w.flush()
            assert info.value.path == str(path)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Once the lock is gone the pending events are committed, chain intact.
        w.append("run_succeeded", payload="1")
        await w.release()
        events = await store.events("run-1")
        assert [e.kind for e in events] == ["run_started", "step_succeeded", "run_succeeded"]
        assert_valid_chain(events, "run-1")
        await store.close()

    run(main())


# --- integrity ----------------------------------------------------------------------------------
def test_events_are_append_only(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def main() -> None:
        store = SQLiteStore(path)
        w = await store.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.release()
        await store.close()

    run(main())
    with raw(path) as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE events SET payload='2' WHERE run_id='run-1' AND seq=2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM events WHERE run_id='run-1'")
        rows = db.execute("SELECT seq, kind, payload FROM events ORDER BY seq").fetchall()
        assert rows == [(1, "run_started", '{"x": 1}'), (2, "step_succeeded", "1")]


def test_a_second_success_of_a_step_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "erpoz.db")
        w = await store.create_run(new_run("run-1"), OWNER)
        w.append("step_started", "a", 1)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.flush()
        w.append("step_succeeded", "a", 2, payload="2")
        with pytest.raises(StoreError, match="refused"):
            await w.flush()
        events = await store.events("run-1")
        assert [(e.kind, e.payload) for e in events] == [
            ("run_started", '{"x": 1}'),
            ("step_started", None),
            ("step_succeeded", "1"),
        ]
        assert_valid_chain(events, "run-1")
        info = await store.get_run("run-1")
        assert info is not None
        assert info.head_seq == 3
        assert info.head_hash == events[-1].hash
        await store.close()

    run(main())


def test_a_refused_commit_does_not_drop_other_runs_events(tmp_path: Path) -> None:
    """Runs owned by one store share its commit buffer; one run's refused event must not take
    another run's pending events down with it."""

    async def main() -> None:
        store = SQLiteStore(tmp_path / "erpoz.db")
        good = await store.create_run(new_run("good"), OWNER)
        bad = await store.create_run(new_run("bad"), OWNER)
        bad.append("step_succeeded", "a", 1, payload="1")
        await bad.flush()
        good.append("step_started", "a", 1)  # pending, not yet flushed
        bad.append("step_succeeded", "a", 1, payload="1")
        with pytest.raises(StoreError):
            await bad.flush()
        good.append("step_succeeded", "a", 1, payload="1")
        good.append("run_succeeded", payload="1")
        await good.release()
        events = await store.events("good")
        assert [e.kind for e in events] == [
            "run_started",
            "step_started",
            "step_succeeded",
            "run_succeeded",
        ]
        assert_valid_chain(events, "good")
        await store.close()

    run(main())


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"
    store = SQLiteStore(path)
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    run(store.close())


# --- durability ---------------------------------------------------------------------------------
def test_batch_durability_has_every_event_after_release(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def main() -> None:
        store = open_store(path, durability="batch")
        assert isinstance(store, SQLiteStore)
        writers = [await store.create_run(new_run(f"run-{i}"), OWNER) for i in range(3)]
        for n in range(300):
            for w in writers:
                w.append("note", data={"n": n})
                await w.flush()
        for w in writers:
            w.append("run_succeeded", payload="null")
            await w.release()
        # A second connection (another process) sees all of it.
        other = SQLiteStore(path)
        for w in writers:
            events = await other.events(w.run_id)
            assert len(events) == 302
            assert_valid_chain(events, w.run_id)
            info = await other.get_run(w.run_id)
            assert info is not None
            assert info.status == "succeeded"
            assert info.head_seq == 302
        await other.close()
        await store.close()

    run(main())


@pytest.mark.parametrize("durability", ["sync", "effects"])
def test_runs_that_commit_together_share_one_transaction(tmp_path: Path, durability: str) -> None:
    store = SQLiteStore(tmp_path / "erpoz.db", durability=durability)
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    async def one(i: int) -> None:
        w = await store.create_run(new_run(f"run-{i}"), OWNER)
        w.append("tool_intent", "s1", 1, {"n": i})
        await w.commit()
        w.append("run_succeeded", payload="null")
        await w.release()

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(100)))
        await store.close()

    run(main())
    # the runs' starts, their intents and their ends: a transaction each, not one per run
    assert len(commits) == 3
    other = SQLiteStore(tmp_path / "erpoz.db")
    for i in range(100):
        assert [e.kind for e in run(other.events(f"run-{i}"))] == [
            "run_started",
            "tool_intent",
            "run_succeeded",
        ]
    run(other.close())


def test_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"
    big = '"' + "z" * (70 * 1024) + '"'

    async def write() -> tuple[str, int]:
        store = SQLiteStore(path)
        w = await store.create_run(new_run("run-1", source="flow.yaml", tags={"k": "v"}), OWNER)
        w.append("step_succeeded", "a", 1, {"ms": 2.0}, big)
        w.append("run_succeeded", data={"steps": 1}, payload=big)
        await w.release()
        await store.cache_put("key", "mod:step", "123")
        info = await store.get_run("run-1")
        assert info is not None
        await store.close()
        return info.head_hash, info.head_seq

    head_hash, head_seq = run(write())

    async def read() -> None:
        store = SQLiteStore(path)
        info = await store.get_run("run-1")
        assert info is not None
        assert info.status == "succeeded"
        assert info.source == "flow.yaml"
        assert info.output == big
        assert (info.head_hash, info.head_seq) == (head_hash, head_seq)
        assert info.owner is None
        events = await store.events("run-1")
        assert_valid_chain(events, "run-1")
        assert events[1].payload == big
        assert events[-1].hash == head_hash
        assert await store.cache_get("key") == "123"
        await store.close()

    run(read())


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def main() -> None:
        store = SQLiteStore(path, durability="batch")
        w = await store.create_run(new_run("run-1"), OWNER)
        w.append("note")
        await store.close()
        again = SQLiteStore(path)
        assert [e.kind for e in await again.events("run-1")] == ["run_started", "note"]
        await again.close()

    run(main())


# --- ownership across processes -----------------------------------------------------------------
def test_another_store_cannot_claim_a_run_of_a_live_owner(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"
    live = f"{socket.gethostname()}:{os.getpid()}:live"

    async def main() -> None:
        first = SQLiteStore(path)
        w = await first.create_run(new_run("run-1"), live)
        await w.flush()
        second = SQLiteStore(path)
        with pytest.raises(StoreError, match="run-1"):
            await second.claim_run("run-1", f"{socket.gethostname()}:{os.getpid()}:other")
        w.append("run_succeeded", payload="1")
        await w.release()
        info = await second.get_run("run-1")
        assert info is not None
        assert info.status == "succeeded"
        await second.close()
        await first.close()

    run(main())


def test_an_owner_on_another_host_holds_the_run_while_its_lease_lasts(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"

    async def main() -> None:
        first = SQLiteStore(path)
        w = await first.create_run(new_run("run-1"), "some-other-host:1:abc")
        await w.flush()
        second = SQLiteStore(path)
        with pytest.raises(StoreError):
            await second.claim_run("run-1", f"{socket.gethostname()}:{os.getpid()}:me")
        # Its lease runs out (the other host died and stopped heartbeating).
        with raw(path) as db:
            db.execute("UPDATE runs SET lease_until=0 WHERE run_id='run-1'")
        w2 = await second.claim_run("run-1", f"{socket.gethostname()}:{os.getpid()}:me")
        w2.append("run_resumed")
        await w2.release()
        assert_valid_chain(await second.events("run-1"), "run-1")
        await second.close()
        await first.close()

    run(main())


def test_a_run_whose_owner_process_died_can_be_claimed(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.db"
    dead = f"{socket.gethostname()}:{this_host_dead_pid()}:dead"

    async def main() -> None:
        crashed = SQLiteStore(path)
        w = await crashed.create_run(new_run("run-1"), dead)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.flush()  # committed, then the process "dies" without releasing
        info = await crashed.get_run("run-1")
        assert info is not None
        assert info.owner == dead
        await crashed.close()

        survivor = SQLiteStore(path)
        w2 = await survivor.claim_run("run-1", f"{socket.gethostname()}:{os.getpid()}:new")
        w2.append("run_resumed")
        w2.append("step_succeeded", "b", 1, payload="2")
        w2.append("run_succeeded", payload="2")
        await w2.release()
        events = await survivor.events("run-1")
        assert [e.kind for e in events] == [
            "run_started",
            "step_succeeded",
            "run_resumed",
            "step_succeeded",
            "run_succeeded",
        ]
        assert_valid_chain(events, "run-1")
        info = await survivor.get_run("run-1")
        assert info is not None
        assert info.status == "succeeded"
        assert info.owner is None
        await survivor.close()

    run(main())


def undo_waits(db: sqlite3.Connection) -> None:
    """Take migration 8 (durable waits) back out of a file, to make it an older one."""
    for table in ("messages", "run_events"):
        db.execute(f"DROP TABLE {table}")
    for index in ("runs_due", "runs_wake_on"):
        db.execute(f"DROP INDEX {index}")
    db.execute("ALTER TABLE runs DROP COLUMN wake_at")
    db.execute("ALTER TABLE runs DROP COLUMN wake_on")


def test_migration_2_gives_existing_runs_their_tenant_from_their_tags(tmp_path: Path) -> None:
    path = tmp_path / "old.db"

    async def make() -> None:
        store = SQLiteStore(path)
        for run_id, tags in (("a", {"tenant": "acme"}), ("b", {})):
            w = await store.create_run(new_run(run_id, tags=tags), OWNER)
            await w.release()
        await store.close()

    asyncio.run(make())
    with sqlite3.connect(path) as db:  # make it a version-1 file, as 0.1 wrote it
        undo_waits(db)  # migration 8
        for table in ("schedules", "schedule_ticks", "limit_grants", "limit_slots"):  # 9
            db.execute(f"DROP TABLE {table}")
        for table in ("merkle_state", "merkle_leaves", "merkle_nodes"):  # migration 5
            db.execute(f"DROP TABLE {table}")
        db.execute("DROP TABLE budget_holds")  # migration 4
        db.execute("DROP TABLE budget_spent")
        db.execute("DROP INDEX runs_claimable")  # migration 3
        db.execute("ALTER TABLE runs DROP COLUMN queue")
        db.execute("ALTER TABLE runs DROP COLUMN claims")
        db.execute("DROP INDEX runs_by_tenant")  # migration 2
        db.execute("ALTER TABLE runs DROP COLUMN tenant")
        db.execute("PRAGMA user_version=1")

    async def check() -> None:
        store = SQLiteStore(path)
        assert store.schema_version == latest_migration()
        assert [r.run_id for r in await store.list_runs(tenant="acme")] == ["a"]
        b = await store.get_run("b")
        assert b is not None and b.tenant == "-"
        assert (b.queue, b.claims) == (None, 0)  # migration 3: no old run belongs to a queue
        await store.close()

    asyncio.run(check())


def test_a_writer_whose_run_was_taken_over_cannot_write_to_it(tmp_path: Path) -> None:
    """Two processes on one file: the first stalled past its lease, the second took the run
    over; the first one's next commit records nothing of that run (and says so)."""
    path = tmp_path / "runs.db"

    async def main() -> None:
        a, b = SQLiteStore(path), SQLiteStore(path)
        a.lease_s = 0.2
        await b.submit_run(new_run("run-1"), "default")
        claim = await a.claim_next(f"{socket.gethostname()}:{os.getpid()}:a", ["default"])
        assert claim is not None
        stale = claim.writer
        stale.append("run_resumed")
        await stale.flush()
        a._heartbeat.cancel()  # type: ignore[union-attr]  # the process stalls …
        await asyncio.sleep(0.4)
        took = await b.claim_next(f"{socket.gethostname()}:{os.getpid()}:b", ["default"])
        assert took is not None and took.previous_owner is not None
        took.writer.append("step_succeeded", "s1", 1, payload='"b"')
        await took.writer.flush()
        stale.append("step_succeeded", "s1", 1, payload='"a"')  # … and comes back
        with pytest.raises(StoreError, match="taken over"):
            await stale.flush()
        assert stale.lost
        events = await b.events("run-1")
        assert [e.payload for e in events if e.kind == "step_succeeded"] == ['"b"']
        assert_valid_chain(events, "run-1")
        await a.close()
        await b.close()

    asyncio.run(main())


# --- the Merkle tree ------------------------------------------------------------------------------
def test_events_recorded_before_the_tree_existed_enter_it_run_by_run(tmp_path: Path) -> None:
    from erpoz.audit import verify

    path = tmp_path / "old.db"

    async def make() -> None:
        store = SQLiteStore(path)
        for run_id in ("b-second", "a-first"):
            w = await store.create_run(new_run(run_id), OWNER)
            w.append("note", data={"run": run_id})
            await w.release()
        await store.close()

    asyncio.run(make())
    with sqlite3.connect(path) as db:  # as erpoz 0.1 left it: no tree
        for table in ("merkle_state", "merkle_leaves", "merkle_nodes"):
            db.execute(f"DROP TABLE {table}")
        undo_waits(db)
        for table in ("schedules", "schedule_ticks", "limit_grants", "limit_slots"):
            db.execute(f"DROP TABLE {table}")  # migration 9, after the tree's
        db.execute("PRAGMA user_version=4")  # the migration before the tree's

    async def check() -> None:
        store = SQLiteStore(path)
        leaves = sorted(await store.tree_leaves(), key=lambda leaf: leaf[2])
        assert [(leaf[0], leaf[1]) for leaf in leaves] == [
            ("b-second", 1),  # created first
            ("b-second", 2),
            ("a-first", 1),
            ("a-first", 2),
        ]
        assert (await verify(store)).ok
        w = await store.claim_run("a-first", OWNER)
        w.append("note")
        await w.release()
        assert (await store.tree_head()).size == 5
        assert (await verify(store)).ok
        await store.close()

    asyncio.run(check())


def test_two_stores_on_one_file_share_one_tree(tmp_path: Path) -> None:
    """Two processes' stores on one file (here two connections): their commits enter the tree
    one after another, each taking the tree as the other left it."""
    from erpoz.audit import verify

    path = tmp_path / "shared.db"

    async def main() -> None:
        a, b = SQLiteStore(path), SQLiteStore(path)
        wa = await a.create_run(new_run("run-a"), OWNER)
        wb = await b.create_run(new_run("run-b"), OWNER)
        for i in range(40):
            (wa if i % 3 else wb).append("note", data={"i": i})
            await (wa if i % 2 else wb).flush()
        await wa.release()
        await wb.release()
        head = await a.tree_head()
        assert head.size == len(await b.chain_rows()) == 42
        assert sorted(leaf[2] for leaf in await b.tree_leaves()) == list(range(42))
        assert (await verify(b)).ok
        await a.close()
        await b.close()

    asyncio.run(main())


def test_the_tree_refuses_to_shrink_or_change_its_past(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "runs.db")

    async def write() -> None:
        w = await s.create_run(new_run("run-1"), OWNER)
        await w.release()

    asyncio.run(write())
    db = raw(tmp_path / "runs.db")
    for statement in (
        "DELETE FROM merkle_leaves",
        "UPDATE merkle_leaves SET leaf = x'00'",
        "UPDATE merkle_state SET size = 0",
        "UPDATE merkle_state SET origin = 'another'",
        "DELETE FROM merkle_state",
    ):
        with pytest.raises(sqlite3.IntegrityError, match=r"append-only|only grows"):
            db.execute(statement)
    db.close()
    asyncio.run(s.close())
