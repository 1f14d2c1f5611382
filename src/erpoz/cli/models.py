"""``erpoz models`` (the configured models and routers; does one answer?) and ``erpoz stats``
(what the run store says each model did). Mounted by :mod:`erpoz.cli`.

Exit codes as for every erpoz command: 0 ok · 1 the model failed · 2 invalid project file or
usage · 4 store error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ..errors import ConfigError, ErpozError, ModelError, StoreError
from ..models import ModelHub, Models, ProjectConfig, Recorder, load_config
from ..observe.stats import model_stats
from ..project import build_hub
from ..store import BudgetLedger, BudgetScope, Event, Store
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_STORE,
    JsonOpt,
    StoreOpt,
    err,
    fail,
    open_or_fail,
    out,
    parse_since,
)

__all__ = ["models_app", "stats_app"]

models_app = typer.Typer(
    help="The models and routers of the project file (erpoz.yaml), and whether they answer.\n\n"
    "[dim]Example:[/] erpoz models ls",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
stats_app = typer.Typer(
    help="Statistics from the run store.\n\n[dim]Example:[/] erpoz stats models --since 24h",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Project file \\[default: $ERPOZ_CONFIG or ./erpoz.yaml; without one, the "
        "built-in offline models]",
        show_default=False,
    ),
]

_MAX_RUNS = 100_000


def _config(path: str | None) -> ProjectConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)


def _money(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.4g}"


# --- erpoz models ls ----------------------------------------------------------------------------
@models_app.command("ls")
def models_ls(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the configured models (kind, provider, price, context window, modalities, tags)
    and routers (type and members). Nothing is loaded or called.

    [dim]Example:[/] erpoz models ls --json
    """
    cfg = _config(config)
    models: list[dict[str, Any]] = [
        {
            "name": name,
            "kind": m.kind,
            "provider": m.provider,
            "price_in": m.price.input,
            "price_out": m.price.output,
            "context_window": m.context_window,
            "modalities": list(m.modalities),
            "tags": list(m.tags),
        }
        for name, m in cfg.models.items()
    ]
    routers: list[dict[str, Any]] = [
        {"name": n, "type": r.type, "members": r.members} for n, r in cfg.routers.items()
    ]
    budget = cfg.budget.model_dump() if cfg.budget is not None else None
    if as_json:
        out.print_json(
            data={"file": cfg.file, "models": models, "routers": routers, "budget": budget}
        )
        return
    source = cfg.file or "built-in defaults (no erpoz.yaml; see `erpoz models ls --help`)"
    out.print(f"models from [bold]{escape(source)}[/]")
    table = Table("model", "kind", "provider", "$/M in", "$/M out", "context", "modalities", "tags")
    for m in models:
        table.add_row(
            m["name"],
            m["kind"],
            m["provider"],
            _money(m["price_in"]),
            _money(m["price_out"]),
            f"{m['context_window']:,}",
            ", ".join(m["modalities"]),
            ", ".join(m["tags"]),
        )
    out.print(table)
    if routers:
        rtable = Table("router", "type", "members")
        for r in routers:
            rtable.add_row(r["name"], r["type"], ", ".join(r["members"]))
        out.print(rtable)
    if budget:
        limits = [
            f"{k.removesuffix('_usd').replace('_', ' ')} ${v}" for k, v in budget.items() if v
        ]
        out.print("budget: " + ", ".join(limits), highlight=False)


# --- erpoz models ping --------------------------------------------------------------------------
async def _ping(
    hub: ModelHub, name: str, kind: str, prompt: str, timeout: float, max_tokens: int
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    models = Models(hub, Recorder(lambda k, d: events.append((k, dict(d))), "", budget=hub.budget))
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if kind == "chat":
                r = await models.chat(name, prompt, max_tokens=max_tokens, timeout=timeout)
                info: dict[str, Any] = {
                    "reply": r.text,
                    "answered_by": r.model,
                    "route": list(r.route),
                    "input_tokens": r.usage.input_tokens,
                    "output_tokens": r.usage.output_tokens,
                    "cost_usd": r.cost_usd,
                }
            elif kind == "embed":
                e = await models.embed(name, prompt)
                info = {
                    "dimensions": len(e.vectors[0]) if e.vectors else 0,
                    "input_tokens": e.usage.input_tokens,
                }
            else:
                c = await models.classify(name, prompt)
                info = {"label": c.label, "scores": dict(c.scores)}
    except TimeoutError:
        raise ModelError(
            f"no answer within {timeout:g} s (raise --timeout if it is just slow)",
            model=name,
            retryable=True,
        ) from None
    info["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return info, events


@models_app.command("ping")
def models_ping(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A model or router name.")],
    config: ConfigOpt = None,
    prompt: Annotated[str, typer.Option(help="What to send.")] = "Reply with one word: pong",
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Give up after this many seconds.")
    ] = 30.0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Cap on the reply's length.")] = 16,
    as_json: JsonOpt = False,
) -> None:
    """Send a tiny request to a model (or through a router) and show latency, tokens and the
    reply. Exit 0 when it answered, 1 with the error when it did not.

    [dim]Example:[/] erpoz models ping default --prompt "Say hi"
    """
    cfg = _config(config)
    if name in cfg.routers:
        kind = "chat"
    elif name in cfg.models:
        kind = cfg.models[name].kind
    else:
        known = ", ".join([*cfg.models, *cfg.routers]) or "none configured"
        fail(f"unknown model '{name}' (models and routers: {known})", EXIT_INVALID)
    if kind == "ocr":
        fail(f"'{name}' is an OCR model; ping sends text", EXIT_INVALID)
    try:
        hub = build_hub(cfg)
        info, events = asyncio.run(_ping(hub, name, kind, prompt, timeout, max_tokens))
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    except ErpozError as exc:
        if as_json:
            out.print_json(data={"model": name, "ok": False, "error": str(exc)})
            raise typer.Exit(EXIT_FAILED) from None
        fail(str(exc), EXIT_FAILED)
    if as_json:
        out.print_json(
            data={
                "model": name,
                "ok": True,
                **info,
                "events": [{"kind": k, "data": d} for k, d in events],
            }
        )
        return
    out.print(f"[green]ok[/] [bold]{escape(name)}[/] in {info['latency_ms']} ms")
    for kind_, data in events:
        if kind_ == "route_decided":
            out.print(
                f"  route {escape(data['router'])}: {escape(str(data['reason']))}",
                highlight=False,
            )
        elif kind_ == "model_called" and data.get("status") == "error":
            out.print(
                f"  [yellow]{escape(data['model'])} failed:[/] {escape(str(data.get('error')))}",
                highlight=False,
            )
    if "reply" in info:
        out.print(
            f"  answered by {escape(info['answered_by'])} · {info['input_tokens']} in / "
            f"{info['output_tokens']} out tokens · ${info['cost_usd']:.6f}",
            highlight=False,
        )
        out.print(f"  reply: {escape(info['reply'])}", highlight=False)
    elif "dimensions" in info:
        out.print(f"  {info['dimensions']} dimensions", highlight=False)
    else:
        out.print(f"  label: {escape(info['label'])}", highlight=False)


# --- erpoz stats models -------------------------------------------------------------------------
async def _model_events(
    store: Store, cutoff: float | None, progress: Progress | None
) -> tuple[int, list[dict[str, Any]]]:
    try:
        runs = await store.list_runs(limit=_MAX_RUNS)
        if cutoff is not None:
            runs = [r for r in runs if r.updated >= cutoff]
        task = progress.add_task("reading runs", total=len(runs)) if progress else None
        found: list[dict[str, Any]] = []
        for info in runs:
            for e in await store.events(info.run_id):
                if e.kind == "model_called" and (cutoff is None or e.ts >= cutoff):
                    found.append(e.data)
            if progress is not None and task is not None:
                progress.advance(task)
        return len(runs), found
    finally:
        await store.close()


@stats_app.command("models")
def stats_models(
    store: StoreOpt = None,
    since: Annotated[
        str | None, typer.Option(help="Only the last span of time: 30m, 24h, 7d …")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per model, from the recorded model_called events: calls, errors, error rate, tokens,
    cost and p50/p95 latency of successful calls.

    [dim]Example:[/] erpoz stats models --since 24h --json
    """
    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_since(since)
        except ValueError as exc:
            fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)
    show = not as_json and err.is_terminal
    with Progress(console=err, transient=True, disable=not show) as progress:
        try:
            n_runs, found = asyncio.run(_model_events(st, cutoff, progress if show else None))
        except StoreError as exc:
            fail(str(exc), EXIT_STORE)
    rows = model_stats(found)
    if as_json:
        out.print_json(data={"since": since, "cutoff_ts": cutoff, "runs": n_runs, "models": rows})
        return
    window = f"in the last {since}" if since else "in all runs"
    out.print(f"{len(found)} model calls {window} ({n_runs} runs)", highlight=False)
    if not rows:
        return
    # numbers are never cut or wrapped: at 80 columns a simple box leaves room for all of
    # them, and a narrow terminal folds the model names instead
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("model", overflow="fold", min_width=8)
    for name in ("calls", "errors", "error %", "in tok", "out tok", "cost $", "p50 ms", "p95 ms"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["model"],
            str(r["calls"]),
            str(r["errors"]),
            f"{r['error_rate'] * 100:.1f}",
            f"{r['input_tokens']:,}",
            f"{r['output_tokens']:,}",
            f"{r['cost_usd']:.6f}",
            "–" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}",
            "–" if r["p95_ms"] is None else f"{r['p95_ms']:.1f}",
        )
    out.print(table)


# --- erpoz stats budget -------------------------------------------------------------------------
async def _ledger(store: Store) -> list[BudgetScope]:
    try:
        if not isinstance(store, BudgetLedger):
            return []
        return await store.budget_scopes()
    finally:
        await store.close()


@stats_app.command("budget")
def stats_budget(
    store: StoreOpt = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Project file \\[default: erpoz.yaml]")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The budget ledger every process of the store shares: per scope (the project, each
    tenant), the ceiling from erpoz.yaml, what was spent, what calls in flight hold, and what
    is left. A scope appears once a paid call was made against it.

    [dim]Example:[/] erpoz stats budget --store postgresql://erpoz@db/erpoz --json
    """
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)
    try:
        scopes = asyncio.run(_ledger(st))
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    budget = cfg.budget
    rows = []
    for s in scopes:
        if budget is None:
            ceiling = None
        elif s.tenant is None:
            ceiling = budget.per_project_usd
        else:
            ceiling = budget.tenants.get(s.tenant, budget.per_tenant_usd)
        left = None if ceiling is None else ceiling - s.spent_usd - s.reserved_usd
        rows.append({**s.to_json(), "ceiling_usd": ceiling, "left_usd": left})
    if as_json:
        out.print_json(data={"store": st.url, "scopes": rows})
        return
    if not rows:
        out.print("no paid call has been made against a budget in this store", highlight=False)
        return
    table = Table("scope", "ceiling $", "spent $", "held $", "left $")
    for r in rows:
        table.add_row(
            str(r["scope"]),
            "–" if r["ceiling_usd"] is None else f"{r['ceiling_usd']:.6f}",
            f"{r['spent_usd']:.6f}",
            f"{r['reserved_usd']:.6f}",
            "–" if r["left_usd"] is None else f"{r['left_usd']:.6f}",
        )
    out.print(table)


# --- erpoz stats quality ------------------------------------------------------------------------
def _seen(first: float, last: float) -> str:
    """``11-25 09:12–14:30`` (one day) or ``11-24 09:12–11-25 14:30``."""
    a, b = time.localtime(first), time.localtime(last)
    end = "%H:%M" if a[:3] == b[:3] else "%m-%d %H:%M"
    return f"{time.strftime('%m-%d %H:%M', a)}–{time.strftime(end, b)}"


@stats_app.command("quality")
def stats_quality(
    store: StoreOpt = None,
    since: Annotated[
        str | None, typer.Option(help="Only the last span of time: 30m, 24h, 7d …")
    ] = None,
    window: Annotated[
        int, typer.Option(min=1, help="Checks in the rolling pass rate (the latest N).")
    ] = 50,
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Flag rolling pass rates below this (0..1)."),
    ] = 0.8,
    min_samples: Annotated[
        int | None,
        typer.Option(
            "--min-samples",
            min=1,
            help="Checks the window must hold before a drop counts \\[default: 20, at most "
            "--window]",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            help="Group rows by model, step, guard, or a comma-separated mix (model,step)."
        ),
    ] = "model,step,guard",
    as_json: JsonOpt = False,
) -> None:
    """Per model (or tool) × step × guard, from the recorded guard_decided events: checks,
    pass rate (a score of 1.0 passes), mean score, the rolling pass rate over the last
    --window checks, how often it dropped below --threshold, and the quality_alert events
    recorded live. Rows whose rolling pass rate is below the threshold are highlighted.

    [dim]Example:[/] erpoz stats quality --since 7d --by model --json
    """
    from ..observe import DIMENSIONS, quality_events, quality_stats

    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_since(since)
        except ValueError as exc:
            fail(str(exc), EXIT_INVALID)
    dims = tuple(d.strip() for d in by.split(",") if d.strip())
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad or not dims:
        fail(
            f"--by {by!r}: choose from model, step, guard (comma-separated for several)",
            EXIT_INVALID,
        )
    st = open_or_fail(store)
    show = not as_json and err.is_terminal

    async def collect(progress: Progress | None) -> dict[str, list[Event]]:
        task = None

        def tick(total: int) -> None:
            nonlocal task
            if progress is None:
                return
            if task is None:
                task = progress.add_task("reading runs", total=total)
            progress.advance(task)

        try:
            return await quality_events(st, since=cutoff, max_runs=_MAX_RUNS, on_run=tick)
        finally:
            await st.close()

    with Progress(console=err, transient=True, disable=not show) as progress:
        try:
            by_run = asyncio.run(collect(progress if show else None))
        except StoreError as exc:
            fail(str(exc), EXIT_STORE)
    report = quality_stats(
        by_run, window=window, threshold=threshold, min_samples=min_samples, by=dims
    )
    if as_json:
        out.print_json(data={"since": since, "cutoff_ts": cutoff, **report.to_json()})
        return
    span = f"in the last {since}" if since else "in all runs"
    out.print(
        f"{report.checks} guard checks {span} ({report.runs} runs) · rolling window "
        f"{report.window}, threshold {report.threshold:g}, alerts after {report.min_samples} "
        f"checks · {report.alerts_recorded} quality alerts recorded",
        highlight=False,
    )
    if not report.rows:
        out.print(
            "no guard checks to report: guard_decided events are recorded when guards are "
            "configured (the guards section of erpoz.yaml, or a Guardrails service)",
            highlight=False,
        )
        return
    table = Table(
        caption="alerts: drops below the threshold computed here / quality_alert events "
        "recorded live",
    )
    for d in report.by:
        table.add_column("model/tool" if d == "model" else d, overflow="fold")
    for name in ("checks", "pass %", "mean", "rolling %", "alerts"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("seen", no_wrap=True)
    below = 0
    for r in report.rows:
        keys = {"model": r.model, "step": r.step, "guard": r.guard}
        flagged = r.below_threshold
        below += flagged
        table.add_row(
            *(escape(str(keys[d])) for d in report.by),
            str(r.checks),
            f"{r.pass_rate * 100:.1f}",
            f"{r.mean_score:.3f}",
            f"{r.rolling_pass_rate * 100:.1f}",
            f"{len(r.crossings)} / {r.alerts_recorded}",
            _seen(r.first_ts, r.last_ts),
            style="bold red" if flagged else None,
        )
    out.print(table)
    if below:
        out.print(
            f"[red]{below} of {len(report.rows)} rows below the threshold "
            f"{report.threshold:g}[/] (rolling pass rate over the last {report.window} checks)",
            highlight=False,
        )
