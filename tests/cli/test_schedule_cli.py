"""``erpoz schedule`` as a user runs it (in this process): add, list, fire a backfill, pause,
resume, remove; the project file's ``schedules:``; exit codes and errors that say why."""

from __future__ import annotations

from pathlib import Path

from ._helpers import TICKET, TRIAGE, Cli


def test_a_schedule_from_add_to_rm(cli: Cli) -> None:
    made = cli.ok(
        "schedule",
        "add",
        "nightly",
        TRIAGE,
        "--cron",
        "0 2 * * *",
        "-i",
        f"ticket={TICKET}",
        "--json",
    ).json()
    assert (made["name"], made["catchup"], made["origin"]) == ("nightly", "latest", "cli")
    assert made["inputs"] == {"ticket": TICKET} and made["next_tick"].endswith("T02:00:00Z")
    assert cli.ok("schedule", "ls", "--json").json()[0]["name"] == "nightly"
    assert "nightly" in cli.ok("schedule", "ls").text
    fired = cli.ok("schedule", "tick", "--at", "2030-01-03T02:30:00Z", "--json").json()
    assert [(t["run_id"], t["state"]) for t in fired] == [
        ("s-nightly-20300103T020000Z", "fired")
    ]  # latest: the ticks before it are skipped
    assert cli.ok("schedule", "tick", "--at", "2030-01-03T02:30:00Z", "--json").json() == []
    shown = cli.ok("schedule", "show", "nightly", "--json").json()
    assert shown["fired"] == 1 and shown["skipped"] > 0
    assert shown["next_tick"] == "2030-01-04T02:00:00Z"
    assert [t["state"] for t in shown["ticks"]] == ["fired"]
    run = cli.show("s-nightly-20300103T020000Z")
    assert run["status"] == "queued" and run["queue"] == "default"
    stats = cli.ok("worker", "--burst", "--json", "--poll", "0.05", "--no-schedules").json()
    assert stats["succeeded"] == 1
    assert cli.ok("schedule", "pause", "nightly", "--json").json()["paused"] is True
    assert cli.ok("schedule", "tick", "--at", "2030-02-01T00:00:00Z", "--json").json() == []
    resumed = cli.ok("schedule", "resume", "nightly", "--json").json()
    assert resumed["paused"] is False and resumed["next_tick"] == "2030-01-04T02:00:00Z"
    assert cli.ok("schedule", "rm", "nightly", "--json").json() == {
        "name": "nightly",
        "removed": True,
    }
    assert cli.ok("schedule", "ls", "--json").json() == []


def test_bad_schedules_exit_2_saying_why(cli: Cli) -> None:
    base = ["schedule", "add", "s", TRIAGE, "-i", f"ticket={TICKET}"]
    for extra, words in (
        (["--cron", "0 25 * * *"], "cron '0 25 * * *'"),
        (["--cron", "* *"], "expected 5 fields"),
        (["--cron", "0 2 * * *", "--catchup", "most"], "catchup 'most'"),
        (["--cron", "0 2 * * *", "--timezone", "Mars/Base"], "unknown time zone"),
        (["--cron", "0 2 * * *", "-q", "two words"], "queue name 'two words'"),
    ):
        res = cli(*base, *extra)
        assert res.code == 2 and words in res.text, str(res)
    missing = cli("schedule", "add", "s", TRIAGE, "--cron", "0 2 * * *")
    assert missing.code == 2 and "missing required input 'ticket'" in missing.text
    cli.ok(*base, "--cron", "0 2 * * *")
    twice = cli(*base, "--cron", "0 3 * * *")
    assert twice.code == 2 and "exists" in twice.text and "--replace" in twice.text
    assert cli.ok(*base, "--cron", "0 3 * * *", "--replace", "--json").json()["cron"] == "0 3 * * *"
    for cmd in ("rm", "show", "pause", "resume"):
        res = cli("schedule", cmd, "nope")
        assert res.code == 2 and "no schedule named 'nope'" in res.text, str(res)
    bad_at = cli("schedule", "tick", "--at", "tomorrow")
    assert bad_at.code == 2 and "ISO 8601" in bad_at.text


def test_the_project_files_schedules_sync_and_name_the_line_of_a_mistake(
    cli: Cli, tmp_path: Path
) -> None:
    good = tmp_path / "erpoz.yaml"
    good.write_text(
        "schedules:\n"
        "  nightly:\n"
        f"    flow: {TRIAGE}\n"
        "    cron: '0 2 * * *'\n"
        f"    inputs: {{ticket: '{TICKET}'}}\n"
        "    catchup: all\n"
    )
    assert cli.ok("schedule", "sync", "-c", good, "--json").json()["added"] == ["nightly"]
    assert cli.ok("schedule", "sync", "-c", good, "--json").json()["kept"] == ["nightly"]
    made = cli.ok("schedule", "show", "nightly", "--json").json()
    assert (made["origin"], made["catchup"]) == ("config", "all")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("'0 2 * * *'", "'0 2 * *'"))
    res = cli("schedule", "sync", "-c", bad)
    assert res.code == 2 and f"{bad}:4:" in res.text and "expected 5 fields" in res.text
    worker = cli("worker", "--burst", "-c", bad)
    assert worker.code == 2 and f"{bad}:4:" in worker.text
