"""The tamper suite: an adversary who can write to the database (SQLite file or PostgreSQL
schema) changes the log in every way the threat model names; ``verify`` must catch each one
when a checkpoint signed before the change exists — and the table ``KINDS`` says which ones it
catches even without one (docs/governance.md prints the same table).

The adversary knows everything erpoz does except the signing key: they drop the append-only
triggers, recompute hash chains, move heads, change statuses and rebuild the whole Merkle tree
(leaves, stored nodes, frontier) so that the database agrees with itself.

Every store holds four finished runs of a small flow whose output is 42: A and B, then (a copy
of the database is taken here, for the "older copy" attack) C, then the checkpoint is signed,
then D. The changes touch what was recorded before the checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine, Flow, speedups, step
from erpoz.audit import AuditReport, verify
from erpoz.audit.checkpoints import Checkpoint, SigningKey, generate_key, sign_checkpoint
from erpoz.store import GENESIS, chain_hash, leaf_hash, open_store
from erpoz.store._merkle import CompactRange, StoredNode
from pgtest import Schema, throwaway_schema

KEY = generate_key()
THEIRS = generate_key()  # the adversary's own key


@step
def parse(question: str) -> str:
    return question.strip().lower()


@step
def compute(question: str) -> int:
    return 42 if "answer" in question else 7


@step
def phrase(value: int) -> str:
    return f"the answer is {value}"


def _flow() -> Flow:
    flow = Flow("calc", inputs={"question": str})
    value = flow.add(compute, question=flow.add(parse, question=flow.input("question")))
    flow.add(phrase, value=value)
    flow.output(value)
    return flow


FLOW = _flow()


# --- the adversary --------------------------------------------------------------------------------
_SQLITE_TRIGGERS = [
    "events_no_update",
    "events_no_delete",
    "merkle_leaves_no_update",
    "merkle_leaves_no_delete",
    "merkle_nodes_no_update",
    "merkle_nodes_no_delete",
    "merkle_state_grows",
    "merkle_state_no_delete",
]
_PG_TRIGGERS = [
    ("events_no_update", "events"),
    ("events_no_delete", "events"),
    ("events_no_truncate", "events"),
    ("merkle_leaves_no_change", "merkle_leaves"),
    ("merkle_leaves_no_truncate", "merkle_leaves"),
    ("merkle_nodes_no_change", "merkle_nodes"),
    ("merkle_nodes_no_truncate", "merkle_nodes"),
    ("merkle_state_grows", "merkle_state"),
    ("merkle_state_no_delete", "merkle_state"),
    ("merkle_state_no_truncate", "merkle_state"),
]
TABLES = ["runs", "events", "blobs", "cache", "merkle_state", "merkle_leaves", "merkle_nodes"]


@dataclass
class Victim:
    """A store with runs A–D, a checkpoint signed after C, and what the adversary needs."""

    kind: str
    url: str
    runs: list[str]
    checkpoint: Checkpoint
    older: Any  # a copy of the database taken after B

    # one statement at a time, ``?`` placeholders, on a connection of the adversary's own
    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.url) as db:
                return db.execute(query, args).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cur = db.execute(query.replace("?", "%s"), args)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def drop_triggers(self) -> None:
        if self.kind == "sqlite":
            for name in _SQLITE_TRIGGERS:
                self.sql(f"DROP TRIGGER IF EXISTS {name}")
        else:
            for name, table in _PG_TRIGGERS:
                self.sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")

    def events(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.sql(
            "SELECT seq, ts, kind, step, attempt, data, payload, prev_hash, hash FROM events "
            "WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )

    def rechain(self, run_id: str) -> None:
        """Recompute the run's chain from its first event and record its last as its head."""
        prev = GENESIS
        rows = self.events(run_id)
        for seq, ts, kind, step_, attempt, data, payload, _, _ in rows:
            h = chain_hash(prev, run_id, seq, ts, kind, step_, attempt, data, payload)
            self.sql(
                "UPDATE events SET prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?",
                (prev, h, run_id, seq),
            )
            prev = h
        self.sql(
            "UPDATE runs SET head_seq = ?, head_hash = ? WHERE run_id = ?",
            (len(rows), prev, run_id),
        )

    def rebuild_tree(self, order: Callable[[list[tuple[str, int]]], None] | None = None) -> None:
        """Make the Merkle tree agree with the events as they are now: the surviving events in
        their old order, new ones at the end (``order`` may rearrange them)."""
        in_tree = self.sql("SELECT run_id, seq FROM merkle_leaves ORDER BY pos")
        old = [(r[0], int(r[1])) for r in in_tree]
        events = self.sql("SELECT run_id, seq, hash FROM events")
        hashes = {(r[0], int(r[1])): r[2] for r in events}
        keys = [k for k in old if k in hashes] + sorted(set(hashes) - set(old))
        if order is not None:
            order(keys)
        tree = CompactRange()
        nodes: list[StoredNode] = []
        leaves = [(k[0], k[1], i, leaf_hash(k[0], k[1], hashes[k])) for i, k in enumerate(keys)]
        tree.append((leaf[3] for leaf in leaves), nodes)
        self.sql("DELETE FROM merkle_leaves")
        self.sql("DELETE FROM merkle_nodes")
        for leaf in leaves:
            self.sql("INSERT INTO merkle_leaves (run_id, seq, pos, leaf) VALUES (?,?,?,?)", leaf)
        for node in nodes:
            self.sql("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?,?,?)", node)
        self.sql("UPDATE merkle_state SET size = ?, frontier = ?", (tree.size, tree.frontier))

    def restore(self, copy: Any) -> None:
        """Put the older copy of the database back in place."""
        if self.kind == "sqlite":
            for suffix in ("-wal", "-shm"):
                Path(self.url + suffix).unlink(missing_ok=True)
            shutil.copyfile(copy, self.url)
            return
        self.drop_triggers()
        for table in TABLES:
            self.sql(f"DELETE FROM {table}")
        for table, rows in copy.items():
            for row in rows:
                marks = ",".join("?" * len(row))
                self.sql(f"INSERT INTO {table} VALUES ({marks})", row)

    def snapshot(self) -> Any:
        if self.kind == "sqlite":
            with sqlite3.connect(self.url) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            copy = self.url + ".older"
            shutil.copyfile(self.url, copy)
            return copy
        return {table: self.sql(f"SELECT * FROM {table}") for table in TABLES}


async def _run(url: str, question: str) -> str:
    store = open_store(url)
    try:
        return (await Engine(store).run(FLOW, {"question": question})).run_id
    finally:
        await store.close()


async def _sign(url: str, key: SigningKey) -> Checkpoint:
    store = open_store(url)
    try:
        return await sign_checkpoint(store, key)
    finally:
        await store.close()


def _victim(kind: str, url: str) -> Victim:
    runs = [asyncio.run(_run(url, f"what is the answer, {who}?")) for who in "AB"]
    v = Victim(kind, url, runs, None, None)  # type: ignore[arg-type]
    v.older = v.snapshot()
    runs.append(asyncio.run(_run(url, "what is the answer, C?")))
    v.checkpoint = asyncio.run(_sign(url, KEY))
    runs.append(asyncio.run(_run(url, "what is the answer, D?")))
    return v


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Victim:
    path = tmp_path_factory.mktemp("tamper") / "template.db"
    v = _victim("sqlite", str(path))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return v


@pytest.fixture(params=["sqlite", "postgres"])
def victim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Victim]:
    if request.param == "sqlite":
        t: Victim = request.getfixturevalue("sqlite_template")
        path = tmp_path / "victim.db"
        shutil.copyfile(t.url, path)
        yield Victim("sqlite", str(path), t.runs, t.checkpoint, t.older)
        return
    schema: Schema
    with throwaway_schema() as schema:
        yield _victim("postgres", schema.url)


def check(v: Victim, *checkpoints: Checkpoint) -> AuditReport:
    async def main() -> AuditReport:
        store = open_store(v.url)
        try:
            return await verify(store, checkpoints=checkpoints, public_key=KEY.public_key)
        finally:
            await store.close()

    return asyncio.run(main())


# --- the changes ----------------------------------------------------------------------------------
def payload_byte(v: Victim) -> None:
    """One byte of a stored step output, nothing else."""
    a = v.runs[0]
    v.drop_triggers()
    v.sql(
        "UPDATE events SET payload = replace(payload, '42', '43') "
        "WHERE run_id = ? AND kind = 'step_succeeded' AND step = 'compute'",
        (a,),
    )


def deleted_event(v: Victim) -> None:
    v.drop_triggers()
    v.sql("DELETE FROM events WHERE run_id = ? AND seq = 3", (v.runs[0],))


def swapped_events(v: Victim) -> None:
    b = v.runs[1]
    v.drop_triggers()
    v.sql("UPDATE events SET seq = -1 WHERE run_id = ? AND seq = 4", (b,))
    v.sql("UPDATE events SET seq = 4 WHERE run_id = ? AND seq = 5", (b,))
    v.sql("UPDATE events SET seq = 5 WHERE run_id = ? AND seq = -1", (b,))


def truncation(v: Victim) -> None:
    """The last three events of a finished run cut off."""
    c = v.runs[2]
    (n,) = v.sql("SELECT max(seq) FROM events WHERE run_id = ?", (c,))[0]
    v.drop_triggers()
    v.sql("DELETE FROM events WHERE run_id = ? AND seq > ?", (c, n - 3))


def truncation_and_head_edit(v: Victim) -> None:
    """…and the head moved to the new last event, the run marked running again (so it does
    not look like a finished run), the Merkle tree rebuilt without the events."""
    truncation(v)
    c = v.runs[2]
    v.rechain(c)
    v.sql("UPDATE runs SET status = 'running', output = NULL WHERE run_id = ?", (c,))
    v.rebuild_tree()


def deleted_run(v: Victim) -> None:
    """A whole run: its events, its row, its leaves (the tree rebuilt)."""
    b = v.runs[1]
    v.drop_triggers()
    v.sql("DELETE FROM events WHERE run_id = ?", (b,))
    v.sql("DELETE FROM runs WHERE run_id = ?", (b,))
    v.rebuild_tree()


def forged_append(v: Victim) -> None:
    """An event appended to a finished run with a correctly recomputed hash, the head moved to
    it, and a leaf for it in the tree."""
    a = v.runs[0]
    last = v.events(a)[-1]
    seq, ts, prev = last[0] + 1, last[1] + 1.0, last[8]
    data = '{"by":"ops","note":"approved after the fact"}'
    h = chain_hash(prev, a, seq, ts, "review_resolved", None, 0, data, None)
    v.drop_triggers()
    v.sql(
        "INSERT INTO events (run_id, seq, ts, kind, step, attempt, data, payload, blob, "
        "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (a, seq, ts, "review_resolved", None, 0, data, None, None, prev, h),
    )
    v.sql("UPDATE runs SET head_seq = ?, head_hash = ? WHERE run_id = ?", (seq, h, a))
    v.rebuild_tree()


def head_moved(v: Victim) -> None:
    """A finished run's recorded head moved back one event."""
    a = v.runs[0]
    events = v.events(a)
    v.sql(
        "UPDATE runs SET head_seq = ?, head_hash = ? WHERE run_id = ?",
        (events[-2][0], events[-2][8], a),
    )


def _rewrite_42(v: Victim) -> None:
    a = v.runs[0]
    v.drop_triggers()
    v.sql(
        "UPDATE events SET payload = '4200' WHERE run_id = ? AND payload = '42'",
        (a,),
    )
    v.sql("UPDATE runs SET output = '4200' WHERE run_id = ?", (a,))
    v.rechain(a)


def rewrite_rechain_head(v: Victim) -> None:
    """The run's output rewritten 42 → 4200 (the step's and the run's), the chain recomputed,
    the head updated; the tree left as it was."""
    _rewrite_42(v)


def rewrite_rechain_head_tree(v: Victim) -> None:
    """…and the Merkle tree rebuilt to match: the database agrees with itself everywhere."""
    _rewrite_42(v)
    v.rebuild_tree()


def older_copy(v: Victim) -> None:
    """The database replaced by a copy taken before the checkpoint (after run B)."""
    v.restore(v.older)


def reordered_leaves(v: Victim) -> None:
    """Two runs' places in the log swapped (the tree rebuilt in another order)."""

    def swap(keys: list[tuple[str, int]]) -> None:
        keys[0], keys[-1] = keys[-1], keys[0]

    v.drop_triggers()
    v.rebuild_tree(swap)


def untracked_run(v: Victim) -> None:
    """A whole run inserted behind the store's back: its row and a chained run_started, no
    leaf in the tree."""
    rid = "r-inserted"
    ts = v.events(v.runs[0])[0][1] + 0.5
    data = '{"flow":"calc","fingerprint":"0000000000000000"}'
    payload = '{"question":"what is the answer?"}'
    h = chain_hash(GENESIS, rid, 1, ts, "run_started", None, 0, data, payload)
    v.sql(
        "INSERT INTO events (run_id, seq, ts, kind, step, attempt, data, payload, blob, "
        "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (rid, 1, ts, "run_started", None, 0, data, payload, None, GENESIS, h),
    )
    v.sql(
        "INSERT INTO runs (run_id, flow, fingerprint, status, created, updated, inputs, "
        "head_seq, head_hash) VALUES (?,?,?,?,?,?,?,?,?)",
        (rid, "calc", "0" * 16, "running", ts, ts, payload, 1, h),
    )


@dataclass(frozen=True)
class Kind:
    change: Callable[[Victim], None]
    without: str | None
    """What ``verify`` names with no checkpoint (``None``: the change is not detected)."""
    with_checkpoint: str
    """What it names when the checkpoint signed before the change is given."""


KINDS = {
    "payload byte": Kind(payload_byte, "changed", "changed"),
    "deleted event": Kind(deleted_event, "removed", "removed"),
    "swapped events": Kind(swapped_events, "reordered", "reordered"),
    "truncation": Kind(truncation, "truncated", "truncated"),
    "truncation + head edit (+ status, tree)": Kind(truncation_and_head_edit, None, "rewritten"),
    "deleted run (+ tree)": Kind(deleted_run, None, "rewritten"),
    "forged append, hashes recomputed (+ tree)": Kind(forged_append, "unsealed", "unsealed"),
    "head moved": Kind(head_moved, "head moved", "head moved"),
    "rewrite + re-chain + head, triggers dropped": Kind(rewrite_rechain_head, "changed", "changed"),
    "rewrite + re-chain + head + tree": Kind(rewrite_rechain_head_tree, None, "rewritten"),
    "older copy of the database": Kind(older_copy, None, "rolled back"),
    "runs reordered in the log (+ tree)": Kind(reordered_leaves, None, "rewritten"),
    "run inserted without leaves": Kind(untracked_run, "untracked", "untracked"),
}


def test_an_untouched_store_verifies_with_its_checkpoint(victim: Victim) -> None:
    report = check(victim, victim.checkpoint)
    assert report.ok, report.problems
    assert report.runs == 4 and report.tree_size == report.events > victim.checkpoint.size
    assert [c.ok for c in report.checkpoints] == [True]
    assert report.checkpoints[0].proof, "a consistency proof from the checkpoint to now"


@pytest.mark.parametrize("name", list(KINDS))
def test_every_change_is_detected_given_a_checkpoint_from_before(victim: Victim, name: str) -> None:
    kind = KINDS[name]
    kind.change(victim)
    without = check(victim)
    if kind.without is None:
        assert without.ok, f"{name}: the table says a checkpoint is needed, yet {without.problems}"
    else:
        assert kind.without in {p.what for p in without.problems}, without.problems
    report = check(victim, victim.checkpoint)
    assert not report.ok, f"{name} went unnoticed even with the checkpoint"
    assert kind.with_checkpoint in {p.what for p in report.problems}, report.problems


def test_a_checkpoint_signed_by_another_key_is_refused(victim: Victim) -> None:
    """The adversary rewrites everything and signs a checkpoint of the result with a key of
    their own, to put in place of the real one."""
    rewrite_rechain_head_tree(victim)
    forged = asyncio.run(_sign(victim.url, THEIRS))
    report = check(victim, forged)
    assert not report.ok and [p.what for p in report.problems] == ["signature"]
    assert "signed by another key" in report.problems[0].detail
    same_id = Checkpoint(
        forged.origin, forged.size, forged.root, forged.timestamp_ms, KEY.key_id, forged.signature
    )  # claiming to be ours
    report = check(victim, same_id)
    assert [p.what for p in report.problems] == ["signature"]
    assert "does not verify" in report.problems[0].detail


def test_one_runs_verify_uses_inclusion_and_consistency_proofs(victim: Victim) -> None:
    """``verify RUN`` does not recompute the whole tree: it proves the run's leaves are in the
    stored tree and in the checkpoint, and that the tree extends the checkpoint."""

    async def one(run_id: str) -> AuditReport:
        store = open_store(victim.url)
        try:
            return await verify(
                store, run_id, checkpoints=[victim.checkpoint], public_key=KEY.public_key
            )
        finally:
            await store.close()

    assert asyncio.run(one(victim.runs[0])).ok
    rewrite_rechain_head_tree(victim)
    report = asyncio.run(one(victim.runs[0]))
    assert not report.ok and "rewritten" in {p.what for p in report.problems}
    assert not report.checkpoints[0].ok


_PARALLEL = """
import asyncio, json, sys
from erpoz.audit import _shards, verify
from erpoz.audit.checkpoints import Checkpoint, PublicKey
from erpoz.store import open_store

url, workers, cp, pem = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
assert _shards.workers_for(workers, 0) == workers, "this process must be able to fork"


async def main():
    store = open_store(url)
    try:
        report = await verify(
            store,
            workers=workers,
            checkpoints=[Checkpoint.from_json(cp, "argv")],
            public_key=PublicKey.from_pem(pem.encode(), "argv"),
        )
    finally:
        await store.close()
    print(json.dumps(report.to_json()))


asyncio.run(main())
"""


def in_parallel(v: Victim, workers: int, *, pure_python: bool = False) -> dict[str, Any]:
    """``verify`` with ``workers`` forked processes, run from a fresh (one-thread) process
    (``pure_python``: without the C extension)."""
    env = {**os.environ, "ERPOZ_NO_SPEEDUPS": "1" if pure_python else ""}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PARALLEL,
            v.url,
            str(workers),
            json.dumps(v.checkpoint.to_json()),
            KEY.public_key.pem().decode(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.parametrize(
    "name", ["payload byte", "deleted run (+ tree)", "rewrite + re-chain + head + tree"]
)
def test_verify_in_parallel_processes_finds_the_same(victim: Victim, name: str) -> None:
    """A large store is checked in ranges of runs by forked children: the same findings."""
    KINDS[name].change(victim)
    one = check(victim, victim.checkpoint).to_json()
    three = in_parallel(victim, 3)
    assert not one["ok"] and three["problems"] == one["problems"]
    for key in ("runs", "events", "tree", "checkpoints"):
        assert three[key] == one[key], key
    if speedups.available():  # and the pure-Python code in the forked children finds the same
        pure = in_parallel(victim, 3, pure_python=True)
        assert {k: v for k, v in pure.items() if k not in _TIMES} == {
            k: v for k, v in three.items() if k not in _TIMES
        }


def test_a_clean_store_verifies_in_parallel_processes(victim: Victim) -> None:
    report = in_parallel(victim, 4)
    assert report["ok"] and report["runs"] == 4 and all(c["ok"] for c in report["checkpoints"])


_TIMES = ("seconds", "events_per_second")


def _found(v: Victim, *checkpoints: Checkpoint) -> dict[str, Any]:
    report = check(v, *checkpoints).to_json()
    return {k: value for k, value in report.items() if k not in _TIMES}


@pytest.mark.parametrize("name", ["untouched", *KINDS])
def test_the_c_extension_finds_exactly_what_the_python_code_finds(
    victim: Victim, name: str
) -> None:
    """The C extension (chains, links, leaves and the tree in C) against the pure-Python code,
    the reference: the same report, problem for problem, with and without the
    checkpoint."""
    if not speedups.available():
        pytest.skip("the C extension erpoz.speedups is not built here")
    if name != "untouched":
        KINDS[name].change(victim)
    was = speedups.use(True)
    try:
        with_c = [_found(victim), _found(victim, victim.checkpoint)]
        speedups.use(False)
        pure = [_found(victim), _found(victim, victim.checkpoint)]
    finally:
        speedups.use(was)
    assert with_c == pure
    assert with_c[1]["ok"] == (name == "untouched")
