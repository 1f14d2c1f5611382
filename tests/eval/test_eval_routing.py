"""``erpoz eval routing`` on small data: synthetic sets in every format it reads (always), and
slices of RouteLLM's real data (when ../shared/data is there). The figures must be consistent --
the oracle at least as good as any router, costs adding up, intervals around their figure --
but no test asserts a benchmark figure."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from erpoz.cli.eval import eval_app
from erpoz.eval import Report, evaluate_routing, find_data, load_dataset, oracle_quality
from erpoz.eval.routing import Point, apgr, cpt
from erpoz.routing.online import HashingEmbed
from eval._data import (
    REAL_DATA,
    REAL_MTBENCH,
    HashEmbed,
    write_mcq_csv,
    write_mtbench,
    write_routellm,
)

pytest.importorskip("numpy", reason="the evaluation needs numpy (erpoz[local])")

app = typer.Typer()
app.add_typer(eval_app, name="eval")


@app.callback()
def _root() -> None:
    """The erpoz command, as cli.py mounts eval_app."""


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["eval", "routing", *args])


def check_consistent(report: dict[str, Any] | Report) -> None:
    """What must hold of any report, whatever the data."""
    doc = report if isinstance(report, dict) else report.to_json()
    weak, strong = doc["weak_quality"], doc["strong_quality"]
    oracle = doc["oracle"]
    assert oracle[0]["quality"] == pytest.approx(weak)
    assert all(a["quality"] <= b["quality"] + 1e-9 for a, b in itertools.pairwise(oracle))
    n = doc["items"]
    strong_alone = doc["alone_cost_usd"][doc["strong"]]
    for curve in doc["curves"]:
        for p in curve["points"]:
            above = [o["quality"] for o in oracle if o["strong_share"] >= p["strong_share"] - 1e-9]
            assert p["quality"] <= above[0] + 1e-9, (curve["router"], p)
            if strong != weak:
                assert p["pgr"] == pytest.approx((p["quality"] - weak) / (strong - weak))
            assert 0 <= p["strong_share"] <= 1
            assert sum(p["calls"].values()) >= n  # every prompt made a call
            assert p["cost_vs_strong"] == pytest.approx(p["cost_usd"] / strong_alone)
        if curve["cpt50"] is not None and curve["cpt80"] is not None:
            assert curve["cpt50"] <= curve["cpt80"] + 1e-9
        for key, (lo, hi) in curve["ci95"].items():
            if lo is not None and hi is not None:
                assert lo <= hi, (curve["router"], key)
    costly = [
        (c["router"], p["setting"])
        for c in doc["curves"]
        for p in c["points"]
        if p["cost_usd"] > strong_alone * (1 + 1e-9)
    ]
    for router, setting in costly:  # every costlier-than-strong setting is reported
        assert any(router in w and setting in w for w in doc["warnings"]), (router, setting)


# --- metrics on their own ----------------------------------------------------------------------
def pt(share: float, q: float, weak: float = 0.6, strong: float = 0.8) -> Point:
    return Point("", None, share, q, (q - weak) / (strong - weak), 0.0, {})


def test_apgr_and_cpt_follow_routellm() -> None:
    straight = [pt(0, 0.6), pt(0.5, 0.7), pt(1, 0.8)]
    assert apgr(straight, 0.6, 0.8) == pytest.approx(0.5)
    assert cpt(straight, 0.5) == pytest.approx(0.5)
    assert cpt(straight, 0.8) == pytest.approx(0.8)
    bowed = [pt(0, 0.6), pt(0.2, 0.76), pt(1, 0.8)]
    assert apgr(bowed, 0.6, 0.8) == pytest.approx((0.2 * 0.08 + 0.8 * 0.18) / 0.2)
    assert cpt(bowed, 0.8) == pytest.approx(0.2)
    assert cpt([pt(0, 0.6), pt(1, 0.7)], 0.8) is None


def test_oracle_takes_the_largest_gains_first() -> None:
    weak, strong = [1.0, 0.0, 0.0, 5.0], [1.0, 1.0, 3.0, 4.0]
    assert oracle_quality(weak, strong, 0.0) == pytest.approx(6 / 4)
    assert oracle_quality(weak, strong, 0.25) == pytest.approx(9 / 4)  # +3 first
    assert oracle_quality(weak, strong, 1.0) == pytest.approx(10 / 4)  # never a loss


# --- the Python API on synthetic data -----------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_routellm(tmp_path_factory.mktemp("gsm8k"), n=61, contaminated=1)


def test_every_router_on_a_synthetic_slice(synthetic: Path) -> None:
    dataset = load_dataset(synthetic)
    assert len(dataset.items) == 60 and dataset.contaminated_removed == 1
    embedder = HashEmbed()
    routers = ["random", "learned", "cascade", "combined", "online", "online-cascade"]
    report = asyncio.run(
        evaluate_routing(
            dataset, routers, embedder=embedder, folds=4, points=6, seed=1, bootstrap=50
        )
    )
    assert embedder.calls == 1  # the prompts are embedded once, in one batch
    assert [c.router for c in report.curves] == routers
    check_consistent(report)
    by = {c.router: c for c in report.curves}
    rnd = sorted(by["random"].points, key=lambda p: p.strong_share)
    assert (rnd[0].strong_share, rnd[0].quality) == (0.0, report.weak_quality)
    assert (rnd[-1].strong_share, rnd[-1].quality) == (1.0, report.strong_quality)
    assert rnd[-1].cost_usd == pytest.approx(report.strong_only_cost_usd)
    # the cascade calls the weak model for every prompt, also when it escalates
    for p in by["cascade"].points:
        assert p.calls[report.weak] == report.items
    off, *_, strictest = by["cascade"].points
    assert off.cost_usd == pytest.approx(report.weak_only_cost_usd)
    assert strictest.strong_share > 0
    shares = {round(p.strong_share, 6) for p in by["learned"].points}
    assert {0.0, 1.0} <= shares
    online = by["online"]
    assert online.split == "online" and len(online.points) > 5
    assert all(c.ci for c in report.curves)


def test_three_models_without_answers(tmp_path: Path) -> None:
    """RouteLLM's right/wrong columns alone, three models with given prices: routers that
    read answers are left out (and said so), the rest run over the cheapest and dearest."""
    data = load_dataset(write_mcq_csv(tmp_path / "mcq.csv"))
    assert data.models == ("cheap", "mid", "dear") and not data.has_answers
    prices = {"cheap": (0.1, 0.1), "mid": (1.0, 2.0), "dear": (5.0, 15.0)}
    report = asyncio.run(
        evaluate_routing(
            data,
            ["random", "cascade", "online"],
            prices=prices,
            embedder=HashingEmbed(),
            points=4,
            bootstrap=20,
        )
    )
    assert (report.weak, report.strong) == ("cheap", "dear")
    assert [c.router for c in report.curves] == ["random", "online"]
    assert any("cascade" in w and "records none" in w for w in report.warnings)
    check_consistent(report)
    assert set(report.alone_cost_usd) == {"cheap", "mid", "dear"}
    assert report.alone_cost_usd["cheap"] < report.alone_cost_usd["mid"]


def test_a_cascade_that_escalates_everything_is_reported(tmp_path: Path) -> None:
    """Multiple-choice answers that no validator may reject: the cascade stays cheap. With a
    validator that rejects every answer it costs more than the strong model alone -- which the
    report must say."""
    from erpoz.eval import routing as r

    data = load_dataset(write_mcq_csv(tmp_path / "mcq.csv", answers=True))
    prices = {"cheap": (0.5, 0.5), "mid": (1.0, 2.0), "dear": (5.0, 15.0)}
    report = asyncio.run(evaluate_routing(data, ["cascade"], prices=prices, points=3, bootstrap=0))
    strictest = report.curves[0].points[-1]
    assert strictest.strong_share == 0.0  # "The answer is B." is judged, never rejected
    original = r.GENERAL_VALIDATORS
    try:
        r.GENERAL_VALIDATORS = (("never", lambda req, res: False),)
        report = asyncio.run(
            evaluate_routing(data, ["cascade"], prices=prices, points=3, bootstrap=0)
        )
    finally:
        r.GENERAL_VALIDATORS = original
    check_consistent(report)
    assert report.curves[0].points[-1].cost_vs_strong > 1
    assert any("costlier than not routing" in w for w in report.warnings)


def test_every_setting_costlier_than_the_strong_model_is_flagged(tmp_path: Path) -> None:
    """A validator that rejects every answer makes every cascade dearer than the strong model
    alone; whatever the router, split or order a costlier setting was measured in -- a point
    of a curve, a setting tuned on another task, an online pass in a shuffled order -- it is
    named in the warnings, and the Markdown report lists them."""
    from erpoz.cli.eval import render_markdown
    from erpoz.eval import routing as r

    data = load_dataset(write_mcq_csv(tmp_path / "mcq.csv", answers=True))
    other = load_dataset(write_mcq_csv(tmp_path / "other.csv", n=24, answers=True))
    prices = {"cheap": (0.5, 0.5), "mid": (1.0, 2.0), "dear": (5.0, 15.0)}
    original = r.GENERAL_VALIDATORS
    try:
        r.GENERAL_VALIDATORS = (("never", lambda req, res: False),)
        report = asyncio.run(
            evaluate_routing(
                data,
                ["cascade", "combined", "online-cascade"],
                prices=prices,
                embedder=HashEmbed(),
                train=other,
                train_prices=prices,
                folds=3,
                points=3,
                bootstrap=0,
                orders=2,
            )
        )
    finally:
        r.GENERAL_VALIDATORS = original
    check_consistent(report)
    strong_alone = report.strong_only_cost_usd
    costly = []
    for c in report.curves:
        tuned = [("", c.tuned)] if c.tuned is not None else []
        measured = [("", p) for p in c.points] + tuned
        measured += [(f", order {k}", p) for k, ps in enumerate(c.orders, 1) for p in ps]
        costly += [
            (c.router, p.setting + where) for where, p in measured if p.cost_usd > strong_alone
        ]
    assert ("cascade", "never") in costly  # the case this guards against does occur
    assert any(router == "combined@other" for router, _ in costly)  # a tuned, cross-task one
    for router, setting in costly:
        assert any(w.startswith(f"{router} ({setting})") for w in report.warnings), (
            router,
            setting,
        )
    markdown = render_markdown(report)
    assert all(w in markdown for w in report.warnings)


def test_online_replayed_in_shuffled_orders(synthetic: Path) -> None:
    dataset = load_dataset(synthetic)
    report = asyncio.run(
        evaluate_routing(dataset, ["online"], embedder=HashEmbed(), points=3, bootstrap=0, orders=2)
    )
    (online,) = report.curves
    assert len(online.orders) == 2 and all(len(o) == len(online.points) for o in online.orders)
    assert len(online.spread) == len(online.points)
    for j, x in enumerate(online.spread):
        qualities = [online.points[j].quality] + [o[j].quality for o in online.orders]
        assert x.orders == 3 and x.setting == online.points[j].setting
        assert x.quality[0] == pytest.approx(sum(qualities) / 3)
        assert min(qualities) <= x.quality[0] <= max(qualities) and x.quality[1] >= 0
    doc = report.to_json()["curves"][0]
    assert doc["orders"] == 2 and len(doc["spread"]) == len(online.points)


def test_mtbench_folder_and_cross_task(tmp_path: Path, synthetic: Path) -> None:
    mt = load_dataset(write_mtbench(tmp_path / "mt"))
    assert mt.metric == "score" and mt.score_range == (1.0, 10.0)
    assert mt.items[0].answers[0] == "An essay on 0 by 0."
    assert mt.items[0].usage[0] is not None and mt.items[0].usage[0].output_tokens > 0
    gsm = load_dataset(synthetic)
    report = asyncio.run(
        evaluate_routing(
            mt,
            ["learned", "combined", "online"],
            embedder=HashEmbed(),
            train=gsm,
            folds=3,
            points=4,
            bootstrap=30,
        )
    )
    check_consistent(report)
    splits = {c.router: c.split for c in report.curves}
    assert splits["learned@gsm8k"] == "cross-task" and splits["learned"] == "in-task"
    assert splits["online@gsm8k"] == "cross-task"
    assert report.curves[-1].trained_on == "gsm8k"
    # the online router carried over starts from GSM8K's grades and is replayed on its own
    # (not the in-task curve relabelled); the static points name the online curve matching them
    by = {c.router: c for c in report.curves}
    assert "warm-started on gsm8k" in by["online@gsm8k"].description
    assert by["online@gsm8k"].points is not by["online"].points
    assert len(by["online@gsm8k"].points) == len(by["online"].points)
    tuned = by["learned@gsm8k"]
    if tuned.online_match is not None:
        assert tuned.online_match_router in ("online", "online@gsm8k")


# --- the command ---------------------------------------------------------------------------------
def test_command_writes_json_markdown_and_png(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "--data", str(synthetic), "--router", "random,cascade", "-r", "cascade-whole",
        "--points", "5", "--out", str(out), "--bootstrap", "20",
        "--price", "mistralai/Mixtral-8x7B-Instruct-v0.1=1,2",
        "--price", "gpt-4-1106-preview=10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "APGR" in result.output and "CPT(80%)" in result.output
    doc = json.loads((out / "routing.json").read_text())
    assert [c["router"] for c in doc["curves"]] == ["random", "cascade", "cascade-whole"]
    assert doc["prices"]["gpt-4-1106-preview"] == [10.0, 10.0]
    check_consistent(doc)
    png = (out / "routing.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    assert "| random |" in (out / "routing.md").read_text()


def test_command_json_limit_and_a_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    lines = [{"dataset": {"name": "tiny", "prices": {"s": [0.1, 0.1], "l": [2, 4]}}}]
    for k in range(30):
        lines.append(
            {
                "prompt": f"q{k}",
                "models": {
                    "s": {"score": 0.2 if k % 3 == 0 else 0.9, "answer": f"s{k}"},
                    "l": {"score": 0.95, "answer": f"l{k}", "cost_usd": 0.002},
                },
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    result = run_cli(
        "--data", str(path), "-r", "random,online", "--limit", "20", "--points", "3",
        "--out", str(tmp_path), "--json", "--no-plot", "--hashing", "--bootstrap", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["items"] == 20 and doc["files"]["png"] is None and doc["task"] == "tiny"
    assert doc["alone_cost_usd"]["l"] == pytest.approx(20 * 0.002)  # the recorded cost
    check_consistent(doc)


def test_command_refuses_bad_usage(synthetic: Path, tmp_path: Path) -> None:
    bad = run_cli("--data", str(synthetic), "-r", "clever", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "unknown router(s) clever" in bad.output
    price = run_cli("--data", str(synthetic), "--price", "cheap", "--out", str(tmp_path))
    assert price.exit_code == 2 and "MODEL=IN,OUT" in price.output
    missing = run_cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert missing.exit_code == 2 and "no recorded answers at" in " ".join(missing.output.split())
    unpriced = write_mcq_csv(tmp_path / "mcq.csv")
    result = run_cli("--data", str(unpriced), "-r", "random", "--out", str(tmp_path))
    assert result.exit_code == 2 and "no price for model 'cheap'" in " ".join(result.output.split())


def test_data_is_found_by_environment(monkeypatch: pytest.MonkeyPatch, synthetic: Path) -> None:
    monkeypatch.setenv("ERPOZ_ROUTELLM_DATA", str(synthetic))
    assert find_data() == synthetic
    monkeypatch.delenv("ERPOZ_ROUTELLM_DATA")
    found = find_data(start=synthetic)
    assert found is None or found.name == "routellm-gsm8k"


# --- the real data, slices
def test_real_gsm8k_slice(tmp_path: Path) -> None:
    if not (REAL_DATA / "gsm8k_responses.csv").is_file():
        pytest.skip(f"RouteLLM's GSM8K data is not at {REAL_DATA} (shared/ not laid out)")
    result = run_cli(
        "--data", str(REAL_DATA), "-r", "random,cascade,cascade-whole", "--limit", "150",
        "--points", "6", "--out", str(tmp_path), "--json", "--bootstrap", "50",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["items"] == 150 and doc["contaminated_removed"] == 12
    check_consistent(doc)
    assert (tmp_path / "routing.png").is_file()


def test_real_mtbench(tmp_path: Path) -> None:
    if not (REAL_MTBENCH / "judgements.jsonl").is_file():
        pytest.skip(f"RouteLLM's MT-Bench data is not at {REAL_MTBENCH} (shared/ not laid out)")
    data = load_dataset(REAL_MTBENCH)
    assert len(data.items) == 72 and data.contaminated_removed == 8  # as RouteLLM evaluates
    assert all(a for item in data.items for a in item.answers)  # read out of the judge prompts
    result = run_cli(
        "--data", str(REAL_MTBENCH), "-r", "random,cascade", "--points", "5",
        "--out", str(tmp_path), "--json", "--no-plot", "--bootstrap", "100",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_consistent(doc)
    assert doc["metric"] == "score" and doc["strong"] == "gpt-4-1106-preview"


def test_two_tasks_mixed_into_one(tmp_path: Path, synthetic: Path) -> None:
    from erpoz.eval.data import mix

    gsm, mt = load_dataset(synthetic), load_dataset(write_mtbench(tmp_path / "mt"))
    both = mix([gsm, mt], seed=3)
    assert len(both.items) == len(gsm.items) + len(mt.items)
    assert both.metric == "score" and both.score_range == (0.0, 1.0)
    assert {i.group for i in both.items} == {"gsm8k", "mt-bench"}
    assert all(0.0 <= q <= 1.0 for i in both.items for q in i.quality)
    assert [i.group for i in both.items[:20]] != ["gsm8k"] * 20  # shuffled together
    result = run_cli(
        "--data", str(synthetic), "--data", str(tmp_path / "mt"), "-r", "random",
        "--points", "3", "--out", str(tmp_path / "o"), "--json", "--no-plot", "--bootstrap", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["task"] == "gsm8k+mt-bench"


def test_online_prior_by_name_in_task_and_across_tasks(tmp_path: Path, synthetic: Path) -> None:
    """``-r online-prior``: in-task (its prior the k-fold classifier) and, with ``--train``,
    ``online-prior@<task>`` -- the combined router fitted and tuned on the other task, then
    corrected prequentially here; its curve includes the tuned threshold, the same as the
    static router's. The in-task one, whose prior saw this task's grades (other folds), is
    never offered as the online router matching a static one."""
    mt = write_mtbench(tmp_path / "mt")
    out = tmp_path / "out"
    result = run_cli(
        "--data", str(synthetic), "--train", str(mt), "-r", "combined,online-prior",
        "--points", "3", "--folds", "3", "--orders", "1", "--bootstrap", "20", "--hashing",
        "--out", str(out), "--json", "--no-plot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_consistent(doc)
    by = {c["router"]: c for c in doc["curves"]}
    assert by["online-prior"]["split"] == "online"
    cross = by["online-prior@mt-bench"]
    assert cross["split"] == "cross-task" and cross["trained_on"] == "mt-bench"
    assert cross["orders"] == 1 and len(cross["spread"]) == len(cross["points"])
    static = by["combined@mt-bench"]
    if static["tuned"] is not None:
        assert cross["tuned"]["threshold"] == pytest.approx(static["tuned"]["threshold"])
        assert static["online_match_router"] != "online-prior"
    md = (out / "routing.md").read_text()
    assert "| online-prior@mt-bench | cross-task |" in md


def test_online_prior_without_answers_routes_between_the_models(tmp_path: Path) -> None:
    """Data without answer texts: no cascade to read them, so ``online-prior`` routes between
    the cheap and the strong model themselves."""
    path = tmp_path / "set.jsonl"
    lines = [{"dataset": {"name": "tiny", "prices": {"s": [0.1, 0.1], "l": [2, 4]}}}]
    for k in range(24):
        hard = k % 3 == 0
        lines.append(
            {
                "prompt": f"{'prove the theorem' if hard else 'say hello'} {k}",
                "models": {"s": {"correct": not hard}, "l": {"correct": True}},
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    report = asyncio.run(
        evaluate_routing(
            load_dataset(path),
            ["online-prior"],
            embedder=HashEmbed(),
            folds=3,
            points=3,
            bootstrap=0,
        )
    )
    check_consistent(report)
    (curve,) = report.curves
    assert all(set(p.calls) == {"s", "l"} and sum(p.calls.values()) == 24 for p in curve.points)
