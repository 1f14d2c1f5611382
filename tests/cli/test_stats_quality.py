"""Quality statistics as a view over the event log (``erpoz.observe``) and ``erpoz stats
quality``: guard scores recorded by real runs, read back per model × step × guard, with the
rolling pass rate and its drops below the threshold counted as the live monitor counts them."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.guards import QualityAlert, QualityMonitor, Verdict
from erpoz.observe import QualityReport, QualityRow, quality_stats, store_quality
from erpoz.store import Event, open_store

from ._helpers import Cli

# window 4, threshold 0.75, 4 samples: the rolling rate drops to 0.5 at check 6 (alert 1),
# is back at 0.75 at check 9 (re-armed) and drops again at check 12 (alert 2).
PASSES = [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0]
SCORES = [1.0 if p else 0.4 for p in PASSES]
SETTINGS: dict[str, Any] = {"window": 4, "threshold": 0.75, "min_samples": 4}


def decided(score: float, **who: str) -> dict[str, Any]:
    """A guard_decided event as the guardrails record it."""
    return {
        "checkpoint": "model_output" if "model" in who else "tool_result",
        "action": "log",
        "rule": None,
        "passed": True,
        "scores": {"toxicity": score, "pii": 1.0},
        "findings": [],
        "ms": 0.1,
        **who,
    }


@step
async def judge(score: float, ctx: Context) -> float:
    """One model answer checked by two guards."""
    ctx.emit("guard_decided", decided(score, model="m1"))
    return score


@step
async def fetch(scores: list[float], ctx: Context) -> int:
    """A tool result checked once, and the alert the live monitor recorded."""
    ctx.emit("guard_decided", decided(1.0, tool="lookup"))
    ctx.emit(
        "quality_alert",
        {
            "step": "judge[5]",
            "subject": "m1",
            "guard": "toxicity",
            "checkpoint": "model_output",
            "pass_rate": 0.5,
            "threshold": 0.75,
            "window": 4,
        },
    )
    return len(scores)


def scored_flow() -> Flow:
    flow = Flow("scored", inputs={"scores": list[float]})
    judged = flow.map(judge, id="judge", over=flow.input("scores"), item="score", concurrency=1)
    flow.add(fetch, scores=judged)
    return flow


def record(db: Path, *batches: list[float]) -> list[str]:
    """One run per batch of scores, in order, in the SQLite store ``db``."""

    async def main() -> list[str]:
        store = open_store(db)
        try:
            engine = Engine(store)
            ids = []
            for batch in batches:
                result = await engine.run(scored_flow(), {"scores": batch})
                assert result.status == "succeeded", result
                ids.append(result.run_id)
            return ids
        finally:
            await store.close()

    return asyncio.run(main())


def read(db: Path, **kw: Any) -> QualityReport:
    async def main() -> QualityReport:
        store = open_store(db)
        try:
            return await store_quality(store, **kw)
        finally:
            await store.close()

    return asyncio.run(main())


def row(
    report: QualityReport, model: str | None, step_: str | None, guard: str | None
) -> QualityRow:
    [found] = [r for r in report.rows if (r.model, r.step, r.guard) == (model, step_, guard)]
    return found


def test_pass_rates_rolling_rate_and_crossings_across_runs(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    record(db, SCORES[:6], SCORES[6:])  # the window carries on from one run to the next
    report = read(db, **SETTINGS)
    assert report.runs == 2 and report.checks == 12 * 2 + 2 * 2  # two guards score each check
    tox = row(report, "m1", "judge", "toxicity")
    assert tox.checks == 12 and tox.passes == 8
    assert tox.pass_rate == pytest.approx(8 / 12)
    assert tox.mean_score == pytest.approx((8 + 4 * 0.4) / 12)
    assert tox.rolling_pass_rate == 0.5 and tox.below_threshold
    assert [c["pass_rate"] for c in tox.crossings] == [0.5, 0.5]
    assert tox.crossings[0]["run_id"] != tox.crossings[1]["run_id"]
    assert tox.alerts_recorded == 2  # each run's fetch step recorded one for judge[5]
    assert tox.checkpoints == ("model_output",) and tox.first_ts < tox.last_ts
    pii = row(report, "m1", "judge", "pii")
    assert pii.pass_rate == 1.0 and pii.crossings == () and not pii.below_threshold
    tool = row(report, "lookup", "fetch", "toxicity")
    assert tool.checks == 2 and tool.checkpoints == ("tool_result",)
    assert report.rows[0] is tox  # worst first


def test_a_drop_counts_only_once_the_window_holds_min_samples(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    record(db, SCORES)
    assert row(read(db), "m1", "judge", "toxicity").crossings == ()  # 12 checks < 20 samples
    # over all 12 checks the pass rate is 4/6 after check 6, 6/8 after 8, 8/11 after 11
    early = row(read(db, window=50, threshold=0.75, min_samples=2), "m1", "judge", "toxicity")
    assert [c["pass_rate"] for c in early.crossings] == [0.6667, 0.7273]
    late = row(read(db, window=50, threshold=0.75, min_samples=8), "m1", "judge", "toxicity")
    assert [c["pass_rate"] for c in late.crossings] == [0.7273]


def test_crossings_match_the_live_quality_monitor() -> None:
    monitor = QualityMonitor(QualityAlert(window=4, below=0.75, min_samples=4))
    live = 0
    events = []
    for i, score in enumerate(SCORES):
        verdict = Verdict("model_output", "log", None, (), {"toxicity": score}, 0.0)
        live += len(monitor.add(verdict, step="judge", subject="m1"))
        data = decided(score, model="m1")
        events.append(
            Event("r1", i + 1, 1000.0 + i, "guard_decided", "judge", 1, data, None, "", "")
        )
    report = quality_stats({"r1": events}, **SETTINGS)
    assert len(row(report, "m1", "judge", "toxicity").crossings) == live == 2


def test_grouping_by_one_dimension(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    record(db, SCORES)
    by_model = read(db, by=["model"], **SETTINGS)
    assert {(r.model, r.step, r.guard) for r in by_model.rows} == {
        ("m1", None, None),
        ("lookup", None, None),
    }
    assert row(by_model, "m1", None, None).checks == 24
    by_guard = read(db, by=["guard"], **SETTINGS)
    assert sorted(r.guard or "" for r in by_guard.rows) == ["pii", "toxicity"]
    with pytest.raises(ValueError, match="model, step, guard"):
        quality_stats({}, by=["tenant"])


# --- the command ----------------------------------------------------------------------------
def test_stats_quality_json(cli: Cli) -> None:
    record(cli.store, SCORES)
    data = cli.ok(
        "stats", "quality", "--window", "4", "--threshold", "0.75", "--min-samples", "4", "--json"
    ).json()
    assert data["runs"] == 1 and data["checks"] == 26 and data["window"] == 4
    assert data["by"] == ["model", "step", "guard"]
    tox = next(r for r in data["rows"] if (r["model"], r["guard"]) == ("m1", "toxicity"))
    assert tox["step"] == "judge" and tox["checks"] == 12 and tox["pass_rate"] == 0.6667
    assert tox["alerts_computed"] == 2 and tox["alerts_recorded"] == 1 and tox["below_threshold"]
    assert data["rows"][0] == tox
    by_model = cli.ok("stats", "quality", "--by", "model", "--since", "1h", "--json").json()
    assert sorted(r["model"] for r in by_model["rows"]) == ["lookup", "m1"]


def test_stats_quality_table(cli: Cli) -> None:
    record(cli.store, SCORES)
    res = cli.ok("stats", "quality", "--window", "4", "--threshold", "0.75")
    assert "26 guard checks" in res.text and "1 of 4 rows below the threshold" in res.text


def test_stats_quality_on_an_empty_store_says_so(cli: Cli) -> None:
    res = cli.ok("stats", "quality")
    assert "0 guard checks" in res.text and "no guard checks to report" in res.text
    assert cli.ok("stats", "quality", "--json").json()["rows"] == []


def test_stats_quality_usage_errors(cli: Cli) -> None:
    assert "--by" in cli.ok("stats", "quality", "--by", "tenant", code=2).stderr
    assert "--since" in cli.ok("stats", "quality", "--since", "5 fortnights", code=2).stderr
    cli.ok("stats", "quality", "--threshold", "2", code=2)
