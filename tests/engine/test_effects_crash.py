"""The effects crash test in the suite: for each store and durability (SQLite ``sync``,
``batch`` and ``effects``, PostgreSQL ``sync`` and ``effects``), at least 100 runs of a flow
that calls a model and two side-effecting tools, drained by ``erpoz worker`` processes of which
50 are killed with SIGKILL at moments picked from the store (when a tool call's intent is on
record without its result, or after a random number of events). 500 runs and 250 kills in all;
``python -m bench.effects_crash`` is the long version.

Must hold: no run lost, no step success recorded twice, the key-honouring tool's effect applied
exactly once per call, every call a tool received journaled first and none received after its
result was on record, and no model request asked again once its reply was on record. Measured
(and printed): the repeats of the tool that ignores its key, and the model requests asked again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.effects_crash import crash_test

from pgtest import need_postgres

pytestmark = pytest.mark.slow

RUNS, KILLS = 100, 50


@pytest.mark.parametrize(
    "mode", ["sqlite-sync", "sqlite-batch", "sqlite-effects", "postgres", "postgres-effects"]
)
def test_effects_survive_sigkill_at_random_moments(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if mode.startswith("postgres"):
        need_postgres()
        pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")
    report = crash_test(mode, RUNS, KILLS, tmp=tmp_path)
    with capsys.disabled():
        print(f"\n{report}")
    assert report.runs >= RUNS and report.kills >= KILLS
    assert report.kills_in_tool >= KILLS // 2 - 1  # half the kills hit a tool call under way
    assert report.resumed_runs > 0, "no kill hit a run in flight: the test proved nothing"
    assert report.problems() == []
    # the tool that ignores its key is called again only for calls a kill cut off: at most
    # once per kill and run in flight, always with the same key (checked above)
    assert report.notify_repeats <= report.kills * 4
    assert report.pay_calls - report.pay_repeats == report.runs * 3  # one effect per call
