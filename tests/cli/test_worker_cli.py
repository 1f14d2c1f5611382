"""``erpoz submit`` and ``erpoz worker`` as a user runs them: real processes, a SQLite file."""

from __future__ import annotations

import signal
import subprocess

from ._helpers import ERPOZ, REPO, TICKET, TRIAGE, Cli


def test_submitted_runs_are_run_by_a_worker_and_listed(cli: Cli) -> None:
    ids = [
        cli.ok("submit", TRIAGE, "-i", f"ticket={TICKET}", "-t", "tenant=acme", "--json").json()[
            "run_id"
        ]
        for _ in range(3)
    ]
    queued = cli.ok("runs", "ls", "--status", "queued", "--json").json()
    assert sorted(r["run_id"] for r in queued) == sorted(ids)
    stats = cli.ok("worker", "--burst", "--json", "--poll", "0.05").json()
    assert (stats["claimed"], stats["succeeded"], stats["errors"]) == (3, 3, 0)
    assert stats["claim_ms_p50"] is not None
    for run_id in ids:
        shown = cli.show(run_id)
        assert shown["status"] == "succeeded" and shown["tenant"] == "acme"
        assert shown["queue"] == "default" and shown["claims"] == 1
    assert cli.ok("audit", "verify", "--all").code == 0


def test_submit_wait_follows_the_run_a_worker_runs(cli: Cli) -> None:
    worker = subprocess.Popen(
        [str(ERPOZ), "worker", "--store", str(cli.store), "--poll", "0.05", "--quiet"],
        cwd=REPO,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        res = cli.ok("submit", TRIAGE, "-i", f"ticket={TICKET}", "--wait", "--json", timeout=120)
        assert res.json()["status"] == "succeeded"
        assert "waiting for a worker" in res.text
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "stopping" in err and "1 succeeded" in " ".join(err.split())


def test_bad_usage_is_refused_with_a_reason(cli: Cli) -> None:
    memory = cli("worker", "--store", "memory", store=False)
    assert memory.code == 2 and "not 'memory'" in memory.text
    bad_queue = cli("submit", TRIAGE, "-i", f"ticket={TICKET}", "-q", "two words")
    assert bad_queue.code == 2 and "queue name 'two words'" in bad_queue.text
    bad_input = cli("submit", TRIAGE, "-i", "nope=1")
    assert bad_input.code == 2 and "no input(s) nope" in bad_input.text
    unreachable = cli(
        "worker", "--burst", "--store", "postgresql://nobody@127.0.0.1:1/x", store=False
    )
    assert unreachable.code == 4 and "cannot reach PostgreSQL" in unreachable.text
    assert cli("worker", "--executor", "spark", "--burst").code == 2
    assert cli.ok("runs", "ls", "--json").json() == []  # nothing was half-recorded
