"""Tampering with a real SQLite store file: audit verify names the run, the event and how."""

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz import Engine, Flow, step
from erpoz.audit import AuditReport, export, verify
from erpoz.cli import app
from erpoz.store import open_store


@step
async def shout(text: str) -> str:
    return text.upper() + "!"


def _flow() -> Flow:
    flow = Flow("shouts", inputs={"text": str})
    prev = flow.input("text")
    for i in range(4):
        prev = flow.add(shout, id=f"s{i}", text=prev)
    return flow


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, list[str]]:
    """A store with three finished runs (10 events each), checkpointed into the main file."""
    path = tmp_path / "audit.db"

    async def build() -> list[str]:
        store = open_store(path)
        engine = Engine(store)
        ids = [(await engine.run(_flow(), {"text": f"marker-{i}"})).run_id for i in range(3)]
        await store.close()
        return ids

    ids = asyncio.run(build())
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path, ids


def _verify(path: Path) -> AuditReport:
    async def main() -> AuditReport:
        store = open_store(path)
        try:
            return await verify(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _tamper(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER events_no_update")
    con.execute("DROP TRIGGER events_no_delete")
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()


def _only(report: AuditReport) -> tuple[str, int, str]:
    assert not report.ok and len(report.problems) == 1, report.problems
    p = report.problems[0]
    return p.run_id, p.seq, p.what


def test_an_untouched_store_verifies(db: tuple[Path, list[str]]) -> None:
    report = _verify(db[0])
    assert report.ok and report.runs == 3 and report.events == 30
    assert len(report.heads_digest) == 64


def test_a_changed_event_is_named(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    _tamper(path, f"UPDATE events SET data='{{\"ms\":123456}}' WHERE run_id='{ids[1]}' AND seq=5")
    assert _only(_verify(path)) == (ids[1], 5, "changed")


def test_a_removed_event_is_named(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    _tamper(path, f"DELETE FROM events WHERE run_id='{ids[0]}' AND seq=3")
    assert _only(_verify(path)) == (ids[0], 3, "removed")


def test_reordered_events_are_named(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    r = ids[2]
    _tamper(
        path,
        f"UPDATE events SET seq=-1 WHERE run_id='{r}' AND seq=4",
        f"UPDATE events SET seq=4 WHERE run_id='{r}' AND seq=5",
        f"UPDATE events SET seq=5 WHERE run_id='{r}' AND seq=-1",
    )
    assert _only(_verify(path)) == (r, 4, "reordered")


def test_events_cut_off_the_end_are_named(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    _tamper(path, f"DELETE FROM events WHERE run_id='{ids[1]}' AND seq>=10")
    assert _only(_verify(path)) == (ids[1], 10, "truncated")


def test_a_run_whose_events_all_vanished_is_named(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    _tamper(path, f"DELETE FROM events WHERE run_id='{ids[0]}'")
    assert _only(_verify(path)) == (ids[0], 1, "removed")


def test_flipped_bytes_in_the_file_are_found(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    raw = path.read_bytes()
    needle = b'"MARKER-1!"'  # the output of step s0 in the second run, as stored JSON
    assert raw.count(needle) == 1
    path.write_bytes(raw.replace(needle, b'"MARKER-7!"'))
    run_id, seq, what = _only(_verify(path))
    assert run_id == ids[1] and what == "changed"
    events = asyncio.run(_events(path, ids[1]))
    assert events[seq - 1]["step"] == "s0" and events[seq - 1]["kind"] == "step_succeeded"


async def _events(path: Path, run_id: str) -> list[dict[str, object]]:
    store = open_store(path)
    try:
        return [e.to_json() for e in await store.events(run_id)]
    finally:
        await store.close()


def test_cli_exit_codes_and_json(db: tuple[Path, list[str]]) -> None:
    path, ids = db
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--all", "--store", str(path), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"] is True
    one = runner.invoke(app, ["audit", "verify", ids[0][:16], "--store", str(path)])
    assert one.exit_code == 0 and "1 runs, 10 events verified" in one.output
    _tamper(path, f"DELETE FROM events WHERE run_id='{ids[2]}' AND seq=7")
    bad = runner.invoke(app, ["audit", "verify", "--all", "--store", str(path), "--json"])
    assert bad.exit_code == 1
    (problem,) = json.loads(bad.output)["problems"]
    assert problem == {
        "run_id": ids[2],
        "seq": 7,
        "what": "removed",
        "detail": "expected event 7, found 8 next in the log",
    }
    usage = runner.invoke(app, ["audit", "verify", "--store", str(path)])
    assert usage.exit_code == 2


def test_export_has_what_an_auditor_needs(db: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, _ = db
    out = tmp_path / "audit.jsonl"
    result = CliRunner().invoke(
        app, ["audit", "export", "--since", "1h", "-o", str(out), "--store", str(path)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 30
    first = records[0]
    assert first["kind"] == "run_started" and first["payload"] == {"text": "marker-0"}
    assert first["flow"] == "shouts" and first["time"].endswith("Z")
    assert {"run_id", "seq", "hash", "prev_hash", "flow_fingerprint", "run_status"} <= set(first)
    finals = [r for r in records if r["kind"] == "run_succeeded"]
    assert [r["payload"] for r in finals] == ["MARKER-0!!!!", "MARKER-1!!!!", "MARKER-2!!!!"]

    async def none_since_now() -> list[object]:
        store = open_store(path)
        try:
            return list(await export(store, since=1e12))
        finally:
            await store.close()

    assert asyncio.run(none_since_now()) == []
