"""``erpoz eval routing``: erpoz's routers measured on recorded answers -- RouteLLM's GSM8K and
MT-Bench data, their right/wrong CSVs, or the generic JSONL -- with RouteLLM's metrics, in-task
and across tasks, with bootstrap intervals, a table, JSON and a plot (see
:mod:`erpoz.eval.routing`). Mounted by :mod:`erpoz.cli` as ``erpoz eval``.

Exit codes as for every erpoz command: 0 ok · 1 the evaluation failed (a model could not be
loaded) · 2 invalid usage or data.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..errors import ConfigError, ErpozError
from ._console import EXIT_FAILED, EXIT_INVALID, JsonOpt, err, fail, out

if TYPE_CHECKING:
    from ..eval.routing import Curve, Point, Report

__all__ = ["eval_app", "render_markdown", "write_plot"]

eval_app = typer.Typer(
    help="Measure erpoz on public data.\n\n[dim]Example:[/] erpoz eval routing --limit 200",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p < 0 or not math.isfinite(p) for p in parts):
        fail(f"{what} {text!r}: write USD per million tokens as IN,OUT (e.g. 10,30)", EXIT_INVALID)
    return parts[0], parts[1]


def _prices(given: list[str] | None) -> dict[str, tuple[float, float]]:
    out = {}
    for entry in given or []:
        model, sep, pair = entry.rpartition("=")
        if not sep or not model:
            fail(f"--price {entry!r}: write MODEL=IN,OUT (e.g. gpt-4o=2.5,10)", EXIT_INVALID)
        out[model] = _pair(pair, f"--price {model}")
    return out


@eval_app.command("routing")
def eval_routing(
    router: Annotated[
        list[str] | None,
        typer.Option(
            "--router",
            "-r",
            metavar="NAMES",
            help="Router(s), repeated or comma-separated: random, learned, cascade, combined, "
            "online, online-cascade, online-prior, online-rank, cascade-whole, combined-whole "
            "\\[default: random,learned,cascade,combined,online]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Recorded answers: RouteLLM's folder or CSV (right/wrong columns, answers "
            "optional), MT-Bench's folder, or a generic JSONL; repeated: one task mixing them "
            "(grades on [0, 1], shuffled) \\[default: $ERPOZ_ROUTELLM_DATA, else "
            "shared/data/routellm-gsm8k here or in a parent folder]",
            show_default=False,
        ),
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option(
            "--train",
            help="Another task's recorded answers: the learning routers are also fitted and "
            "tuned there and measured here (cross-task)",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Where routing.json, routing.md and routing.png go."),
    ] = Path(".erpoz/eval/routing"),
    limit: Annotated[
        int | None,
        typer.Option(min=2, help="Only the first N prompts (a quick look, or tests)."),
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, help="k of the learned routers' cross-validation.")
    ] = 10,
    points: Annotated[int, typer.Option(min=2, help="Thresholds swept per router.")] = 21,
    seed: Annotated[int, typer.Option(help="Seed of the draws, folds and resamples.")] = 0,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Resamples for the 95% intervals (0: none).")
    ] = 1000,
    feedback: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="Share of answers whose grade the online router is told."
        ),
    ] = 1.0,
    orders: Annotated[
        int,
        typer.Option(
            min=0,
            help="Shuffled orders of the prompts the online routers are also replayed in "
            "(mean ± spread per setting).",
        ),
    ] = 0,
    price: Annotated[
        list[str] | None,
        typer.Option(
            "--price",
            metavar="MODEL=IN,OUT",
            help="A model's USD per million tokens (repeat per model); RouteLLM's two models "
            "have defaults",
            show_default=False,
        ),
    ] = None,
    hashing: Annotated[
        bool,
        typer.Option(
            "--hashing",
            help="Embed prompts by hashing their words instead of with MiniLM (fast, weaker).",
        ),
    ] = False,
    plot: Annotated[bool, typer.Option(help="Draw routing.png (needs matplotlib).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Sweep routers over their settings on recorded answers: quality against the share of
    strong calls, the cost of every call, PGR, APGR, CPT(50%), CPT(80%), the share of strong
    calls at 95% of the strong model, bootstrap intervals, and a warning for any setting that
    costs more than the strong model alone. With --train, the learning routers fitted on
    another task too. Details: docs/routing.md.

    [dim]Example:[/] erpoz eval routing --data shared/data/routellm-mtbench --train
    shared/data/routellm-gsm8k -r learned,online --out eval-mt
    """
    from ..eval.data import find_data, load_dataset, mix
    from ..eval.routing import DEFAULT_ROUTERS, NEEDS_EMBEDDINGS, ROUTERS, evaluate_routing

    names = [n.strip() for r in (router or list(DEFAULT_ROUTERS)) for n in r.split(",")]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ROUTERS]
    if unknown or not names:
        fail(
            f"unknown router(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ROUTERS)}",
            EXIT_INVALID,
        )
    found = find_data() if not data else None
    folders = list(data) if data else ([found] if found is not None else [])
    if not folders:
        fail(
            "no recorded answers found: give --data PATH (a RouteLLM folder or CSV, MT-Bench's "
            "folder, or a JSONL) or set ERPOZ_ROUTELLM_DATA",
            EXIT_INVALID,
        )
    prices = _prices(price)
    try:
        sets = [load_dataset(f) for f in folders]
        dataset = sets[0] if len(sets) == 1 else mix(sets, seed=seed)
        if limit is not None:
            dataset = dataset.take(range(min(limit, len(dataset.items))))
        source = load_dataset(train) if train is not None else None
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    embedder = None
    if hashing:
        from ..routing.online import HashingEmbed

        embedder = HashingEmbed()
    show = not as_json and err.is_terminal
    t0 = time.perf_counter()
    with Progress(console=err, transient=True, disable=not show) as progress:
        tasks: dict[str, Any] = {}

        def tick(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        try:
            report = asyncio.run(
                evaluate_routing(
                    dataset,
                    names,
                    prices=prices,
                    embedder=embedder,
                    train=source,
                    train_prices=prices,
                    folds=folds,
                    points=points,
                    seed=seed,
                    bootstrap=bootstrap,
                    feedback=feedback,
                    orders=orders,
                    progress=tick,
                )
            )
        except ConfigError as exc:
            fail(str(exc), EXIT_INVALID)
        except ErpozError as exc:
            hint = ""
            learning = NEEDS_EMBEDDINGS | {"online", "online-cascade"}
            if learning & set(names) and not hashing:
                hint = (
                    " (the learning routers embed the prompts with MiniLM: pip install "
                    "'erpoz[local]', or --hashing, or evaluate --router random,cascade)"
                )
            fail(f"{exc}{hint}", EXIT_FAILED)
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = report.to_json()
    doc["seconds"] = round(seconds, 2)
    (out_dir / "routing.json").write_text(json.dumps(_finite(doc), indent=2), encoding="utf-8")
    (out_dir / "routing.md").write_text(render_markdown(report), encoding="utf-8")
    png = out_dir / "routing.png"
    if plot:
        try:
            write_plot(report, png)
        except ImportError:
            fail("the plot needs matplotlib: pip install 'erpoz[eval]' (or --no-plot)", 1)
    if as_json:
        doc["files"] = {
            "json": str(out_dir / "routing.json"),
            "markdown": str(out_dir / "routing.md"),
            "png": str(png) if plot else None,
        }
        out.print_json(data=_finite(doc))
        return
    _print(report, seconds)
    files = [str(out_dir / "routing.json"), str(out_dir / "routing.md")]
    if plot:
        files.append(str(png))
    out.print("wrote " + ", ".join(escape(f) for f in files), highlight=False)


# --- output ---------------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """JSON has no NaN: the oracle's cost is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(curve: Curve, key: str, pct: bool) -> str:
    lo, hi = curve.ci.get(key, (None, None)) if curve.ci else (None, None)
    if not curve.ci:
        return ""
    show = _pct if pct else _num
    return f" [{show(lo)}, {show(hi) if hi is not None else 'never'}]"


def _span(curve: Curve) -> str:
    shares = [p.strong_share for p in curve.points]
    return f"{min(shares) * 100:.0f}–{max(shares) * 100:.0f}%"


def _at_target(curve: Curve) -> str:
    p = curve.at_target
    if p is None:
        best = max(curve.points, key=lambda q: q.quality)
        return f"never (best {best.quality:.4f} at {best.strong_share * 100:.1f}%)"
    return f"{p.strong_share * 100:.1f}% ({p.quality:.4f}, cost {p.cost_vs_strong * 100:.1f}%)"


def _tuned(curve: Curve) -> str:
    p = curve.tuned
    if p is None:
        return "–"
    return (
        f"{p.setting}: {p.quality:.4f} at {p.strong_share * 100:.1f}% strong, cost "
        f"{p.cost_vs_strong * 100:.1f}%"
    )


def _match(curve: Curve) -> str:
    p, t = curve.online_match, curve.tuned
    if t is None:
        return "–"
    if p is None:
        text = "online never as good"
    else:
        text = (
            f"{curve.online_match_router} {p.setting}: {p.quality:.4f}, cost "
            f"{p.cost_vs_strong * 100:.1f}% "
            f"({(p.cost_usd / t.cost_usd - 1) * 100:+.0f}% vs tuned)"
            if t.cost_usd
            else f"{curve.online_match_router} {p.setting}: {p.quality:.4f}"
        )
    if curve.match_spread is not None:
        x = curve.match_spread
        text += (
            f"; over {x.orders} orders, {x.router} {x.setting}: {_pm(x.quality, 4)}, cost "
            f"{_pm(x.cost_vs_strong, 1, pct=True)}"
        )
    return text


def _pm(value: tuple[float, float], digits: int, pct: bool = False) -> str:
    """A mean ± standard deviation."""
    k = 100 if pct else 1
    return f"{value[0] * k:.{digits}f} ± {value[1] * k:.{digits}f}{'%' if pct else ''}"


def _spread_lines(curve: Curve) -> list[str]:
    """An online router's settings over the recorded and shuffled orders."""
    if not curve.orders or curve.split != "online":
        return []
    lines = [
        "",
        f"**{curve.router}** over {len(curve.orders) + 1} orders (recorded, and "
        f"{len(curve.orders)} shuffled): mean ± standard deviation",
        "",
        "| setting | strong calls | quality | cost vs strong alone |",
        "|---|---|---|---|",
    ]
    for x in curve.spread:
        lines.append(
            f"| {x.setting} | {_pm(x.strong_share, 1, pct=True)} | {_pm(x.quality, 4)} | "
            f"{_pm(x.cost_vs_strong, 1, pct=True)} |"
        )
    return lines


def _header(report: Report) -> str:
    grade = "accuracy" if report.metric == "correct" else "mean score"
    return (
        f"{report.task}: {report.items} prompts ({report.contaminated_removed} contaminated "
        f"removed) · {grade}: weak {report.weak} {report.weak_quality:.4f}, strong "
        f"{report.strong} {report.strong_quality:.4f} · target 95% of strong = "
        f"{report.target_quality:.4f} · strong alone ${report.strong_only_cost_usd:.4f}, weak "
        f"alone ${report.weak_only_cost_usd:.4f}"
    )


def _print(report: Report, seconds: float) -> None:
    out.print(f"{escape(_header(report))} · {seconds:.1f} s", highlight=False)
    for curve in report.curves:
        table = Table(
            "setting",
            "strong calls",
            "quality",
            "PGR",
            "cost $",
            "vs strong",
            title=f"{curve.router} [{curve.split}]: {curve.description}",
            title_justify="left",
        )
        for p in _sorted(curve.points):
            table.add_row(
                escape(p.setting),
                _pct(p.strong_share),
                f"{p.quality:.4f}",
                f"{p.pgr:.3f}",
                f"{p.cost_usd:.4f}",
                ("[yellow]" if p.cost_vs_strong > 1 else "") + _pct(p.cost_vs_strong),
            )
        out.print(table)
    summary = Table(
        "router",
        "split",
        "APGR",
        "CPT(50%)",
        "CPT(80%)",
        f"strong calls at ≥ {report.target_quality:.4f}",
        title="summary (95% bootstrap intervals in brackets)",
        title_justify="left",
    )
    for curve in report.curves:
        summary.add_row(
            curve.router,
            curve.split,
            _num(curve.apgr) + _ci(curve, "apgr", False),
            _pct(curve.cpt50) + _ci(curve, "cpt50", True),
            _pct(curve.cpt80) + _ci(curve, "cpt80", True),
            _at_target(curve) + _ci(curve, "at_target", True),
        )
    out.print(summary)
    for curve in report.curves:
        if curve.tuned is not None:
            out.print(
                f"{escape(curve.router)}, tuned on {escape(str(curve.trained_on))}: "
                f"{escape(_tuned(curve))}; online at that quality: {escape(_match(curve))}"
            )
    for w in report.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}")


def _sorted(points: list[Point]) -> list[Point]:
    return sorted(points, key=lambda p: (p.strong_share, p.quality))


def render_markdown(report: Report) -> str:
    """The figures as Markdown tables (what docs/routing.md shows)."""
    lines = [
        _header(report) + ".",
        "",
        "| router | split | strong calls span | APGR | CPT(50%) | CPT(80%) | fewest strong calls "
        "at the target | tuned on the other task | online at that quality |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.curves:
        lines.append(
            f"| {c.router} | {c.split} | {_span(c)} | {_num(c.apgr)}{_ci(c, 'apgr', False)} | "
            f"{_pct(c.cpt50)}{_ci(c, 'cpt50', True)} | {_pct(c.cpt80)}{_ci(c, 'cpt80', True)} | "
            f"{_at_target(c)}{_ci(c, 'at_target', True)} | {_tuned(c)} | {_match(c)} |"
        )
    if report.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in report.warnings]
    for c in report.curves:
        lines += _spread_lines(c)
    for c in report.curves:
        lines += [
            "",
            f"**{c.router}** ({c.split}): {c.description}",
            "",
            "| setting | strong calls | quality | PGR | cost $ | cost vs strong alone |",
            "|---|---|---|---|---|---|",
        ]
        for p in _sorted(c.points):
            lines.append(
                f"| {p.setting} | {_pct(p.strong_share)} | {p.quality:.4f} | {p.pgr:.3f} | "
                f"{p.cost_usd:.4f} | {_pct(p.cost_vs_strong)} |"
            )
    lines += ["", "**oracle**", "", "| strong calls | quality | PGR |", "|---|---|---|"]
    for p in report.oracle:
        lines.append(f"| {_pct(p.strong_share)} | {p.quality:.4f} | {p.pgr:.3f} |")
    return "\n".join(lines) + "\n"


def write_plot(report: Report, path: Path) -> None:
    """Quality against the share of strong calls, per router, with random routing, the
    oracle, both models alone and the target drawn in (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=90)
    try:
        ax.plot(
            [p.strong_share * 100 for p in report.oracle],
            [p.quality for p in report.oracle],
            color="black",
            linestyle=":",
            label="oracle",
        )
        ax.plot(
            [0, 100],
            [report.weak_quality, report.strong_quality],
            color="grey",
            linestyle="--",
            linewidth=1,
            label="random (expected)",
        )
        for curve in report.curves:
            if curve.split == "cross-task" and curve.router.startswith("online@"):
                continue  # the online curve again (only its setting came from elsewhere)
            pts = _sorted(curve.points)
            if curve.orders:
                ms = sorted(curve.spread, key=lambda x: x.strong_share[0])
                ax.errorbar(
                    [x.strong_share[0] * 100 for x in ms],
                    [x.quality[0] for x in ms],
                    xerr=[x.strong_share[1] * 100 for x in ms],
                    yerr=[x.quality[1] for x in ms],
                    fmt="o",
                    markersize=3,
                    alpha=0.5,
                    label=f"{curve.router}, mean ± sd of {len(curve.orders) + 1} orders",
                )
            style: dict[str, Any] = (
                {"linestyle": "--", "alpha": 0.8} if curve.router == "random" else {}
            )
            if curve.split == "cross-task":
                style = {"linestyle": "-.", "alpha": 0.8}
            ax.plot(
                [p.strong_share * 100 for p in pts],
                [p.quality for p in pts],
                marker=".",
                label=f"{curve.router} (APGR {_num(curve.apgr)})",
                **style,
            )
        ax.axhline(report.weak_quality, color="tab:grey", linewidth=0.8)
        ax.axhline(report.strong_quality, color="tab:red", linewidth=0.8)
        ax.axhline(report.target_quality, color="tab:red", linewidth=0.8, linestyle=":")
        ax.text(101, report.weak_quality, "weak", va="center", fontsize=8)
        ax.text(101, report.strong_quality, "strong", va="center", fontsize=8)
        ax.text(101, report.target_quality, "95%", va="center", fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("calls to the strong model (% of prompts)")
        ax.set_ylabel("accuracy" if report.metric == "correct" else "mean score")
        ax.set_title(f"erpoz routers on {report.task} ({report.items} prompts)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
