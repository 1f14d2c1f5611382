"""``migrate``: copying a run store between SQLite files and PostgreSQL schemas, verified.

The stores hold real runs, made by running flows through :class:`erpoz.Engine`: succeeded,
failed (after a retry), waiting for review, one whose output is large enough to be a blob, and
one whose step came from the output cache.

PostgreSQL tests run against ``$ERPOZ_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each store in a throw-away schema dropped after
the test. When the server cannot be reached they skip, naming the URL — or fail, when
``ERPOZ_TEST_POSTGRES=required``. The SQLite tests run either way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import erpoz
from erpoz import Decision, Engine, Flow, RetryPolicy, StoreError
from erpoz.audit import AuditReport, verify
from erpoz.store import NewRun, open_store
from erpoz.store._copy import (
    PAGE_ROWS,
    VERIFY_ONE_BY_ONE,
    MigrationError,
    MigrationReport,
    migrate,
)
from erpoz.store._owner import new_owner
from pgtest import URL, need_postgres, with_search_path


@dataclass
class Stores:
    """Throw-away stores of either kind: SQLite files under ``tmp``, PostgreSQL schemas."""

    tmp: Path
    schemas: list[str] = field(default_factory=list)

    def new(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            return str(self.tmp / f"{name}.db")
        need_postgres()
        import psycopg

        schema = f"erpoz_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(URL, autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return with_search_path(URL, schema)

    def drop(self) -> None:
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(URL, autocommit=True) as db:
            for schema in self.schemas:
                db.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def stores(tmp_path: Path) -> Any:
    s = Stores(tmp_path)
    yield s
    s.drop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- real runs ------------------------------------------------------------------------------------
@erpoz.step
def parse(text: str) -> str:
    return " ".join(text.split())


@erpoz.step(cache=True, version="1")
def classify(text: str) -> dict[str, str]:
    return {"category": "billing" if "invoice" in text.lower() else "other"}


@erpoz.step
def attachment(text: str) -> str:
    return (text + "\n") * (70_000 // (len(text) + 1) + 1)  # > 64 KiB: stored as a blob


@erpoz.step(retry=RetryPolicy(attempts=2, backoff=0))
def lookup(text: str) -> str:
    raise ConnectionError(f"ledger unreachable for {text!r}")


@erpoz.step(review=True)
def draft(text: str) -> str:
    return f"Dear customer, about {text}: refunded."


@erpoz.step
def send(text: str) -> str:
    return f"sent: {text}"


def _flow(name: str, *steps: Any) -> Flow:
    flow = Flow(name, inputs={"text": str})
    ref = flow.add(parse, text=flow.input("text"))
    for fn in steps:
        ref = flow.add(fn, text=ref)
    flow.output(ref)
    return flow


TRIAGE = Flow("triage", inputs={"text": str})
TRIAGE.output(TRIAGE.add(classify, text=TRIAGE.add(parse, text=TRIAGE.input("text"))))
BULKY = _flow("bulky", attachment)
LEDGER = _flow("ledger", lookup)
REPLY = _flow("reply", draft, send)

RUNS = ("run-1-ok", "run-2-cached", "run-3-big", "run-4-failed", "run-5-review", "run-6-cancel")


async def _make_runs(url: str) -> None:
    store = open_store(url)
    try:
        engine = Engine(store)
        ticket = "Invoice INV-1042 was charged twice"
        assert (await engine.run(TRIAGE, {"text": ticket}, run_id=RUNS[0])).status == "succeeded"
        assert (await engine.run(TRIAGE, {"text": ticket}, run_id=RUNS[1])).status == "succeeded"
        assert (await engine.run(BULKY, {"text": ticket}, run_id=RUNS[2])).status == "succeeded"
        assert (await engine.run(LEDGER, {"text": ticket}, run_id=RUNS[3])).status == "failed"
        assert (await engine.run(REPLY, {"text": ticket}, run_id=RUNS[4])).status == "waiting"
        assert (await engine.run(REPLY, {"text": "late"}, run_id=RUNS[5])).status == "waiting"
        await store.request_cancel(RUNS[5])  # a flag on the runs row only: a boolean to carry
        # durable waits: a message a waiting run has not taken yet, and a published event
        await engine.send(RUNS[4], "reply", {"text": "yes"})
        await store.set_run_event(RUNS[0], "answered", '{"ok":true}')  # type: ignore[attr-defined]
    finally:
        await store.close()


def make_source(stores: Stores, kind: str = "sqlite", name: str = "source") -> str:
    """A store of ``kind`` holding the six runs of ``RUNS``."""
    url = stores.new(kind, name)
    run(_make_runs(url))
    return url


async def _resume(url: str, run_id: str, action: str) -> str:
    store = open_store(url)
    try:
        result = await Engine(store).resume(
            run_id, REPLY, decision=Decision(action, reviewer="ana")
        )
        return str(result.status)
    finally:
        await store.close()


def resume(url: str, run_id: str, action: str = "approve") -> str:
    return str(run(_resume(url, run_id, action)))


async def _add_run(url: str, run_id: str) -> None:
    store = open_store(url)
    try:
        await Engine(store).run(TRIAGE, {"text": "where is my parcel"}, run_id=run_id)
    finally:
        await store.close()


def add_run(url: str, run_id: str) -> None:
    run(_add_run(url, run_id))


async def _verify(url: str) -> AuditReport:
    store = open_store(url)
    try:
        return await verify(store)
    finally:
        await store.close()


def audit(url: str) -> AuditReport:
    report: AuditReport = run(_verify(url))
    return report


# --- reading the tables as they are stored --------------------------------------------------------
TABLES = {"runs": 1, "events": 2, "blobs": 1, "cache": 1, "messages": 1, "run_events": 2}
"""Each table and how many of its first columns are its key."""


def rows(url: str, table: str, where: str = "") -> list[tuple[Any, ...]]:
    """Every row of ``table`` exactly as stored (PostgreSQL booleans as SQLite's 0/1), sorted."""
    query = f"SELECT * FROM {table} {where}"
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as db:
            got = db.execute(query).fetchall()
        got = [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in got]
    else:
        with sqlite3.connect(url) as db:
            got = db.execute(query).fetchall()
    return sorted(got, key=lambda r: r[: TABLES[table]])  # the same order in either backend


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {table: rows(url, table) for table in TABLES}


def tables(pg_url: str) -> list[str]:
    """The tables in a PostgreSQL store's schema."""
    import psycopg

    with psycopg.connect(pg_url) as db:
        found = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return [r[0] for r in found]


def sql(url: str, query: str, args: tuple[Any, ...] = ()) -> None:
    """Change a store behind erpoz's back (as an attacker or a careless admin would)."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute(query, args)
    else:
        with sqlite3.connect(url) as db:
            db.execute(query, args)


def tamper(url: str, run_id: str, seq: int) -> None:
    """Rewrite one event's data in a SQLite store (dropping the append-only trigger first)."""
    with sqlite3.connect(url) as db:
        db.execute("DROP TRIGGER events_no_update")
        db.execute(
            "UPDATE events SET data = replace(data, '}', ',\"edited\":1}') "
            "WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        )


def copy(src: str, dst: str, **kw: Any) -> MigrationReport:
    report: MigrationReport = run(migrate(src, dst, verify=verify, **kw))
    return report


# --- copying between every pair of backends -------------------------------------------------------
PAIRS = [
    ("sqlite", "sqlite"),
    ("sqlite", "postgres"),
    ("postgres", "sqlite"),
    ("postgres", "postgres"),
]


@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=lambda k: k)
def test_a_store_is_copied_row_for_row_and_verifies(
    stores: Stores, src_kind: str, dst_kind: str
) -> None:
    src = make_source(stores, src_kind)
    dst = stores.new(dst_kind, "destination")
    report = copy(src, dst)

    assert dump(dst) == dump(src)
    assert report.copied == len(RUNS) and not report.topped_up and report.already_there == 0
    assert report.events == len(rows(src, "events"))
    assert report.blobs == 1 and report.cache == 1
    assert (report.messages, report.run_events) == (1, 1)
    assert report.complete and not report.source_problems and not report.columns_left_out
    assert report.runs_verified == len(RUNS)
    before, after = audit(src), audit(dst)
    assert before.ok and after.ok, after.problems
    assert after.heads_digest == before.heads_digest == report.heads_digest
    cached = [e for e in rows(dst, "events", "WHERE run_id = 'run-2-cached'")]
    assert any('"cached":true' in e[6] for e in cached), "the cache hit is in the copy"
    assert [r[4] for r in rows(dst, "runs")] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "waiting",
        "waiting",
    ]


def test_round_trip_sqlite_postgres_sqlite_keeps_every_row_identical(stores: Stores) -> None:
    src = make_source(stores, "sqlite")
    pg = stores.new("postgres", "middle")
    back = stores.new("sqlite", "back")
    copy(src, pg)
    copy(pg, back)

    original = dump(src)
    assert dump(pg) == original
    assert dump(back) == original
    events = original["events"]
    assert len(events) > 30 and {e[3] for e in events} >= {
        "run_started",
        "step_succeeded",
        "step_retried",
        "step_failed",
        "run_failed",
        "review_requested",
        "run_waiting",
        "run_succeeded",
    }
    assert any(e[8] is not None and e[7] is None for e in events), "a payload is in a blob"
    assert all(type(e[2]) is float for e in rows(back, "events")), "ts stays a float"
    reports = [audit(u) for u in (src, pg, back)]
    assert all(r.ok for r in reports)
    assert len({r.heads_digest for r in reports}) == 1
    import psycopg

    with psycopg.connect(pg) as db:
        flag = db.execute("SELECT cancel_requested FROM runs WHERE run_id = 'run-6-cancel'")
        assert flag.fetchone() == (True,)  # a PostgreSQL boolean there, SQLite's 1 here
    assert rows(back, "runs", "WHERE run_id = 'run-6-cancel'")[0][17] == 1


def test_a_second_migrate_copies_nothing_and_a_third_only_what_is_new(stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    first = copy(src, dst)
    again = copy(src, dst)
    assert (again.copied, again.events, again.blobs, again.cache) == (0, 0, 0, 0)
    assert again.already_there == len(RUNS) and again.cache_present == 1
    assert again.heads_digest == first.heads_digest

    add_run(src, "run-7-new")
    third = copy(src, dst)
    assert (third.copied, third.already_there) == (1, len(RUNS))
    assert third.events == len(rows(src, "events", "WHERE run_id = 'run-7-new'"))
    assert dump(dst) == dump(src)


@erpoz.step
async def inc(x: int) -> int:
    return x + 1


async def _long_run(url: str, steps: int) -> None:
    flow = Flow("long", inputs={"x": int})
    ref = flow.input("x")
    for i in range(steps):
        ref = flow.add(inc, id=f"s{i}", x=ref)
    store = open_store(url, durability="batch")
    try:
        assert (await Engine(store).run(flow, {"x": 0}, run_id="run-0-long")).output == steps
    finally:
        await store.close()


@pytest.mark.parametrize("dst_kind", ["sqlite", "postgres"])
def test_a_run_longer_than_a_page_and_a_batch_is_copied_whole(
    stores: Stores, dst_kind: str
) -> None:
    src = make_source(stores)
    run(_long_run(src, PAGE_ROWS // 2 + 10))  # two events per step: more than a page
    dst = stores.new(dst_kind, "destination")
    report = copy(src, dst, batch_events=100)
    assert len(rows(src, "events", "WHERE run_id = 'run-0-long'")) > PAGE_ROWS
    assert report.copied == len(RUNS) + 1 and report.events == len(rows(src, "events"))
    assert dump(dst) == dump(src)
    assert audit(dst).ok


# --- a source that does not verify ----------------------------------------------------------------
def test_a_tampered_source_is_refused_naming_the_event_and_nothing_is_written(
    stores: Stores,
) -> None:
    src = make_source(stores)
    tamper(src, "run-3-big", 2)
    dst = stores.new("sqlite", "destination")
    with pytest.raises(MigrationError) as caught:
        copy(src, dst)
    err = caught.value
    assert err.kind == "source" and err.runs == ["run-3-big"]
    assert "run run-3-big, event 2: changed" in str(err) and "--force" in str(err)
    assert not Path(dst).exists(), "the destination is not even created"


def test_force_copies_a_tampered_source_as_it_is(stores: Stores) -> None:
    src = make_source(stores)
    tamper(src, "run-1-ok", 3)
    dst = stores.new("sqlite", "destination")
    report = copy(src, dst, force=True)
    assert [(p.run_id, p.seq, p.what) for p in report.source_problems] == [
        ("run-1-ok", 3, "changed")
    ]
    assert dump(dst) == dump(src)
    problems = audit(dst).problems
    assert [(p.run_id, p.seq, p.what) for p in problems] == [("run-1-ok", 3, "changed")]


# --- runs that moved on ---------------------------------------------------------------------------
@pytest.mark.parametrize("dst_kind", ["sqlite", "postgres"])
def test_a_run_that_grew_in_the_source_is_topped_up(stores: Stores, dst_kind: str) -> None:
    src = make_source(stores)
    dst = stores.new(dst_kind, "destination")
    copy(src, dst)
    had = len(rows(dst, "events", "WHERE run_id = 'run-5-review'"))
    assert resume(src, "run-5-review") == "succeeded"

    report = copy(src, dst)
    grown = rows(src, "events", "WHERE run_id = 'run-5-review'")
    assert report.topped_up == ["run-5-review"] and report.copied == 0
    assert report.events == len(grown) - had > 0
    assert report.already_there == len(RUNS) - 1
    assert dump(dst) == dump(src)
    assert audit(dst).ok


@pytest.mark.parametrize("dst_kind", ["sqlite", "postgres"])
def test_a_run_whose_events_differ_stops_the_migration_and_leaves_the_destination_as_it_was(
    stores: Stores, dst_kind: str
) -> None:
    src = make_source(stores)
    dst = stores.new(dst_kind, "destination")
    copy(src, dst)
    assert resume(src, "run-5-review", "approve") == "succeeded"
    assert resume(dst, "run-5-review", "reject") == "failed"  # the histories diverge
    add_run(src, "run-7-new")
    before = dump(dst)

    with pytest.raises(MigrationError) as caught:
        copy(src, dst)
    err = caught.value
    assert err.kind == "conflict" and err.runs == ["run-5-review"]
    assert "run run-5-review: its event" in str(err) and "nothing was written" in str(err)
    assert dump(dst) == before, "not even the new run was copied"


def test_a_run_resumed_in_the_destination_continues_its_chain_there(stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("postgres", "destination")
    copy(src, dst)
    copied = rows(dst, "events", "WHERE run_id = 'run-5-review'")

    assert resume(dst, "run-5-review") == "succeeded"  # claims it in the new store
    events = rows(dst, "events", "WHERE run_id = 'run-5-review'")
    assert events[: len(copied)] == copied
    assert [e[1] for e in events] == list(range(1, len(events) + 1))
    assert events[len(copied)][9] == copied[-1][10], "the first new event links to the copy"
    assert {e[3] for e in events[len(copied) :]} >= {"run_resumed", "run_succeeded"}
    assert audit(dst).ok

    report = copy(src, dst)  # the source is behind now: left alone, not a conflict
    assert report.continued == ["run-5-review"] and report.events == 0
    assert rows(dst, "events", "WHERE run_id = 'run-5-review'") == events


# --- live runs ------------------------------------------------------------------------------------
async def _hold(url: str, run_id: str) -> str:
    """Start a run owned by this (live) process and leave it running, lease in the future."""
    store = open_store(url)
    owner = new_owner()
    try:
        writer = await store.create_run(NewRun(run_id, "held", "f" * 16, "{}"), owner)
        writer.append("step_started", "s1", attempt=1)
        await writer.flush()
    finally:
        await store.close()
    return owner


def hold(url: str, run_id: str) -> str:
    owner: str = run(_hold(url, run_id))
    return owner


def test_runs_a_live_process_owns_are_left_behind_unless_include_active(stores: Stores) -> None:
    src = make_source(stores)
    owner = hold(src, "run-9-live")
    dst = stores.new("sqlite", "destination")

    report = copy(src, dst)
    assert [(a.run_id, a.owner, a.where) for a in report.active] == [
        ("run-9-live", owner, "source")
    ]
    assert not report.complete and report.copied == len(RUNS)
    assert not rows(dst, "runs", "WHERE run_id = 'run-9-live'")

    report = copy(src, dst, include_active=True)
    assert report.copied == 1 and report.complete
    (copied,) = rows(dst, "runs", "WHERE run_id = 'run-9-live'")
    assert copied[15] == owner, "copied as it is, owner and lease included"
    assert dump(dst) == dump(src)


async def _claim(url: str, run_id: str) -> str:
    """Take a run in ``url`` for this (live) process and keep it, as a worker would."""
    store = open_store(url)
    owner = new_owner()
    try:
        await store.claim_run(run_id, owner)
    finally:
        await store.close()
    return owner


def test_a_run_a_live_process_owns_in_the_destination_is_not_topped_up(stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    copy(src, dst)
    owner = run(_claim(dst, "run-5-review"))
    assert resume(src, "run-5-review") == "succeeded"
    before = dump(dst)

    report = copy(src, dst)
    assert [(a.run_id, a.owner, a.where) for a in report.active] == [
        ("run-5-review", owner, "destination")
    ]
    assert report.events == 0 and not report.topped_up
    assert dump(dst) == before


# --- dry run, mismatches, refusals ----------------------------------------------------------------
@pytest.mark.parametrize("dst_kind", ["sqlite", "postgres"])
def test_a_dry_run_says_what_would_be_copied_and_writes_nothing(
    stores: Stores, dst_kind: str
) -> None:
    src = make_source(stores)
    dst = stores.new(dst_kind, "destination")
    dry = copy(src, dst, dry_run=True)
    if dst_kind == "sqlite":
        assert not Path(dst).exists()
    else:
        assert not tables(dst), "the schema is not even migrated"
    real = copy(src, dst)
    assert dry.dry_run and not real.dry_run
    assert (dry.copied, dry.events, dry.blobs, dry.cache) == (
        real.copied,
        real.events,
        real.blobs,
        real.cache,
    )

    add_run(src, "run-7-new")
    before = dump(dst)
    dry = copy(src, dst, dry_run=True)
    # the new run, and the cache row of its new input
    assert (dry.copied, dry.already_there, dry.blobs, dry.cache) == (1, len(RUNS), 0, 1)
    assert dump(dst) == before


@pytest.mark.parametrize("extra", [0, VERIFY_ONE_BY_ONE], ids=["few", "many"])
def test_a_destination_that_does_not_match_after_copying_is_an_error_naming_the_run(
    stores: Stores, extra: int
) -> None:
    src = make_source(stores)
    for i in range(extra):  # past VERIFY_ONE_BY_ONE runs, the whole destination is verified
        add_run(src, f"run-extra-{i:02d}")
    dst = stores.new("sqlite", "destination")
    run(open_store(dst).close())  # an empty store, migrated
    (blob,) = rows(src, "blobs")
    sql(dst, "INSERT INTO blobs (sha256, data) VALUES (?, ?)", (blob[0], '"not the payload"'))

    with pytest.raises(MigrationError) as caught:
        copy(src, dst)
    err = caught.value
    assert err.kind == "mismatch" and err.runs == ["run-3-big"]
    assert "run run-3-big" in str(err) and "changed" in str(err)


def test_the_same_store_under_two_names_is_refused(stores: Stores) -> None:
    src = make_source(stores)
    with pytest.raises(StoreError, match="are the same store"):
        copy(src, f"sqlite:///{src}")


def test_an_in_memory_store_is_refused(stores: Stores) -> None:
    with pytest.raises(StoreError, match="in-memory store"):
        copy("memory", stores.new("sqlite", "destination"))


def test_an_event_changed_after_the_check_is_caught_while_copying_and_its_run_not_written(
    stores: Stores,
) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")

    def change_it_now(phase: str, done: int, total: int | None) -> None:
        if phase == "planning":  # the source verified a moment ago; its snapshot starts now
            tamper(src, "run-3-big", 2)

    with pytest.raises(MigrationError) as caught:  # one run per batch: whole runs commit
        copy(src, dst, batch_events=1, on_progress=change_it_now)
    err = caught.value
    assert err.kind == "changed" and err.runs == ["run-3-big"]
    assert "run run-3-big, event 2 of the source does not check out" in str(err)
    assert [r[0] for r in rows(dst, "runs")] == ["run-1-ok", "run-2-cached"]
    assert {e[0] for e in rows(dst, "events")} == {"run-1-ok", "run-2-cached"}
    assert audit(dst).ok


def test_a_source_that_holds_no_store_is_refused_and_not_created(stores: Stores) -> None:
    missing = stores.tmp / "typo" / "erpoz.db"
    with pytest.raises(StoreError, match="does not exist; check the path"):
        copy(str(missing), stores.new("sqlite", "destination"))
    assert not missing.parent.exists()

    other = stores.tmp / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreError, match="the file is not an erpoz run store"):
        copy(str(other), stores.new("sqlite", "destination"))
    assert [r[0] for r in rows_of(other, "SELECT name FROM sqlite_master")] == ["notes"]


def test_an_empty_postgres_schema_is_not_a_source(stores: Stores) -> None:
    empty = stores.new("postgres", "empty")
    with pytest.raises(StoreError, match="its schema holds no erpoz run store"):
        copy(empty, stores.new("sqlite", "destination"))
    assert not tables(empty), "the source schema is left as it was"


def rows_of(path: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


# --- the Merkle tree --------------------------------------------------------------------------
async def _checkpoint_verifies(url: str, cps: list[Any], key: Any) -> AuditReport:
    store = open_store(url)
    try:
        return await verify(store, checkpoints=cps, public_key=key)
    finally:
        await store.close()


async def _sign(url: str, key: Any) -> Any:
    from erpoz.audit.checkpoints import sign_checkpoint

    store = open_store(url)
    try:
        return await sign_checkpoint(store, key)
    finally:
        await store.close()


@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=lambda k: k)
def test_the_tree_is_carried_so_the_sources_checkpoints_verify_against_the_copy(
    stores: Stores, src_kind: str, dst_kind: str
) -> None:
    from erpoz.audit.checkpoints import generate_key

    key = generate_key()
    src = make_source(stores, src_kind)
    early = run(_sign(src, key))
    add_run(src, "run-7-later")
    late = run(_sign(src, key))
    dst = stores.new(dst_kind, "destination")
    report = copy(src, dst, batch_events=5)  # many batches: the tree still follows the source
    assert report.tree is not None and report.tree.mirrors, report.tree
    assert (report.tree.size, report.tree.root) == (late.size, late.root.hex())
    checked = run(_checkpoint_verifies(dst, [early, late], key.public_key))
    assert checked.ok, checked.problems
    assert checked.origin == early.origin and all(c.ok for c in checked.checkpoints)

    add_run(src, "run-8-after")  # a top-up keeps it the source's
    newest = run(_sign(src, key))
    again = copy(src, dst)
    assert again.tree is not None and again.tree.mirrors and again.tree.appended > 0
    assert run(_checkpoint_verifies(dst, [early, late, newest], key.public_key)).ok


def test_a_destination_with_events_of_its_own_keeps_its_own_tree(stores: Stores) -> None:
    from erpoz.audit.checkpoints import generate_key

    key = generate_key()
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    copy(src, dst)
    add_run(dst, "run-7-there")  # the destination goes on with a run of its own
    add_run(src, "run-8-here")
    newest = run(_sign(src, key))
    report = copy(src, dst)
    assert report.tree is not None and not report.tree.mirrors
    assert "leaves the source's does not" in report.tree.why_not
    assert audit(dst).ok, "every event is in the destination's tree"
    checked = run(_checkpoint_verifies(dst, [newest], key.public_key))
    assert not checked.ok and checked.problems[0].what == "rewritten"


# --- schedules and limit state --------------------------------------------------------------------
STAMP = Path(__file__).resolve().parents[1] / "engine" / "schedule_flows.py"
STATE = {"schedules": 1, "schedule_ticks": 2, "limit_grants": 1}


async def _schedule_and_limit(url: str) -> float:
    """A project schedule and a tenant's, one tick fired of each, and a rate limit at its
    limit; the epoch second the schedules fired at."""
    from erpoz.engine import Schedule, Scheduler, add_schedule

    store = open_store(url)
    try:
        every = Schedule("every", f"{STAMP}:stamp", "* * * * *", {"who": "p"})
        theirs = Schedule("every", f"{STAMP}:stamp", "* * * * *", {"who": "t"}, tenant="acme")
        row = await add_schedule(store, every)
        await add_schedule(store, theirs, origin="api")
        await store.pause_schedule("acme:every", False, row.next_tick)  # type: ignore[attr-defined]
        fired = await Scheduler(Engine(store)).run_once(now=row.next_tick + 1)
        assert sorted(t.state for t in fired) == ["fired", "fired"]
        for _ in range(2):
            grant = await store.take_rate("runs:default", 2, 600.0)  # type: ignore[attr-defined]
            assert grant.granted
        return row.next_tick
    finally:
        await store.close()


async def _after_copy(url: str, tick: float) -> tuple[list[str], bool, list[str]]:
    """What the copy does next: the ticks a scheduler fires now, whether the limit has room,
    and the tenants of the runs the schedules started."""
    from erpoz.engine import Scheduler

    store = open_store(url)
    try:
        again = await Scheduler(Engine(store)).run_once(now=tick + 1)
        room = await store.take_rate("runs:default", 2, 600.0)  # type: ignore[attr-defined]
        runs = await store.list_runs(limit=100)
        return [t.run_id for t in again], room.granted, sorted(r.tenant for r in runs)
    finally:
        await store.close()


def test_schedules_their_ticks_and_rate_windows_go_with_the_store_and_back(
    stores: Stores,
) -> None:
    src = stores.new("sqlite", "source")
    tick = run(_schedule_and_limit(src))
    pg = stores.new("postgres", "middle")
    back = stores.new("sqlite", "back")
    there = copy(src, pg)
    assert there.state == {"schedules": 2, "schedule_ticks": 2, "limit_grants": 2}
    assert copy(pg, back).state == there.state

    def state(url: str) -> dict[str, list[tuple[Any, ...]]]:
        TABLES.update(STATE)
        try:
            return {t: rows(url, t) for t in STATE}
        finally:
            for t in STATE:
                TABLES.pop(t)

    original = state(src)
    assert len(original["schedules"]) == 2 and original["schedules"][0][0] == "acme:every"
    assert state(pg) == original and state(back) == original
    assert copy(src, pg).state == {"schedules": 0, "schedule_ticks": 0, "limit_grants": 0}
    for url in (pg, back):
        # the copy stands where the source stood: the fired ticks do not fire again, the
        # window still holds its two grants, and the tenant's run is still the tenant's
        fired_again, room, tenants = run(_after_copy(url, tick))
        assert fired_again == [] and room is False and tenants == ["-", "acme"]
