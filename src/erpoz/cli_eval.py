"""``erpoz eval routing``: erpoz's routers measured on RouteLLM's recorded GSM8K answers, with
RouteLLM's metrics, a table, JSON and a plot (see :mod:`erpoz.eval.routing`). Mounted by
:mod:`erpoz.cli` as ``erpoz eval``.

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

from ._console import EXIT_FAILED, EXIT_INVALID, JsonOpt, err, fail, out
from .errors import ConfigError, ErpozError

if TYPE_CHECKING:
    from .eval.routing import Curve, Point, Prices, Report

__all__ = ["eval_app", "render_markdown", "write_plot"]

eval_app = typer.Typer(
    help="Measure erpoz on public data.\n\n[dim]Example:[/] erpoz eval routing --limit 200",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _price(text: str | None, what: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p < 0 or not math.isfinite(p) for p in parts):
        fail(f"{what} {text!r}: write USD per million tokens as IN,OUT (e.g. 10,30)", EXIT_INVALID)
    return parts[0], parts[1]


@eval_app.command("routing")
def eval_routing(
    router: Annotated[
        list[str] | None,
        typer.Option(
            "--router",
            "-r",
            metavar="NAMES",
            help="Router(s) to evaluate, repeated or comma-separated: random, learned, "
            "cascade, combined, cascade-whole, combined-whole \\[default: all]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="RouteLLM's GSM8K folder (gsm8k_responses.csv, contaminated_prompts.jsonl) "
            "\\[default: $ERPOZ_ROUTELLM_DATA, else shared/data/routellm-gsm8k here or in a "
            "parent folder]",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Where routing.json, routing.md and routing.png go."),
    ] = Path(".erpoz/eval/routing"),
    limit: Annotated[
        int | None,
        typer.Option(min=2, help="Only the first N questions (a quick look, or tests)."),
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, help="k of the learned routers' cross-validation.")
    ] = 10,
    points: Annotated[int, typer.Option(min=2, help="Thresholds swept per router.")] = 21,
    seed: Annotated[int, typer.Option(help="Seed of the random router and the folds.")] = 0,
    weak_price: Annotated[
        str | None,
        typer.Option(
            help="Mixtral-8x7B's USD per million tokens, IN,OUT \\[default: 0.60,0.60]",
            show_default=False,
        ),
    ] = None,
    strong_price: Annotated[
        str | None,
        typer.Option(
            help="GPT-4's USD per million tokens, IN,OUT \\[default: 10,30]",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[bool, typer.Option(help="Draw routing.png (needs matplotlib).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Sweep routers over their thresholds on the 1,307 uncontaminated GSM8K questions of
    RouteLLM's recorded answers (Mixtral-8x7B weak, GPT-4 strong, replayed): accuracy against
    the share of strong calls, cost of every call, PGR, APGR, CPT(50%), CPT(80%), and a plot
    with random routing and the oracle. Details: docs/routing.md.

    [dim]Example:[/] erpoz eval routing --router learned,combined --out eval-out
    """
    from .eval.routing import (
        DEFAULT_PRICES,
        NEEDS_EMBEDDINGS,
        ROUTERS,
        Prices,
        evaluate_routing,
        find_data,
        load_routellm_gsm8k,
    )

    names = [n.strip() for r in (router or list(ROUTERS)) for n in r.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROUTERS]
    if unknown or not names:
        fail(
            f"unknown router(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ROUTERS)}",
            EXIT_INVALID,
        )
    folder = data if data is not None else find_data()
    if folder is None:
        fail(
            "no RouteLLM GSM8K data found: give --data DIR (the folder with "
            "gsm8k_responses.csv) or set ERPOZ_ROUTELLM_DATA",
            EXIT_INVALID,
        )
    weak = _price(weak_price, "--weak-price") or (DEFAULT_PRICES.weak_in, DEFAULT_PRICES.weak_out)
    strong = _price(strong_price, "--strong-price") or (
        DEFAULT_PRICES.strong_in,
        DEFAULT_PRICES.strong_out,
    )
    prices = Prices(weak[0], weak[1], strong[0], strong[1])
    try:
        dataset = load_routellm_gsm8k(folder, limit=limit)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
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
                    folds=folds,
                    points=points,
                    seed=seed,
                    progress=tick,
                )
            )
        except ConfigError as exc:
            fail(str(exc), EXIT_INVALID)
        except ErpozError as exc:
            hint = ""
            if NEEDS_EMBEDDINGS & set(names):
                hint = (
                    " (the learned routers embed the questions with MiniLM: pip install "
                    "'erpoz[local]', or evaluate --router random,cascade)"
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
    _print(report, prices, seconds)
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
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _span(curve: Curve) -> str:
    shares = [p.strong_share for p in curve.points]
    return f"{min(shares) * 100:.0f}–{max(shares) * 100:.0f}%"


def _at_target(curve: Curve) -> str:
    p = curve.at_target
    if p is None:
        return "not reached"
    return f"{p.strong_share * 100:.1f}% ({p.accuracy:.4f})"


def _print(report: Report, prices: Prices, seconds: float) -> None:
    out.print(
        f"[bold]{report.questions}[/] questions ({report.contaminated_removed} contaminated "
        f"removed) · weak (Mixtral-8x7B) {report.weak_accuracy:.4f} · strong (GPT-4) "
        f"{report.strong_accuracy:.4f} · target 95% of strong = {report.target_accuracy:.4f} · "
        f"prices $/M in/out: weak {prices.weak_in:g}/{prices.weak_out:g}, strong "
        f"{prices.strong_in:g}/{prices.strong_out:g} · {seconds:.1f} s",
        highlight=False,
    )
    for curve in report.curves:
        table = Table(
            "setting",
            "strong calls",
            "accuracy",
            "PGR",
            "cost $",
            "vs GPT-4",
            title=f"{curve.router}: {curve.description}",
            title_justify="left",
        )
        for p in sorted(curve.points, key=lambda p: (p.strong_share, p.accuracy)):
            table.add_row(
                escape(p.setting),
                _pct(p.strong_share),
                f"{p.accuracy:.4f}",
                f"{p.pgr:.3f}",
                f"{p.cost_usd:.4f}",
                _pct(p.cost_usd / report.strong_only_cost_usd)
                if report.strong_only_cost_usd
                else "–",
            )
        out.print(table)
    summary = Table(
        "router",
        "span",
        "APGR",
        "CPT(50%)",
        "CPT(80%)",
        f"fewest strong calls at ≥ {report.target_accuracy:.4f}",
        title="summary",
        title_justify="left",
    )
    for curve in report.curves:
        summary.add_row(
            curve.router,
            _span(curve),
            _num(curve.apgr),
            _pct(curve.cpt50),
            _pct(curve.cpt80),
            _at_target(curve),
        )
    out.print(summary)


def render_markdown(report: Report) -> str:
    """The figures as Markdown tables (what docs/routing.md shows)."""
    lines = [
        f"{report.questions} questions ({report.contaminated_removed} contaminated removed); "
        f"weak {report.weak_accuracy:.4f}, strong {report.strong_accuracy:.4f}, target "
        f"{report.target_accuracy:.4f}; GPT-4 alone costs ${report.strong_only_cost_usd:.4f}, "
        f"Mixtral alone ${report.weak_only_cost_usd:.4f}.",
        "",
        "| router | strong calls span | APGR | CPT(50%) | CPT(80%) | fewest strong calls at the "
        "target |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.curves:
        lines.append(
            f"| {c.router} | {_span(c)} | {_num(c.apgr)} | {_pct(c.cpt50)} | "
            f"{_pct(c.cpt80)} | {_at_target(c)} |"
        )
    for c in report.curves:
        lines += [
            "",
            f"**{c.router}**: {c.description}",
            "",
            "| setting | strong calls | accuracy | PGR | cost $ | cost vs GPT-4 |",
            "|---|---|---|---|---|---|",
        ]
        for p in sorted(c.points, key=lambda p: (p.strong_share, p.accuracy)):
            vs = (
                _pct(p.cost_usd / report.strong_only_cost_usd)
                if report.strong_only_cost_usd
                else "–"
            )
            lines.append(
                f"| {p.setting} | {_pct(p.strong_share)} | {p.accuracy:.4f} | {p.pgr:.3f} | "
                f"{p.cost_usd:.4f} | {vs} |"
            )
    lines += ["", "**oracle**", "", "| strong calls | accuracy | PGR |", "|---|---|---|"]
    for p in report.oracle:
        lines.append(f"| {_pct(p.strong_share)} | {p.accuracy:.4f} | {p.pgr:.3f} |")
    return "\n".join(lines) + "\n"


def write_plot(report: Report, path: Path) -> None:
    """Accuracy against the share of strong calls, per router, with random routing, the
    oracle, both models alone and the target drawn in (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=90)
    try:
        ax.plot(
            [p.strong_share * 100 for p in report.oracle],
            [p.accuracy for p in report.oracle],
            color="black",
            linestyle=":",
            label="oracle",
        )
        ax.plot(
            [0, 100],
            [report.weak_accuracy, report.strong_accuracy],
            color="grey",
            linestyle="--",
            linewidth=1,
            label="random (expected)",
        )
        for curve in report.curves:
            pts: list[Point] = sorted(curve.points, key=lambda p: (p.strong_share, p.accuracy))
            style = {"linestyle": "--", "alpha": 0.8} if curve.router == "random" else {}
            lo, hi = pts[0].strong_share, pts[-1].strong_share
            span = "" if lo <= 0.005 and hi >= 0.995 else f" on {lo:.0%}–{hi:.0%}"
            ax.plot(
                [p.strong_share * 100 for p in pts],
                [p.accuracy for p in pts],
                marker=".",
                label=f"{curve.router} (APGR {_num(curve.apgr)}{span})",
                **style,  # type: ignore[arg-type]
            )
        ax.axhline(report.weak_accuracy, color="tab:grey", linewidth=0.8)
        ax.axhline(report.strong_accuracy, color="tab:red", linewidth=0.8)
        ax.axhline(report.target_accuracy, color="tab:red", linewidth=0.8, linestyle=":")
        ax.text(101, report.weak_accuracy, "Mixtral", va="center", fontsize=8)
        ax.text(101, report.strong_accuracy, "GPT-4", va="center", fontsize=8)
        ax.text(101, report.target_accuracy, "95%", va="center", fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("calls to the strong model (% of questions)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"erpoz routers on RouteLLM's GSM8K answers ({report.questions} questions)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
