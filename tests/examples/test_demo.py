"""`erpoz demo`, the README's first command, end to end through the real console script with
the real local models: three runs (answered with citations, waiting for review after guards
acted, blocked), an intact audit, and the review approved from inside the demo's project."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cli._helpers import ERPOZ, cli_env

pytest.importorskip("sentence_transformers", reason="the demo needs erpoz[local]")


def erpoz(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ERPOZ), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_demo_answers_guards_waits_blocks_and_the_review_completes(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    env.pop("ERPOZ_STORE")  # the demo's project keeps its own store
    env.pop("OPENAI_BASE_URL", None)
    env["ERPOZ_BLOCK_REAL_MODELS"] = "0"
    root = tmp_path / "demo"
    res = erpoz("demo", "--dir", str(root), "--json", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ingest"]["ingested"] == report["ingest"]["files"] >= 8
    assert report["ingest"]["failed"] == []
    answered, guarded, blocked = report["runs"]
    assert answered["status"] == "succeeded"
    out = answered["output"]
    assert "2 years" in out["text"] and any("warranty.md" in s for s in out["sources"])
    assert out["grounded"] >= 0.6
    steps = [row["step"] for row in answered["timeline"]]
    assert steps == ["intake", "read_scan", "retrieve", "answer", "validate", "deliver"]
    assert any("lines read" in n for n in answered["timeline"][1]["notes"])  # OCR ran

    assert guarded["status"] == "waiting" and guarded["waiting"] == ["retrieve"]
    intake = " ".join(guarded["timeline"][0]["notes"])
    assert "redact pii.credit_card" in intake and "pseudonymize pii.email" in intake
    assert blocked["status"] == "failed" and "GuardBlocked" in blocked["error"]
    assert report["audit"]["ok"] and report["audit"]["runs"] == 3

    # the demo is a project: its commands work from inside it
    queue = json.loads(erpoz("review", "ls", "--json", cwd=root, env=env).stdout)
    assert [q["run_id"] for q in queue] == [guarded["run_id"]]
    assert queue[0]["grant"] and "INSTRUCTION_OVERRIDE" in queue[0]["evidence"]["masked"]
    events = json.loads(erpoz("events", guarded["run_id"], "--json", cwd=root, env=env).stdout)
    for e in events[1:]:  # the card number is only in the run's own input
        assert "4111 1111" not in json.dumps(e), e
    done = erpoz("review", "approve", guarded["run_id"], "--json", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert "5 business days" in result["output"]["text"]

    # a second demo run reuses the ingested corpus; a question in another language is refused
    # with a message that says why
    french = "Combien de temps faut-il pour obtenir un remboursement ?"
    res = erpoz("demo", "--dir", str(root), "-q", french, "--json", cwd=tmp_path, env=env)
    again = json.loads(res.stdout)
    assert again["ingest"]["unchanged"] == again["ingest"]["files"]
    (asked,) = again["runs"]
    assert asked["status"] == "failed" and "language:fr" in asked["error"]
    assert "English only" in asked["error"]
    assert os.path.exists(root / ".erpoz" / "memory.db")
