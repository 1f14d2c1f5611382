"""``erpoz audit``: verify the hash chains of the run store, export records for auditors, and
trace the lineage of a step's output."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_RUN,
    EXIT_STORE,
    JsonOpt,
    StoreOpt,
    err,
    fail,
    open_or_fail,
    out,
    parse_since,
)
from .audit import AuditReport, Lineage, StepLineage, UnknownStep, export, lineage, verify
from .errors import FlowError, RunError, StoreError
from .store import Store

audit_app = typer.Typer(
    help="Tamper evidence: verify hash chains, export records.\n\n"
    "[dim]Example:[/] erpoz audit verify --all",
    no_args_is_help=True,
)


async def _verify(store: Store, run_id: str | None) -> AuditReport:
    try:
        if run_id is not None:
            info = await store.get_run(run_id)
            if info is None:
                raise LookupError(f"no run {run_id!r} in {store.url}")
            run_id = info.run_id
        return await verify(store, run_id)
    finally:
        await store.close()


@audit_app.command("verify")
def verify_cmd(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="One run (a unique prefix works).")
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the store.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute hash chains and the chain over run heads; name the first event that was
    changed, removed or reordered. Exit 0 when everything checks out, 1 when not.

    [dim]Example:[/] erpoz audit verify --all --json
    """
    if (run_id is None) == (not all_runs):
        fail("give a RUN or --all", EXIT_INVALID)
    st = open_or_fail(store)
    try:
        report = asyncio.run(_verify(st, run_id))
    except LookupError as exc:
        fail(str(exc), 5)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        out.print_json(data=report.to_json())
    else:
        rate = f"{report.events / report.seconds:,.0f} events/s" if report.seconds else ""
        if report.ok:
            out.print(
                f"[green]ok[/]: {report.runs} runs, {report.events} events verified "
                f"({report.seconds * 1000:.1f} ms, {rate})"
            )
        else:
            out.print(
                f"[red]FAILED[/]: {len(report.problems)} of {report.runs} runs do not check out"
            )
            for p in report.problems:
                out.print(f"  {escape(str(p))}", highlight=False)
        out.print(f"heads digest: {report.heads_digest}", highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("export")
def export_cmd(
    since: Annotated[
        str, typer.Option(help="Runs created in this span before now: 30m, 24h, 7d, …")
    ] = "24h",
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one record per event)")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    store: StoreOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With --output: print a JSON summary (records, output, since) instead of a "
            "line of text. The records themselves are JSON lines either way.",
        ),
    ] = False,
) -> None:
    """Export what record-keeping for an AI system needs: timestamps, flow and inputs, model
    calls, decisions, reviewers, outputs, and each event's hash.

    [dim]Example:[/] erpoz audit export --since 7d -o audit.jsonl --json
    """
    if fmt != "jsonl":
        fail(f"--format {fmt!r}: only jsonl is supported", EXIT_INVALID)
    if output is not None and output.is_dir():
        fail(f"--output {output}: is a folder; give a file to write", EXIT_INVALID)
    try:
        cutoff = time.time() - parse_since(since)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)

    async def collect() -> list[str]:
        try:
            return [json.dumps(r, ensure_ascii=False) for r in await export(st, since=cutoff)]
        finally:
            await st.close()

    try:
        lines = asyncio.run(collect())
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"--output {output}: cannot write it: {exc.strerror or exc}", EXIT_INVALID)
        if as_json:
            summary = {"records": len(lines), "output": str(output), "since": since}
            out.print_json(data={**summary, "cutoff_ts": cutoff})
        else:
            err.print(f"{len(lines)} records written to {output}")


# --- erpoz audit lineage ------------------------------------------------------------------------
@audit_app.command("lineage")
def lineage_cmd(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run (a unique prefix works).")],
    step: Annotated[
        str,
        typer.Argument(
            metavar="STEP",
            help="A step of the run, or one execution of it: answer[3], revise#2, sub/inner.",
        ),
    ],
    flow: Annotated[
        str | None,
        typer.Option(
            "--flow",
            help="Take the graph from this flow (file.yaml, module:attr, file.py:attr) instead "
            "of the source the run recorded.",
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which inputs, models, tools and decisions produced a step's output: the step, the steps
    upstream of it in the flow's graph, and for each its output hash, model calls, routing,
    tool calls, policy, guard and review decisions; the run's inputs (hashed) and tags.

    [dim]Example:[/] erpoz audit lineage r1a2121f8760 reply --json
    """
    given = None
    if flow is not None:
        from .flow._load import load_flow

        try:
            given = load_flow(flow)
        except FlowError as exc:
            fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)

    async def trace() -> Lineage:
        try:
            return await lineage(st, run_id, step, flow=given)
        finally:
            await st.close()

    try:
        result = asyncio.run(trace())
    except RunError as exc:
        fail(str(exc), EXIT_RUN)
    except UnknownStep as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        out.print_json(data=result.to_json())
        return
    _print_lineage(result)


def _print_lineage(lin: Lineage) -> None:
    graph = lin.graph if lin.graph_note is None else f"{lin.graph} ({lin.graph_note})"
    out.print(
        f"run {lin.run_id} · flow {escape(lin.flow)} · {lin.run_status} · graph: {escape(graph)}",
        highlight=False,
    )
    inputs = ", ".join(f"{escape(i['name'])} {i['sha256'][:12]}" for i in lin.inputs) or "none"
    out.print(f"inputs: {inputs}", highlight=False)
    if lin.tags:
        tags = ", ".join(f"{escape(k)}={escape(v)}" for k, v in lin.tags.items())
        out.print(f"tags: {tags}", highlight=False)
    label = lin.step.step if lin.execution is None else f"{lin.step.step} ({lin.execution})"
    root = Tree(_step_label(lin.step, label))
    _add_records(root, lin.step)
    if lin.upstream:
        branch = root.add(f"[bold]upstream[/] ({len(lin.upstream)} steps, dependency order)")
        for up in lin.upstream:
            _add_records(branch.add(_step_label(up, up.step)), up)
    else:
        root.add("[dim]no upstream steps: it reads only the run's inputs[/]")
    out.print(root, highlight=False)


def _step_label(s: StepLineage, name: str) -> str:
    parts = [f"[bold]{escape(name)}[/]", s.status]
    if s.output_sha256 is not None:
        parts.append(f"output {s.output_sha256[:12]} ({s.output_bytes} B)")
    if s.cached:
        parts.append("cached")
    if s.copied_from:
        parts.append(f"copied from {s.copied_from}")
    if s.deps:
        parts.append("needs " + ", ".join(escape(d) for d in s.deps))
    many = [x for x in s.executions if x["execution"] != s.step]
    if many:
        parts.append(f"{len(many)} execution{'s' if len(many) != 1 else ''}")
    return " · ".join(parts)


def _add_records(node: Tree, s: StepLineage) -> None:
    for m in s.models:
        text = f"model {escape(str(m.get('model')))}"
        if m.get("kind"):
            text += f" ({escape(str(m['kind']))})"
        if "status" in m:
            text += f" {escape(str(m['status']))}"
        if "input_tokens" in m or "output_tokens" in m:
            text += f" · {m.get('input_tokens', 0)} in / {m.get('output_tokens', 0)} out tok"
        cost = m.get("cost_usd")
        if isinstance(cost, int | float):
            text += f" · ${cost:.6f}"
        node.add(text + _at(m, s))
    for r in s.routes:
        node.add(
            f"route {escape(str(r.get('router')))} → {escape(str(r.get('winner')))}: "
            f"{escape(str(r.get('reason', '')))}" + _at(r, s)
        )
    for t in s.tools:
        text = f"tool {escape(str(t.get('tool')))}"
        if "status" in t:
            text += f" {escape(str(t['status']))}"
        if "result_bytes" in t:
            text += f" · {t['result_bytes']} B result"
        if t.get("repeat"):
            text += f" · repeated after a crash or error ({t['repeat']}×, same key)"
        node.add(text + _at(t, s))
    for w in s.memory:
        text = f"memory {escape(str(w.get('op')))}"
        if w.get("session"):
            text += f" session {escape(str(w['session']))}"
        if "seq" in w:
            text += f" turn {w['seq']}"
        if w.get("source"):
            text += f" {escape(str(w['source']))}"
        if isinstance(w.get("files"), list):
            text += f" · {len(w['files'])} file(s)"
        node.add(text + _at(w, s))
    for p in s.policy:
        node.add(
            f"policy {escape(str(p.get('resource')))}: {p.get('action')} "
            f"(rule {escape(str(p.get('rule')))})" + _at(p, s)
        )
    for g in s.guards:
        kinds = ", ".join(g.get("findings", [])) or "clean"
        node.add(
            f"guard {g.get('checkpoint')}: {g.get('action')} · {escape(kinds)}"
            + (f" (rule {escape(str(g['rule']))})" if g.get("rule") else "")
            + _at(g, s)
        )
    for x in s.escalations:
        node.add(f"escalated {x.get('from')} → {x.get('to')} (rule {x.get('rule')})" + _at(x, s))
    for r in s.reviews:
        if r["event"] == "requested":
            text = f"review requested: {escape(str(r.get('reason', '')))}"
        else:
            text = f"review {r.get('decision')} by {escape(str(r.get('reviewer')))}"
        node.add(text + _at(r, s))


def _at(record: dict[str, object], s: StepLineage) -> str:
    where = record.get("execution")
    return f" [dim]@ {escape(str(where))}[/]" if where and where != s.step else ""
