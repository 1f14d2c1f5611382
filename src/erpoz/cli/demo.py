"""``erpoz demo``: the flagship offline demo (see :mod:`erpoz.demo`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._console import EXIT_FAILED, EXIT_INVALID, JsonOpt, err, fail, out

STATUS_STYLE = {"succeeded": "green", "waiting": "yellow", "failed": "red"}


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's project folder goes.")
    ] = Path(".erpoz/demo"),
    question: Annotated[
        str | None,
        typer.Option("--question", "-q", help="Ask your own question instead of the three."),
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="With --question: a scanned image to read (default: none).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the offline demo: ingest a corpus, read a scanned invoice, answer with citations,
    and show guards, review and audit at work (about 30 s; nothing is downloaded).

    [dim]Example:[/] erpoz demo   then   cd .erpoz/demo && erpoz runs ls
    """
    from ..demo import QUESTIONS, DemoRun, run_demo
    from ..errors import ErpozError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if image is not None and question is None:
        fail("--image goes with --question", EXIT_INVALID)
    if image is not None and not image.is_file():
        fail(f"--image {image}: no such file", EXIT_INVALID)
    asked = QUESTIONS if question is None else (("your question", question, False),)
    root = directory.resolve()
    if not as_json:
        out.print(
            f"[bold]erpoz demo[/] in {escape(str(directory))} (offline models; first run "
            "loads MiniLM and RapidOCR)"
        )

    def ingested(info: dict[str, Any]) -> None:
        if as_json:
            return
        out.print(
            f"\n[bold]memory[/]: {info['files']} documents ({info['ingested']} ingested, "
            f"{info['unchanged']} unchanged, {len(info['failed'])} failed), "
            f"{info['chunks']} new chunks in {info['seconds']:.1f} s"
        )
        for f in info["failed"]:
            out.print(f"  [red]failed[/] {escape(f['source'])}: {escape(str(f['reason']))}")

    def show(run: DemoRun) -> None:
        if not as_json:
            _print_run(run)

    try:
        with err.status("running the demo…") if not as_json and err.is_terminal else _null():
            report = asyncio.run(
                run_demo(root, questions=asked, image=image, on_run=show, on_ingest=ingested)
            )
    except ErpozError as exc:
        err.print(f"[red]error[/]: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        out.print_json(json.dumps(report.to_json(), default=str))
        return
    audit = report.audit
    mark = "[green]ok[/]" if audit["ok"] else "[red]PROBLEMS[/]"
    out.print(
        f"\n[bold]audit verify[/]: {mark}: {audit['runs']} runs, {audit['events']} events, "
        f"hash chains intact; heads digest {audit['heads_digest'][:16]}…"
    )
    waiting = [r for r in report.runs if r.status == "waiting"]
    rel = directory
    out.print(f"\n[bold]go on[/] (the demo is a project: cd {escape(str(rel))})")
    here = Path(sys.argv[0]).resolve().parent
    if shutil.which("erpoz") is None and (here / "erpoz").exists():
        out.print(f'  export PATH="{escape(str(here))}:$PATH"   # erpoz is not on your PATH yet')
    first = report.runs[0].run_id if report.runs else "RUN"
    lines = [
        "erpoz runs ls                          # the runs, newest first",
        f"erpoz runs show {first[:12]}             # one run, step by step",
        f"erpoz events {first[:12]}                # its event log",
        f"erpoz audit lineage {first[:12]} deliver # what produced the answer",
        "erpoz stats models; erpoz stats quality # cost, latency and guard pass rates",
    ]
    for r in waiting:
        lines += [
            f"erpoz review show {r.run_id[:12]}         # why it waits, with the evidence",
            f"erpoz review approve {r.run_id[:12]}      # or: erpoz review reject … --comment …",
        ]
    for line in lines:
        out.print(f"  {escape(line)}")
    out.print(f"\n[dim]done in {report.seconds:.1f} s[/]")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _print_run(run: Any) -> None:
    style = STATUS_STYLE.get(run.status, "white")
    out.print(f"\n[bold]{escape(run.title)}[/]  [{style}]{run.status}[/]  {run.run_id}")
    out.print(f"  [dim]question:[/] {escape(run.question)}")
    if run.output:
        out.print(f"  [bold]answer:[/] {escape(run.output['text'])}")
        for s in run.output.get("sources", []):
            out.print(f"    [dim]source[/] {escape(s)}")
    elif run.error:
        out.print(f"  [red]{escape(run.error)}[/]")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("step")
    table.add_column("status")
    table.add_column("ms", justify="right")
    table.add_column("what happened")
    for row in run.timeline:
        ms = "" if row["ms"] is None else f"{row['ms']:.0f}"
        st = STATUS_STYLE.get(row["status"].split()[0], "yellow")
        table.add_row(
            row["step"],
            f"[{st}]{row['status']}[/]",
            ms,
            escape("\n".join(row["notes"])),
        )
    out.print(table)
    cost = sum(r["cost_usd"] for r in run.timeline)
    out.print(f"  [dim]{run.seconds:.1f} s, cost {cost:.4f} USD[/]")
