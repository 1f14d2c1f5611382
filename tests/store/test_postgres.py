"""The PostgreSQL store: the contract, plus what only a shared database has to get right.

Runs against ``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
each test in a throw-away schema. When the server cannot be reached the tests skip, naming the
URL — or fail, when ``ERPOZ_TEST_POSTGRES=required`` (what a CI run that wants PostgreSQL sets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from erpoz import StoreError, open_store
from erpoz.store import Store
from pgtest import REQUIRED, URL, Schema, need_postgres, throwaway_schema
from store.contract import (
    OTHER,
    OWNER,
    LedgerContract,
    MailboxContract,
    QueueContract,
    StoreContract,
    assert_valid_chain,
    new_run,
)
from store.schedule_contract import RateContract, ScheduleContract, SlotContract

if REQUIRED:
    import psycopg  # without it, a run that requires PostgreSQL fails here
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")

from erpoz.store._postgres import PostgresStore, migrations


@pytest.fixture(autouse=True)
def _need_postgres() -> None:
    need_postgres()


@pytest.fixture
def schema() -> Iterator[Schema]:
    with throwaway_schema() as s:
        yield s


class TestPostgres(
    StoreContract,
    QueueContract,
    LedgerContract,
    MailboxContract,
    ScheduleContract,
    RateContract,
    SlotContract,
):
    @pytest.fixture
    def store(self, schema: Schema) -> Iterator[Store]:
        s = open_store(schema.url)
        assert isinstance(s, PostgresStore)
        yield s
        asyncio.run(s.close())

    @pytest.fixture
    def batching(self, schema: Schema) -> Iterator[tuple[Store, Store]]:
        writer, reader = open_store(schema.url, durability="batch"), open_store(schema.url)
        yield writer, reader
        asyncio.run(writer.close())
        asyncio.run(reader.close())

    @pytest.fixture
    def holding(self, schema: Schema) -> Iterator[tuple[Store, Store]]:
        writer, reader = open_store(schema.url, durability="effects"), open_store(schema.url)
        yield writer, reader
        asyncio.run(writer.close())
        asyncio.run(reader.close())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def latest_migration() -> int:
    return migrations()[-1][0]


# --- opening, URLs, migrations ------------------------------------------------------------------
def test_open_store_selects_postgres_from_the_url_and_env(
    schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in (schema.url, schema.url.replace("postgresql://", "postgres://", 1)):
        s = open_store(url)
        assert isinstance(s, PostgresStore)
        run(s.close())
    monkeypatch.setenv("ERPOZ_STORE", schema.url)
    s = open_store()
    assert isinstance(s, PostgresStore)
    run(s.close())
    with pytest.raises(StoreError, match="durability"):
        open_store(schema.url, durability="fast")


def test_the_url_shown_hides_the_password(schema: Schema) -> None:
    s = PostgresStore(schema.url.replace("postgres@", "postgres:s3cret@", 1))
    try:
        assert "s3cret" not in s.url and ":***@" in s.url
    finally:
        run(s.close())


def test_an_unreachable_server_is_a_clear_store_error() -> None:
    with pytest.raises(StoreError, match=r"cannot reach PostgreSQL at postgresql://.*:1/"):
        PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test")
    try:
        PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test")
    except StoreError as exc:
        assert "secret" not in str(exc)


def test_missing_psycopg_is_a_clear_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "erpoz.store._postgres", None)
    with pytest.raises(StoreError, match=r"pip install 'erpoz\[postgres\]'"):
        open_store("postgresql://postgres@127.0.0.1/test")


def test_migrations_bring_a_blank_schema_to_the_latest_version(schema: Schema) -> None:
    s = PostgresStore(schema.url)
    try:
        assert s.schema_version == latest_migration()
    finally:
        run(s.close())
    tables = {
        r[0]
        for r in schema.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema.name,),
        )
    }
    assert {"runs", "events", "blobs", "cache", "erpoz_schema_version"} <= tables


def test_migrations_are_idempotent_and_keep_the_data(schema: Schema) -> None:
    async def write() -> None:
        s = PostgresStore(schema.url)
        w = await s.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.release()
        await s.close()

    run(write())
    for _ in range(2):
        s = PostgresStore(schema.url)
        assert s.schema_version == latest_migration()
        assert_valid_chain(run(s.events("run-1")), "run-1")
        run(s.close())
    assert schema.sql("SELECT version FROM erpoz_schema_version ORDER BY version") == [
        (n,) for n, _ in migrations()
    ]


def test_concurrent_openers_of_a_blank_schema_migrate_once(schema: Schema) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: PostgresStore(schema.url), range(6)))
    for s in stores:
        run(s.close())
    assert schema.sql("SELECT count(*) FROM erpoz_schema_version") == [(len(migrations()),)]


def test_the_schema_option_creates_and_uses_its_schema(schema: Schema) -> None:
    inner = f"{schema.name}_opt"
    try:
        s = PostgresStore(URL, schema=inner)

        async def main() -> None:
            w = await s.create_run(new_run("run-1"), OWNER)
            await w.release()
            await s.close()

        run(main())
        assert schema.sql(f'SELECT run_id FROM "{inner}".runs') == [("run-1",)]
    finally:
        schema.sql(f'DROP SCHEMA IF EXISTS "{inner}" CASCADE')


def test_a_newer_schema_version_asks_to_upgrade(schema: Schema) -> None:
    run(PostgresStore(schema.url).close())
    schema.sql("INSERT INTO erpoz_schema_version VALUES (999, 0)")
    with pytest.raises(StoreError, match="upgrade erpoz"):
        PostgresStore(schema.url)


# --- what the database itself refuses -----------------------------------------------------------
def _one_run(schema: Schema) -> None:
    async def main() -> None:
        s = PostgresStore(schema.url)
        w = await s.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.release()
        await s.close()

    run(main())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'forged' WHERE run_id = 'run-1'",
        "DELETE FROM events WHERE run_id = 'run-1'",
        "TRUNCATE events",
    ],
    ids=["update", "delete", "truncate"],
)
def test_events_are_append_only_in_the_database(schema: Schema, statement: str) -> None:
    _one_run(schema)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        schema.sql(statement)
    assert schema.sql("SELECT count(*) FROM events WHERE kind <> 'forged'") == [(2,)]


def test_a_second_success_of_a_step_is_refused_by_the_unique_index(schema: Schema) -> None:
    _one_run(schema)
    with pytest.raises(psycopg.errors.UniqueViolation, match="events_one_success"):
        schema.sql(
            "INSERT INTO events (run_id, seq, ts, kind, step, attempt, data, prev_hash, hash) "
            "VALUES ('run-1', 99, 0, 'step_succeeded', 'a', 2, '{}', 'x', 'y')"
        )


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced", "constraint-only"])
def test_two_writers_recording_the_same_step_one_is_refused_others_kept(
    schema: Schema, fenced: bool
) -> None:
    """Two stores (two 'processes') both think they own run-1 and race to record step a.

    The database accepts exactly one success; the loser's store raises, and the events of
    another run committed in the same transaction as the refused ones are kept. With fencing
    (what the stores do) the stale owner is the loser; without it (``fenced=False`` takes
    the fences away) the unique constraint alone still lets only one success in."""

    async def main() -> None:
        a, b = PostgresStore(schema.url), PostgresStore(schema.url)
        wa = await a.create_run(new_run("run-1"), OWNER)
        await wa.flush()
        # b takes the run over as if a's lease had lapsed (a does not know)
        schema.sql("UPDATE runs SET lease_until = 0, owner = 'elsewhere:1:x' WHERE run_id='run-1'")
        wb = await b.claim_run("run-1", OTHER)
        other = await b.create_run(new_run("run-2"), OTHER)  # b's other run, same buffer
        if not fenced:
            a._fence.clear()
            b._fence.clear()
        wa.append("step_started", "a", 1)
        wa.append("step_succeeded", "a", 1, payload='"from a"')
        wb.append("step_started", "a", 1)
        wb.append("step_succeeded", "a", 1, payload='"from b"')
        other.append("step_succeeded", "x", 1, payload='"kept"')
        results = await asyncio.gather(wa.flush(), wb.flush(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], StoreError)
        if fenced:
            assert isinstance(results[0], StoreError) and "taken over" in str(results[0])
        else:
            assert "refused" in str(errors[0])
        await other.flush()
        events = await a.events("run-1")
        assert [e.kind for e in events].count("step_succeeded") == 1
        assert_valid_chain(events, "run-1")
        kept = await b.events("run-2")
        assert [e.payload for e in kept][-1] == '"kept"'
        assert_valid_chain(kept, "run-2")
        for s in (a, b):
            s._pending.clear()  # what the loser still holds can never be written
            await s.close()

    run(main())


def test_claim_uses_the_lease_of_the_runs_row(schema: Schema) -> None:
    async def main() -> None:
        a, b = PostgresStore(schema.url), PostgresStore(schema.url)
        w = await a.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        await w.flush()
        with pytest.raises(StoreError, match="being run by"):
            await b.claim_run("run-1", OTHER)
        schema.sql("UPDATE runs SET lease_until = 0 WHERE run_id = 'run-1'")  # lease lapsed
        w2 = await b.claim_run("run-1", OTHER)
        w2.append("run_resumed")
        await w2.release()
        info = await b.get_run("run-1")
        assert info is not None and info.owner is None and info.head_seq == 3
        assert_valid_chain(await b.events("run-1"), "run-1")
        await a.close()
        await b.close()

    run(main())


def test_concurrent_claims_of_one_run_give_it_to_one_owner(schema: Schema) -> None:
    _one_run(schema)

    async def main() -> None:
        stores = [PostgresStore(schema.url) for _ in range(4)]
        results = await asyncio.gather(
            *(s.claim_run("run-1", f"elsewhere:{i}:claimer") for i, s in enumerate(stores)),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1, results
        for s in stores:
            s._owned.clear()
            await s.close()

    run(main())


# --- many writers ---------------------------------------------------------------------------------
def test_eight_concurrent_writers_on_eight_runs_keep_every_chain(schema: Schema) -> None:
    from erpoz.audit import verify

    steps = 40

    async def writer(i: int) -> None:
        s = PostgresStore(schema.url, durability="batch" if i % 2 else "sync")
        w = await s.create_run(new_run(f"run-{i}"), f"elsewhere:{i}:writer")
        for k in range(steps):
            w.append("step_started", f"s{k}", 1)
            w.append("step_succeeded", f"s{k}", 1, {"ms": 0.1}, f'"{i}-{k}"')
            await w.flush()
            await asyncio.sleep(0)
        w.append("run_succeeded", payload='"ok"')
        await w.release()
        await s.close()

    async def main() -> None:
        await asyncio.gather(*(writer(i) for i in range(8)))
        s = PostgresStore(schema.url)
        report = await verify(s)
        assert report.ok, report.problems
        assert (report.runs, report.events) == (8, 8 * (2 * steps + 2))
        for i in range(8):
            assert_valid_chain(await s.events(f"run-{i}"), f"run-{i}")
        await s.close()

    run(main())


def test_writers_in_separate_threads_share_one_database(schema: Schema) -> None:
    """Each thread is its own event loop and store, like separate worker processes."""
    from concurrent.futures import ThreadPoolExecutor

    from erpoz.audit import verify

    def work(i: int) -> None:
        async def main() -> None:
            s = PostgresStore(schema.url)
            for r in range(3):
                w = await s.create_run(new_run(f"t{i}-r{r}"), f"elsewhere:{i}:t")
                for k in range(10):
                    w.append("step_succeeded", f"s{k}", 1, payload=str(k))
                    await w.flush()
                w.append("run_succeeded", payload='"ok"')
                await w.release()
            await s.close()

        asyncio.run(main())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    s = PostgresStore(schema.url)
    report = run(verify(s))
    assert report.ok, report.problems
    assert report.runs == 24
    run(s.close())


def test_batch_durability_has_every_event_after_release(schema: Schema) -> None:
    async def main() -> None:
        s = PostgresStore(schema.url, durability="batch")
        w = await s.create_run(new_run("run-1"), OWNER)
        for k in range(700):  # more than one batch
            w.append("note", data={"k": k})
            await w.flush()
        await w.release()
        assert len(await s.events("run-1")) == 701
        await s.close()

    run(main())


def test_close_commits_what_is_pending(schema: Schema) -> None:
    async def main() -> None:
        s = PostgresStore(schema.url, durability="batch")
        w = await s.create_run(new_run("run-1"), OWNER)
        w.append("note", data={"k": 1})
        await s.close()
        s2 = PostgresStore(schema.url)
        assert [e.kind for e in await s2.events("run-1")] == ["run_started", "note"]
        await s2.close()

    run(main())


def test_a_store_survives_a_new_event_loop_per_call(schema: Schema) -> None:
    s = PostgresStore(schema.url)
    w = run(s.create_run(new_run("run-1"), OWNER))
    w.append("step_succeeded", "a", 1, payload="1")
    run(w.flush())
    assert len(run(s.events("run-1"))) == 2
    run(s.close())


def test_a_dropped_connection_is_reopened(schema: Schema) -> None:
    async def main() -> None:
        s = PostgresStore(schema.url)
        w = await s.create_run(new_run("run-1"), OWNER)
        await w.flush()
        for conn in (s._write, s._read):
            if conn is not None:
                schema.sql("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        w.append("step_succeeded", "a", 1, payload="1")
        await w.flush()  # the broken connection is replaced and the commit goes through
        assert [e.kind for e in await s.events("run-1")] == ["run_started", "step_succeeded"]
        await s.close()

    run(main())


def test_a_server_that_stays_away_is_an_error_and_loses_nothing(schema: Schema) -> None:
    async def main() -> None:
        s = PostgresStore(schema.url)
        s.reconnect_s = 0.3
        w = await s.create_run(new_run("run-1"), OWNER)
        await w.flush()
        w.append("step_succeeded", "a", 1, payload="1")
        s._conninfo = "postgresql://postgres@127.0.0.1:1/nothing"  # the server is gone
        if s._write is not None:
            schema.sql("SELECT pg_terminate_backend(%s)", (s._write.info.backend_pid,))
        with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
            await w.flush()  # it gave up after reconnect_s; the events stay in the buffer
        s._conninfo = schema.url  # back
        await w.flush()
        assert [e.kind for e in await s.events("run-1")] == ["run_started", "step_succeeded"]
        await s.close()

    run(main())


def test_a_commit_whose_answer_was_lost_is_not_written_twice(schema: Schema) -> None:
    """When the connection breaks during a commit, the commit may or may not have gone
    through; the retry asks the table and writes only what is not there."""
    from erpoz.store._postgres import _not_yet_recorded

    async def main() -> None:
        s = PostgresStore(schema.url)
        w = await s.create_run(new_run("run-1"), OWNER)
        w.append("step_succeeded", "a", 1, payload="1")
        rows = list(s._pending)
        await w.flush()  # recorded; suppose the client never heard so
        w.append("step_succeeded", "b", 1, payload="2")
        later = list(s._pending)
        conn = await s._writer_conn()
        assert await _not_yet_recorded(conn, rows + later) == later
        forged = [(*rows[0][:10], "0" * 64)]  # same place, other content: not "already there"
        assert await _not_yet_recorded(conn, forged) == forged
        await w.flush()
        assert_valid_chain(await s.events("run-1"), "run-1")
        await s.close()

    run(main())


# --- a real flow, end to end ---------------------------------------------------------------------
def test_a_flow_runs_end_to_end_on_postgres(schema: Schema) -> None:
    import erpoz
    from erpoz import Engine, RetryPolicy
    from erpoz.audit import verify

    calls = {"flaky": 0}

    @erpoz.step
    def double(x: int) -> int:
        return x * 2

    @erpoz.step(retry=RetryPolicy(attempts=2, backoff=0))
    def flaky(n: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("once")
        return n + 1

    flow = erpoz.Flow("pg_e2e", inputs={"x": int})
    flow.output(flow.add(flaky, n=flow.add(double, x=flow.input("x"))))

    async def main() -> None:
        s = open_store(schema.url)
        engine = Engine(s)
        results = await asyncio.gather(*(engine.run(flow, {"x": i}) for i in range(5)))
        assert [r.output for r in results] == [i * 2 + 1 for i in range(5)]
        for r in results:
            info = await s.get_run(r.run_id)
            assert info is not None and info.status == "succeeded" and info.owner is None
            kinds = [e.kind for e in await s.events(r.run_id)]
            assert kinds.count("step_succeeded") == 2 and kinds[-1] == "run_succeeded"
        report = await verify(s)
        assert report.ok, report.problems
        assert report.runs == 5
        await s.close()

    run(main())


# --- the Merkle tree ------------------------------------------------------------------------------
def test_events_recorded_before_the_tree_existed_enter_it_run_by_run(schema: Schema) -> None:
    from erpoz.audit import verify

    async def make() -> None:
        store = PostgresStore(schema.url)
        for run_id in ("b-second", "a-first"):
            w = await store.create_run(new_run(run_id), OWNER)
            w.append("note", data={"run": run_id})
            await w.release()
        await store.close()

    run(make())
    number = next(n for n, text in migrations() if "merkle_state" in text)
    for statement in (  # as an erpoz without the tree left it
        "DROP TABLE merkle_state, merkle_leaves, merkle_nodes",
        "DROP FUNCTION erpoz_merkle_append, erpoz_merkle_append_only, erpoz_merkle_grows",
        "DROP TABLE messages, run_events",  # migration 7 (durable waits), applied again
        "ALTER TABLE runs DROP COLUMN wake_at, DROP COLUMN wake_on",
        "DROP TABLE schedules, schedule_ticks, limit_grants, limit_slots",  # a later migration
        f"DELETE FROM erpoz_schema_version WHERE version >= {number}",
    ):
        schema.sql(statement)

    async def check() -> None:
        store = PostgresStore(schema.url)
        leaves = sorted(await store.tree_leaves(), key=lambda leaf: leaf[2])
        assert [(leaf[0], leaf[1]) for leaf in leaves] == [
            ("b-second", 1),  # created first
            ("b-second", 2),
            ("a-first", 1),
            ("a-first", 2),
        ]
        assert (await verify(store)).ok, "the leaves SQL computes are the ones erpoz computes"
        await store.close()

    run(check())


def test_concurrent_writers_enter_the_tree_one_commit_at_a_time(schema: Schema) -> None:
    """Four stores (four sets of connections, as four workers) committing at once: every event
    gets one position, the positions are 0…n-1, and the tree verifies."""
    from erpoz.audit import verify

    async def main() -> None:
        stores = [PostgresStore(schema.url) for _ in range(4)]

        async def work(i: int, s: PostgresStore) -> None:
            for r in range(3):
                w = await s.create_run(new_run(f"run-{i}-{r}"), f"{OWNER}-{i}")
                for k in range(12):
                    w.append("note", data={"k": k})
                    if k % 3 == 0:
                        await w.flush()
                w.append("run_succeeded", payload="1")
                await w.release()

        await asyncio.gather(*(work(i, s) for i, s in enumerate(stores)))
        rows = await stores[0].chain_rows()
        leaves = await stores[1].tree_leaves()
        assert len(rows) == 4 * 3 * 14
        assert sorted(leaf[2] for leaf in leaves) == list(range(len(rows)))
        report = await verify(stores[2])
        assert report.ok, report.problems
        assert report.tree_size == len(rows)
        for s in stores:
            await s.close()

    run(main())


def test_the_tree_refuses_to_shrink_or_change_its_past(schema: Schema) -> None:
    async def write() -> None:
        s = PostgresStore(schema.url)
        w = await s.create_run(new_run("run-1"), OWNER)
        await w.release()
        await s.close()

    run(write())
    for statement in (
        "DELETE FROM merkle_leaves",
        "UPDATE merkle_leaves SET leaf = '\\x00'",
        "TRUNCATE merkle_nodes",
        "UPDATE merkle_state SET size = 0",
        "UPDATE merkle_state SET origin = 'another'",
        "DELETE FROM merkle_state",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match=r"append-only|only grows"):
            schema.sql(statement)


_VERIFY_IN_PARTS = """
import asyncio, json, sys
from erpoz.audit import _shards, verify
from erpoz.store import open_store

assert _shards.workers_for(3, 0) == 3, "this process must be able to fork"


async def main():
    store = open_store(sys.argv[1])
    try:
        one = await verify(store, workers=1)
        three = await verify(store, workers=3)
    finally:
        await store.close()
    print(json.dumps([one.to_json(), three.to_json()]))


asyncio.run(main())
"""


def test_verify_in_forked_parts_on_postgres_finds_what_one_process_finds(schema: Schema) -> None:
    """A large store is checked in ranges of runs, all but the first by forked children (each
    with connections of its own), then the tree over all their leaves: on PostgreSQL too, the
    same report as one process, clean and after an event was changed behind the store's back."""
    import json
    import subprocess
    import sys

    import erpoz
    from erpoz import Engine

    @erpoz.step
    def inc(x: int) -> int:
        return x + 1

    flow = erpoz.Flow("pg_parts", inputs={"x": int})
    flow.output(flow.add(inc, id="b", x=flow.add(inc, id="a", x=flow.input("x"))))

    async def write() -> list[str]:
        s = open_store(schema.url)
        engine = Engine(s)
        ids = [(await engine.run(flow, {"x": i})).run_id for i in range(12)]
        await s.close()
        return ids

    ids = run(write())

    def reports() -> tuple[dict[str, Any], dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY_IN_PARTS, schema.url],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        one, three = json.loads(proc.stdout)
        return one, three

    one, three = reports()
    assert one["ok"] and three["ok"], (one["problems"], three["problems"])
    assert three["runs"] == one["runs"] == 12 and three["events"] == one["events"]
    assert three["tree"] == one["tree"] and three["tree"]["size"] == one["events"]

    victim = sorted(ids)[len(ids) // 2]  # a run in a child's range, not the first one's
    schema.sql("ALTER TABLE events DISABLE TRIGGER USER")
    schema.sql(f"UPDATE events SET data = '{{\"ms\":1}}' WHERE run_id = '{victim}' AND seq = 3")
    schema.sql("ALTER TABLE events ENABLE TRIGGER USER")
    one, three = reports()
    assert not one["ok"] and three["problems"] == one["problems"]
    assert [(p["run_id"], p["seq"], p["what"]) for p in three["problems"]] == [
        (victim, 3, "changed")
    ]
