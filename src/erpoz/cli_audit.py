"""``erpoz audit``: verify the hash chains of the run store, export records for auditors."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

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
from .audit import AuditReport, export, verify
from .errors import StoreError
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
) -> None:
    """Export what record-keeping for an AI system needs: timestamps, flow and inputs, model
    calls, decisions, reviewers, outputs, and each event's hash.

    [dim]Example:[/] erpoz audit export --since 7d -o audit.jsonl
    """
    if fmt != "jsonl":
        fail(f"--format {fmt!r}: only jsonl is supported", EXIT_INVALID)
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
        output.write_text(text, encoding="utf-8")
        err.print(f"{len(lines)} records written to {output}")
