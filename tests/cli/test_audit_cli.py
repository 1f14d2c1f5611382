"""``erpoz audit keygen | checkpoint | verify --checkpoint | prove | check | export --proofs``
as a user runs them (subprocesses), with an erpoz.yaml that keeps the key and the checkpoints
outside the store, and a real HTTP witness."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.witness import Witness
from erpoz.audit._proofs import verify_inclusion
from erpoz.store import leaf_hash

from ._helpers import TICKET, TRIAGE, Cli


@pytest.fixture
def witness() -> Iterator[Witness]:
    w = Witness()
    yield w
    w.close()


def project(cli: Cli, extra: str = "") -> Path:
    """Keys made with keygen, and an erpoz.yaml naming them and a checkpoint log."""
    keys = cli.tmp_path / "keys"
    made = cli.ok("audit", "keygen", "-o", keys / "audit.key", "--json", store=False).json()
    assert made["public_key"] == str(keys / "audit.pub") and len(made["key_id"]) == 16
    config = cli.tmp_path / "erpoz.yaml"
    config.write_text(
        f"audit:\n  key: {keys / 'audit.key'}\n  public_key: {keys / 'audit.pub'}\n"
        f"  checkpoints: {cli.tmp_path / 'checkpoints.jsonl'}\n{extra}"
    )
    cli.env["ERPOZ_CONFIG"] = str(config)
    return keys


def test_help_of_every_audit_command_shows_an_example(cli: Cli) -> None:
    for command in ("keygen", "checkpoint", "verify", "prove", "check", "export"):
        res = cli.ok("audit", command, "--help", store=False)
        assert "Example:" in res.stdout and "erpoz audit" in res.stdout, command


def test_a_user_checkpoints_proves_and_an_auditor_checks_offline(cli: Cli) -> None:
    keys = project(cli)
    assert stat.S_IMODE((keys / "audit.key").stat().st_mode) == 0o600
    first = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--json", "--no-progress").json()
    cp = cli.ok("audit", "checkpoint", "--json").json()
    assert cp["size"] > 0 and cp["written"] == [str(cli.tmp_path / "checkpoints.jsonl")]
    cli.ok("run", TRIAGE, "-i", "ticket=where is my parcel", "--no-progress")

    res = cli.ok("audit", "verify", "--all", "--checkpoint", cli.tmp_path / "checkpoints.jsonl")
    assert "ok: 2 runs" in res.text and "the log extends it" in res.text
    report = cli.ok(
        "audit", "verify", first["run_id"], "--checkpoint", cli.tmp_path / "checkpoints.jsonl",
        "--json",
    ).json()  # fmt: skip
    assert report["ok"] and report["checkpoints"][0]["ok"]

    bundle = cli.tmp_path / "run.proof.json"
    cli.ok("audit", "prove", first["run_id"][:16], "-o", bundle)  # a unique prefix
    doc = json.loads(bundle.read_text())
    assert doc["run_id"] == first["run_id"] and doc["events"][-1]["kind"] == "run_succeeded"
    auditor = Cli(cli.tmp_path / "auditor")  # no project, no store: the bundle and a key
    (cli.tmp_path / "auditor").mkdir()
    res = auditor.ok("audit", "check", bundle, "--public-key", keys / "audit.pub", store=False)
    assert (
        "ok: run" in res.text and "succeeded at event" in res.text and "the whole run" in res.text
    )

    other = cli.ok("audit", "keygen", "-o", cli.tmp_path / "other.key", store=False)
    assert other.code == 0
    res = auditor.ok(
        "audit", "check", bundle, "--public-key", cli.tmp_path / "other.pub", store=False, code=1
    )
    assert "signed by another key" in res.text
    doc["events"][2]["data"] = doc["events"][2]["data"].replace("}", ',"x":1}')
    forged = cli.tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    res = auditor.ok(
        "audit", "check", forged, "--public-key", keys / "audit.pub", store=False, code=1
    )
    assert "event 3:" in res.text and "does not match its hash" in res.text
    res = auditor.ok(
        "audit", "check", cli.tmp_path / "erpoz.yaml", "--public-key", keys / "audit.pub",
        store=False, code=2,
    )  # fmt: skip
    assert "not JSON" in res.text


def test_verify_names_a_rewrite_the_database_hides_from_itself(cli: Cli) -> None:
    """Triggers dropped, an output rewritten, the chain recomputed: without the checkpoint the
    tree still tells (its leaf records the old hash); with it the root does too."""
    project(cli)
    run = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--json", "--no-progress").json()
    cli.ok("audit", "checkpoint")
    with sqlite3.connect(cli.store) as db:
        db.execute("DROP TRIGGER events_no_update")
        rows = db.execute(
            "SELECT seq, ts, kind, step, attempt, data, payload FROM events WHERE run_id = ? "
            "ORDER BY seq",
            (run["run_id"],),
        ).fetchall()
        from erpoz.store import GENESIS, chain_hash

        prev = GENESIS
        for seq, ts, kind, step, attempt, data, payload in rows:
            if kind == "run_succeeded":
                payload = json.dumps("We refunded nothing.")
            h = chain_hash(prev, run["run_id"], seq, ts, kind, step, attempt, data, payload)
            db.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE run_id = ? "
                "AND seq = ?",
                (payload, prev, h, run["run_id"], seq),
            )
            prev = h
        db.execute("UPDATE runs SET head_hash = ? WHERE run_id = ?", (prev, run["run_id"]))
    res = cli.ok("audit", "verify", "--all", "--json", code=1).json()
    assert [(p["run_id"], p["what"]) for p in res["problems"]] == [(run["run_id"], "changed")]
    assert "Merkle tree" in res["problems"][0]["detail"]
    res = cli.ok(
        "audit", "verify", "--all", "--checkpoint", cli.tmp_path / "checkpoints.jsonl", code=1
    )
    assert "FAILED" in res.text and "no longer hash to the root signed" in res.text


def test_export_with_proofs_leads_every_record_to_the_checkpoint(cli: Cli) -> None:
    project(cli)
    cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--no-progress")
    out = cli.tmp_path / "audit.jsonl"
    cli.ok("audit", "export", "--since", "1h", "--proofs", "-o", out)
    head, *records = [json.loads(line) for line in out.read_text().splitlines()]
    assert head["record"] == "checkpoint"
    cp = head["checkpoint"]
    root = bytes.fromhex(cp["root"])
    assert len(records) == cp["size"] > 5
    for r in records:
        leaf = leaf_hash(r["run_id"], r["seq"], r["hash"])
        assert r["leaf"] == leaf.hex()
        path = [bytes.fromhex(h) for h in r["inclusion"]]
        assert verify_inclusion(r["leaf_index"], cp["size"], leaf, path, root)
    # the export's first line is a checkpoint `verify` accepts
    cli.ok("audit", "verify", "--all", "--checkpoint", out.with_name("head.jsonl"), code=2)
    (out.with_name("head.jsonl")).write_text(json.dumps(head) + "\n")
    cli.ok("audit", "verify", "--all", "--checkpoint", out.with_name("head.jsonl"))


def test_automatic_checkpoints_while_a_flow_runs_and_a_witness_keeps_them(
    cli: Cli, witness: Witness
) -> None:
    project(cli, f"  witness: {witness.url}\n  every_events: 5\n")
    cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--no-progress")
    kept = [json.loads(line) for line in (cli.tmp_path / "checkpoints.jsonl").read_text().split()]
    assert kept and kept == witness.received
    verified = cli.ok("audit", "verify", "--all", "--json").json()
    assert kept[-1]["size"] == verified["tree"]["size"], "the last covers the whole run"

    witness.status = 503  # the witness is away: the run goes on, a warning says so
    res = cli.ok("run", TRIAGE, "-i", "ticket=hello", "--no-progress")
    assert "audit checkpoint not written" in res.text and "HTTP 503" in res.text
    res = cli.ok("audit", "checkpoint", code=1)
    assert "refused the checkpoint: HTTP 503" in res.text


def test_wrong_usage_exits_2_saying_what_is_missing(cli: Cli) -> None:
    cli.env["ERPOZ_CONFIG"] = ""
    cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--no-progress")
    res = cli.ok("audit", "checkpoint", code=2)
    assert "no signing key" in res.text and "erpoz audit keygen" in res.text
    key = cli.tmp_path / "a.key"
    cli.ok("audit", "keygen", "-o", key, store=False)
    res = cli.ok("audit", "keygen", "-o", key, store=False, code=2)
    assert "exists: pass --force" in res.text
    res = cli.ok("audit", "checkpoint", "--key", key, code=2)
    assert "nowhere to keep the checkpoint" in res.text
    cli.ok("audit", "checkpoint", "--key", key, "--out", f"{cli.tmp_path / 'cps'}/")
    (found,) = (cli.tmp_path / "cps").glob("checkpoint-*.json")
    res = cli.ok("audit", "verify", "--all", "--checkpoint", found, code=2)
    assert "--public-key" in res.text
    cli.ok(
        "audit", "verify", "--all", "--checkpoint", found, "--public-key", key.with_suffix(".pub")
    )
    (cli.tmp_path / "erpoz.yaml").write_text("audit:\n  key: a.key\n  every_events: 5\n")
    cli.env["ERPOZ_CONFIG"] = str(cli.tmp_path / "erpoz.yaml")
    res = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--no-progress", code=2)
    assert "erpoz.yaml:3" in res.text and "need somewhere to go" in res.text
