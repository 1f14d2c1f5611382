"""``erpoz migrate SRC DST`` as a subprocess: output, ``--json``, exit codes, and what it refuses.

The source stores hold real runs (see ``tests/store/test_migrate.py``); PostgreSQL cases use a
throw-away schema and skip (or fail, with ``ERPOZ_TEST_POSTGRES=required``) without a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.test_migrate import (
    RUNS,
    Stores,
    audit,
    hold,
    make_source,
    resume,
    rows,
    tamper,
)

from ._helpers import Cli


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    s = Stores(tmp_path)
    yield s
    s.drop()


def test_help_shows_an_example(cli: Cli) -> None:
    res = cli.ok("migrate", "--help", store=False)
    assert "Usage: erpoz migrate" in res.text
    assert "Example" in res.stdout and "--include-active" in res.stdout


def test_migrate_copies_verifies_and_a_second_run_copies_nothing(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")

    data = cli.ok("migrate", src, dst, "--json", store=False).json()
    assert data["ok"] and data["complete"] and not data["dry_run"]
    assert data["runs"] == {
        "copied": len(RUNS),
        "topped_up": 0,
        "already_there": 0,
        "continued_in_destination": 0,
        "skipped_active": 0,
    }
    assert data["events"] == len(rows(src, "events")) and data["blobs"] == 1
    assert data["cache"] == {"copied": 1, "already_there": 0}
    assert data["runs_verified"] == len(RUNS)
    assert data["heads_digest"] == audit(src).heads_digest
    assert data["events_per_second"] > 0

    res = cli.ok("migrate", src, dst, store=False)
    assert "copied 0 new runs: 0 events, 0 blobs, 0 cache rows" in res.text
    assert f"skipped: {len(RUNS)} runs already there; 1 cache row already there" in res.text
    assert data["heads_digest"] in res.text
    cli.ok("audit", "verify", "--all", "--store", dst, store=False)


def test_a_grown_run_is_topped_up(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    cli.ok("migrate", src, dst, store=False)
    assert resume(src, "run-5-review") == "succeeded"
    res = cli.ok("migrate", src, dst, store=False)
    assert "copied 0 new runs and topped up 1 run" in res.text
    assert "topped up: run-5-review" in res.text


def test_a_tampered_source_exits_1_naming_the_event_and_force_copies_it(
    cli: Cli, stores: Stores
) -> None:
    src = make_source(stores)
    tamper(src, "run-1-ok", 3)
    dst = stores.new("sqlite", "destination")

    res = cli("migrate", src, dst, store=False)
    assert res.code == 1, str(res)
    assert "does not verify, so nothing was copied: run run-1-ok, event 3: changed" in res.text
    assert "--force" in res.text
    assert not Path(dst).exists()
    res = cli("migrate", src, dst, "--json", store=False)
    assert res.code == 1
    data = res.json()
    assert (data["ok"], data["error"], data["runs"]) == (False, "source", ["run-1-ok"])
    assert data["problems"][0]["seq"] == 3

    res = cli.ok("migrate", src, dst, "--force", store=False)
    assert "copied with the source's problem (--force): run run-1-ok, event 3" in res.text
    assert cli("audit", "verify", "--all", "--store", dst, store=False).code == 1


def test_a_conflicting_run_exits_4_naming_it(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    cli.ok("migrate", src, dst, store=False)
    assert resume(src, "run-5-review", "approve") == "succeeded"
    assert resume(dst, "run-5-review", "reject") == "failed"

    res = cli("migrate", src, dst, store=False)
    assert res.code == 4, str(res)
    assert "run run-5-review: its event" in res.text and "nothing was written" in res.text
    res = cli("migrate", src, dst, "--json", store=False)
    assert res.code == 4
    assert (res.json()["error"], res.json()["runs"]) == ("conflict", ["run-5-review"])


def test_a_dry_run_says_what_it_would_copy_and_creates_nothing(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    dst = stores.new("sqlite", "destination")
    res = cli.ok("migrate", src, dst, "--dry-run", store=False)
    assert f"would copy {len(RUNS)} new runs: {len(rows(src, 'events'))} events" in res.text
    assert "destination verified" not in res.text
    assert not Path(dst).exists()


def test_runs_a_live_process_owns_are_reported_as_left_behind(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    owner = hold(src, "run-9-live")
    dst = stores.new("sqlite", "destination")
    res = cli.ok("migrate", src, dst, store=False)
    assert "left behind: 1 run owned by a live process: run-9-live" in res.text
    assert owner in res.text and "--include-active" in res.text
    data = cli.ok("migrate", src, dst, "--json", store=False).json()
    assert not data["complete"] and data["skipped_active"][0]["where"] == "source"
    data = cli.ok("migrate", src, dst, "--include-active", "--json", store=False).json()
    assert data["complete"] and data["runs"]["copied"] == 1


def test_wrong_usage_exits_2(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    res = cli("migrate", src, src, store=False)
    assert res.code == 2 and "name another destination" in res.text
    res = cli("migrate", "memory", src, store=False)
    assert res.code == 2 and "in-memory store" in res.text
    res = cli("migrate", src, stores.new("sqlite", "d"), "--batch", "0", store=False)
    assert res.code == 2


def test_a_source_path_that_does_not_exist_exits_4_and_is_not_created(
    cli: Cli, stores: Stores
) -> None:
    missing = stores.tmp / "typo.db"
    res = cli("migrate", missing, stores.new("sqlite", "d"), store=False)
    assert res.code == 4 and "does not exist; check the path" in res.text
    assert not missing.exists()


def test_the_same_file_under_another_name_exits_4(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    res = cli("migrate", src, f"sqlite:///{src}", store=False)
    assert res.code == 4 and "are the same store" in res.text


def test_sqlite_into_postgres_then_audit_verify_there(cli: Cli, stores: Stores) -> None:
    src = make_source(stores)
    pg = stores.new("postgres", "destination")
    data = cli.ok("migrate", src, pg, "--json", store=False).json()
    assert data["runs"]["copied"] == len(RUNS)
    assert data["destination"].startswith("postgresql://")
    res = cli.ok("audit", "verify", "--all", "--store", pg, "--json", store=False)
    assert res.json()["ok"] and res.json()["heads_digest"] == data["heads_digest"]


def test_an_unreachable_postgres_exits_4_saying_so(cli: Cli, stores: Stores) -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")
    src = make_source(stores)
    res = cli("migrate", src, "postgresql://postgres:s3cret@127.0.0.1:1/test", store=False)
    assert res.code == 4, str(res)
    assert "cannot reach PostgreSQL" in res.text and "s3cret" not in res.text
