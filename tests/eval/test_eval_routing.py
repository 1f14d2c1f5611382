"""``erpoz eval routing`` on small slices: a synthetic data set written inline (always), and the
first questions of RouteLLM's real data (when ../shared/data/routellm-gsm8k is there). The
figures must be consistent -- the oracle at least as good as any router, random routing close
to the straight line, costs adding up -- but no test asserts a benchmark figure."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from erpoz.cli_eval import eval_app
from erpoz.eval import (
    ROUTERS,
    Prices,
    Report,
    evaluate_routing,
    find_data,
    load_routellm_gsm8k,
    oracle_accuracy,
)
from erpoz.eval.routing import Point, apgr, cpt
from eval._data import REAL_DATA, HashEmbed, write_routellm

pytest.importorskip("numpy", reason="the evaluation needs numpy (erpoz[local])")

app = typer.Typer()
app.add_typer(eval_app, name="eval")


@app.callback()
def _root() -> None:
    """The erpoz command, as cli.py mounts eval_app."""


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["eval", "routing", *args])
    return result


def check_consistent(report: dict[str, Any] | Report) -> None:
    """What must hold of any report, whatever the data."""
    doc = report if isinstance(report, dict) else report.to_json()
    weak, strong = doc["weak_accuracy"], doc["strong_accuracy"]
    oracle = doc["oracle"]
    assert oracle[0]["accuracy"] == pytest.approx(weak)
    assert all(a["accuracy"] <= b["accuracy"] for a, b in itertools.pairwise(oracle))
    n = doc["questions"]
    for curve in doc["curves"]:
        for p in curve["points"]:
            # the oracle is at least as good at the same share (it only rises with the share)
            above = [o["accuracy"] for o in oracle if o["strong_share"] >= p["strong_share"] - 1e-9]
            assert p["accuracy"] <= above[0] + 1e-9, (curve["router"], p)
            assert p["pgr"] == pytest.approx((p["accuracy"] - weak) / (strong - weak))
            assert 0 <= p["strong_share"] <= 1
            assert p["strong_calls"] == pytest.approx(p["strong_share"] * n)
            assert p["weak_calls"] + p["strong_calls"] >= n  # every question made a call
            assert p["cost_usd"] >= doc["weak_only_cost_usd"] * p["weak_calls"] / n - 1e-9
        if curve["cpt50"] is not None and curve["cpt80"] is not None:
            assert curve["cpt50"] <= curve["cpt80"]


# --- metrics on their own ----------------------------------------------------------------------
def pt(share: float, acc: float, weak: float = 0.6, strong: float = 0.8) -> Point:
    return Point("", None, share, acc, (acc - weak) / (strong - weak), 0.0, 0, 0)


def test_apgr_and_cpt_follow_routellm() -> None:
    straight = [pt(0, 0.6), pt(0.5, 0.7), pt(1, 0.8)]
    assert apgr(straight, 0.6, 0.8) == pytest.approx(0.5)
    assert cpt(straight, 0.5) == pytest.approx(0.5)
    assert cpt(straight, 0.8) == pytest.approx(0.8)
    bowed = [pt(0, 0.6), pt(0.2, 0.76), pt(1, 0.8)]
    assert apgr(bowed, 0.6, 0.8) == pytest.approx((0.2 * 0.08 + 0.8 * 0.18) / 0.2)
    assert cpt(bowed, 0.8) == pytest.approx(0.2)
    assert cpt([pt(0, 0.6), pt(1, 0.7)], 0.8) is None


# --- the Python API on the synthetic slice
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_routellm(tmp_path_factory.mktemp("gsm8k"), n=61, contaminated=1)


def test_every_router_on_a_synthetic_slice(synthetic: Path) -> None:
    dataset = load_routellm_gsm8k(synthetic)
    assert len(dataset.items) == 60 and dataset.contaminated_removed == 1
    embedder = HashEmbed()
    report = asyncio.run(
        evaluate_routing(dataset, list(ROUTERS), embedder=embedder, folds=4, points=6, seed=1)
    )
    assert embedder.calls == 1  # the questions are embedded once, in one batch
    assert [c.router for c in report.curves] == list(ROUTERS)
    check_consistent(report)
    by = {c.router: c for c in report.curves}

    # random: from the weak model alone to the strong model alone, near the straight line
    rnd = sorted(by["random"].points, key=lambda p: p.strong_share)
    assert (rnd[0].strong_share, rnd[0].accuracy) == (0.0, report.weak_accuracy)
    assert (rnd[-1].strong_share, rnd[-1].accuracy) == (1.0, report.strong_accuracy)
    assert rnd[-1].cost_usd == pytest.approx(report.strong_only_cost_usd)
    for p in rnd:
        line = report.weak_accuracy + p.strong_share * (
            report.strong_accuracy - report.weak_accuracy
        )
        assert abs(p.accuracy - line) < 0.2

    # the cascade calls the weak model for every question, also when it escalates
    for p in by["cascade"].points:
        assert p.weak_calls == report.questions
    off, *_, strictest = by["cascade"].points
    assert off.cost_usd == pytest.approx(report.weak_only_cost_usd)  # validators off
    assert strictest.strong_share > 0
    assert strictest.cost_usd > report.weak_only_cost_usd  # weak calls and escalations
    # the learned routers were swept from all-strong to none
    shares = {round(p.strong_share, 6) for p in by["learned"].points}
    assert {0.0, 1.0} <= shares
    for p in by["combined"].points:
        assert p.accuracy <= 1.0


def test_oracle_accuracy(synthetic: Path) -> None:
    dataset = load_routellm_gsm8k(synthetic)
    items = dataset.items
    helps = sum(1 for i in items if not i.weak_correct and i.strong_correct)
    assert oracle_accuracy(items, 0) == pytest.approx(dataset.weak_accuracy)
    top = (sum(i.weak_correct for i in items) + helps) / len(items)
    assert oracle_accuracy(items, 1) == pytest.approx(top)
    assert oracle_accuracy(items, 1) >= dataset.strong_accuracy


# --- the command ---------------------------------------------------------------------------------
def test_command_writes_json_markdown_and_png(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "--data", str(synthetic), "--router", "random,cascade", "-r", "cascade-whole",
        "--points", "5", "--out", str(out), "--weak-price", "1,2", "--strong-price", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "APGR" in result.output and "CPT(80%)" in result.output
    doc = json.loads((out / "routing.json").read_text())
    assert [c["router"] for c in doc["curves"]] == ["random", "cascade", "cascade-whole"]
    assert doc["prices"] == {"weak_in": 1.0, "weak_out": 2.0, "strong_in": 10.0, "strong_out": 10.0}
    check_consistent(doc)
    png = (out / "routing.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    assert "| random |" in (out / "routing.md").read_text()


def test_command_json_and_limit(synthetic: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--data", str(synthetic), "-r", "random", "--limit", "20", "--points", "3",
        "--out", str(tmp_path), "--json", "--no-plot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["questions"] == 20 and doc["files"]["png"] is None
    assert len(doc["curves"][0]["points"]) == 3


def test_command_refuses_bad_usage(synthetic: Path, tmp_path: Path) -> None:
    bad = run_cli("--data", str(synthetic), "-r", "clever", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "unknown router(s) clever" in bad.output
    price = run_cli("--data", str(synthetic), "--weak-price", "cheap", "--out", str(tmp_path))
    assert price.exit_code == 2 and "IN,OUT" in price.output
    missing = run_cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    # the message names the path; rich wraps it at the terminal's width, wherever that falls
    assert missing.exit_code == 2 and "no RouteLLM responses file" in " ".join(
        missing.output.split()
    )


def test_data_is_found_by_environment(monkeypatch: pytest.MonkeyPatch, synthetic: Path) -> None:
    monkeypatch.setenv("ERPOZ_ROUTELLM_DATA", str(synthetic))
    assert find_data() == synthetic
    monkeypatch.delenv("ERPOZ_ROUTELLM_DATA")
    found = find_data(synthetic)  # no shared/data/routellm-gsm8k above a temporary folder
    assert found is None or found.name == "routellm-gsm8k"


# --- the learned routers through the command ----------------------------------------------------
def test_command_learned_routers(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the command embeds with MiniLM; the hashing embedder stands in (no weights to load)
    monkeypatch.setattr("erpoz.models.local_embed.MiniLMEmbed", lambda: HashEmbed())
    result = run_cli(
        "--data", str(synthetic), "-r", "learned,combined", "--folds", "3",
        "--points", "4", "--out", str(tmp_path), "--json", "--no-plot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_consistent(doc)
    assert doc["folds"] == 3
    assert {c["router"] for c in doc["curves"]} == {"learned", "combined"}


# --- the real data, a slice
def test_real_data_slice(tmp_path: Path) -> None:
    if not (REAL_DATA / "gsm8k_responses.csv").is_file():
        pytest.skip(f"RouteLLM's GSM8K data is not at {REAL_DATA} (shared/ not laid out)")
    result = run_cli(
        "--data", str(REAL_DATA), "-r", "random,cascade,cascade-whole", "--limit", "150",
        "--points", "6", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["questions"] == 150 and doc["contaminated_removed"] == 12
    check_consistent(doc)
    assert (tmp_path / "routing.png").is_file()


def test_prices_are_per_million_tokens() -> None:
    assert Prices().strong_in == 10.0 and Prices().weak_out == 0.6
