"""The issue's reproduction, as a user runs it: ``erpoz run`` of a step that calls a
side-effecting tool, SIGKILL, ``erpoz runs resume``; on SQLite ``sync`` and ``batch``.

The kill moment comes from the store (the tool call's result on record; its intent on record
and the outside system's record of the call), never from a sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._helpers import ERPOZ, FIXTURES, Cli

pytestmark = pytest.mark.slow


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def _query(db: Path, sql: str) -> list[Any]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []  # not there yet


def _setup(tmp_path: Path) -> Cli:
    shutil.copy(FIXTURES / "effectsflow.py", tmp_path / "effectsflow.py")
    config = tmp_path / "erpoz.yaml"
    config.write_text(
        "tools: ['effectsflow:charge']\n"
        "policy:\n  rules:\n    - {name: billing may charge, tool: charge, action: allow}\n",
        encoding="utf-8",
    )
    cli = Cli(tmp_path, real=True)  # each command a process of its own, as a user runs it
    cli.env["ERPOZ_CONFIG"] = str(config)
    return cli


def _run_until(
    cli: Cli,
    durability: str,
    spawned: list[subprocess.Popen[bytes]],
    ready: Callable[[], bool],
    **env: str,
) -> str:
    """Start ``erpoz run`` and SIGKILL it once ``ready()``; returns the run id."""
    flow = str(cli.tmp_path / "effectsflow.py:flow")
    store = ["--store", str(cli.store), "--durability", durability]
    proc = subprocess.Popen(
        [str(ERPOZ), "run", flow, "-i", "amount=5", *store, "--json"],
        cwd=cli.tmp_path,
        env={**cli.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spawned.append(proc)
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"erpoz run ended (exit {proc.returncode}) before the kill"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    return str(_query(cli.store, "SELECT run_id FROM runs")[0][0])


def _resume(cli: Cli, run_id: str) -> list[dict[str, Any]]:
    res = cli("runs", "resume", run_id, "--json", timeout=60)
    assert res.code == 0, str(res)
    assert res.json()["status"] == "succeeded" and res.json()["output"] == "charged 5"
    return cli.events(run_id)


def _ledger(cli: Cli) -> tuple[list[str], int]:
    db = cli.tmp_path / "ledger.db"
    calls = [k for (k,) in _query(db, "SELECT key FROM calls ORDER BY at")]
    return calls, _query(db, "SELECT count(*) FROM charges")[0][0]


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_a_kill_after_the_call_does_not_charge_again(
    tmp_path: Path, spawned: list[Any], durability: str
) -> None:
    cli = _setup(tmp_path)
    result_on_record = "SELECT 1 FROM events WHERE kind='tool_called'"
    run_id = _run_until(
        cli,
        durability,
        spawned,
        lambda: bool(_query(cli.store, result_on_record)),
        EFFECTS_STEP_S="60",
    )
    events = _resume(cli, run_id)
    calls, charges = _ledger(cli)
    assert len(calls) == 1 and charges == 1  # the resumed step got the recorded result
    kinds = [e["kind"] for e in events]
    assert kinds.count("tool_called") == 1 and kinds.count("tool_reused") == 1
    (reused,) = [e for e in events if e["kind"] == "tool_reused"]
    assert reused["data"]["idempotency_key"] == calls[0]


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_a_kill_during_the_call_repeats_it_once_with_the_same_key(
    tmp_path: Path, spawned: list[Any], durability: str
) -> None:
    cli = _setup(tmp_path)

    def charged_but_not_answered() -> bool:
        intent = _query(cli.store, "SELECT 1 FROM events WHERE kind='tool_intent'")
        return bool(intent) and bool(_query(tmp_path / "ledger.db", "SELECT 1 FROM calls"))

    run_id = _run_until(cli, durability, spawned, charged_but_not_answered, EFFECTS_TOOL_S="60")
    events = _resume(cli, run_id)
    calls, charges = _ledger(cli)
    assert len(calls) == 2 and calls[0] == calls[1]  # called again, with the same key …
    assert charges == 1  # … which the outside system honoured: charged once
    intents = [e["data"] for e in events if e["kind"] == "tool_intent"]
    assert [(i["idempotency_key"], i.get("repeat")) for i in intents] == [
        (calls[0], None),
        (calls[0], 1),
    ]
    (called,) = [e["data"] for e in events if e["kind"] == "tool_called"]
    assert called["repeat"] == 1 and called["status"] == "ok"
