"""``erpoz migrate SRC DST``: copy a run store into another (SQLite into PostgreSQL, back, or
between two stores of one kind) and verify the audit chains on both sides.

Mounted through ``lazy.py``. Exit codes: 0 copied and verified (or, with ``--dry-run``, nothing in
the way) · 1 the source does not verify, nothing copied · 2 wrong usage · 4 store error, a
conflicting run, or a copy that does not match its source · 130 interrupted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..audit import verify
from ..errors import StoreError
from ..store import BATCH_EVENTS, MigrationError, MigrationReport, migrate
from ._console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_STORE,
    JsonOpt,
    err,
    fail,
    out,
)

_MEMORY = ("memory", ":memory:", "memory://")


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _ids(run_ids: list[str], most: int = 5) -> str:
    shown = ", ".join(run_ids[:most])
    return shown + (f" and {len(run_ids) - most} more" if len(run_ids) > most else "")


def migrate_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="The store to copy: a SQLite path, sqlite:///PATH or postgresql://…",
            show_default=False,
        ),
    ],
    destination: Annotated[
        str,
        typer.Argument(
            metavar="DST",
            help="The store to copy into, created and migrated when needed "
            "(postgresql://…?options=-csearch_path%3DSCHEMA picks a schema).",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Say what would be copied; write nothing (not even the destination)."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Copy a source whose chains do not verify, as it is (the destination then "
            "reports the same problems).",
        ),
    ] = False,
    include_active: Annotated[
        bool,
        typer.Option(
            "--include-active",
            help="Also copy runs a live process owns, as they are now (migrate again later for "
            "what they add).",
        ),
    ] = False,
    batch: Annotated[
        int,
        typer.Option(
            min=1, help="Events per destination transaction (it always holds whole runs)."
        ),
    ] = BATCH_EVENTS,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Copy a run store into another — SQLite into PostgreSQL, back, or between two stores of
    one kind — and verify the audit chains on both sides. The source must verify first (else it
    is refused, naming the first bad event, unless --force). Runs already in the destination are
    skipped and runs that grew get their new events; a run whose events differ stops everything
    before anything is written. Nothing in the destination is overwritten or deleted, so the same
    command continues an interrupted migration. Runs a live process owns are left behind unless
    --include-active. Afterwards the copied runs' chains and heads are checked in the destination.

    Exit codes: 0 copied and verified · 1 the source does not verify, nothing copied ·
    2 wrong usage · 4 store error, a conflicting run, or a copy that does not match.

    [dim]Example:[/] erpoz migrate .erpoz/erpoz.db postgresql://erpoz@db:5432/erpoz
    """
    if source == destination:
        fail(f"SRC and DST are both {source!r}: name another destination", EXIT_INVALID)
    for role, url in (("SRC", source), ("DST", destination)):
        if url in _MEMORY:
            fail(
                f"{role} {url!r} is an in-memory store: nothing to copy to or from; name a "
                "SQLite file or a postgresql:// URL",
                EXIT_INVALID,
            )
    show = progress and not as_json and err.is_terminal
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True, disable=not show) as bar:
            task = bar.add_task("opening the stores", total=None, rate="")
            began: dict[str, float] = {}  # when each phase started

            def on_progress(phase: str, done: int, total: int | None) -> None:
                now = time.perf_counter()
                spent = now - began.setdefault(phase, now)
                rate = f"{done / spent:,.0f}/s" if total and spent > 0.5 else ""
                bar.update(task, description=phase, completed=done, total=total, rate=rate)

            report = asyncio.run(
                migrate(
                    source,
                    destination,
                    verify=verify,
                    force=force,
                    include_active=include_active,
                    dry_run=dry_run,
                    batch_events=batch,
                    on_progress=on_progress,
                )
            )
    except MigrationError as exc:
        if as_json:
            out.print_json(data=exc.to_json())
        for p in exc.problems[1:10]:
            err.print(f"  {escape(str(p))}", highlight=False)
        fail(str(exc), EXIT_FAILED if exc.kind == "source" else EXIT_STORE)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except KeyboardInterrupt:
        err.print(
            "interrupted: every batch holds whole runs, so nothing is half-copied; run the same "
            "command again to continue"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        out.print_json(data=report.to_json())
    else:
        _print(report)


def _print(r: MigrationReport) -> None:
    verb = "would copy" if r.dry_run else "copied"
    rate = r.events_per_second
    speed = "" if r.dry_run or rate is None else f", {rate:,.0f} events/s"
    top = "top" if r.dry_run else "topped"
    grown = f" and {top} up {_plural(len(r.topped_up), 'run')}" if r.topped_up else ""
    out.print(
        f"{verb} {_plural(r.copied, 'new run')}{grown}: {_plural(r.events, 'event')}, "
        f"{_plural(r.blobs, 'blob')}, {_plural(r.cache, 'cache row')} ({r.seconds:.2f} s{speed})",
        highlight=False,
    )
    out.print(f"  from {escape(r.source)}", highlight=False)
    out.print(f"  to   {escape(r.destination)}", highlight=False)
    out.print(
        f"  source verified: {_plural(r.source_runs, 'run')}, {_plural(r.source_events, 'event')}",
        highlight=False,
    )
    if r.topped_up:
        out.print(f"  topped up: {_ids(r.topped_up)}", highlight=False)
    if r.messages or r.run_events or any(r.state.values()):
        rest = [f"{_plural(r.messages, 'message')}", f"{_plural(r.run_events, 'run event')}"]
        rest += [f"{n:,} {table.replace('_', ' ')}" for table, n in r.state.items()]
        out.print(f"  also {verb}: {', '.join(rest)}", highlight=False)
    skipped = [f"{_plural(r.already_there, 'run')} already there"]
    if r.continued:
        skipped.append(f"{len(r.continued):,} continued in the destination ({_ids(r.continued)})")
    if r.cache_present:
        skipped.append(f"{_plural(r.cache_present, 'cache row')} already there")
    out.print(f"  skipped: {'; '.join(skipped)}", highlight=False)
    if not r.dry_run:
        in_both = r.copied + len(r.topped_up) + r.already_there
        out.print(
            f"  destination verified: {_plural(r.runs_verified, 'run')} written, chains intact; "
            f"the {in_both:,} runs in both stores record the same heads, digest {r.heads_digest}",
            highlight=False,
        )
    if r.tree is not None:
        t = r.tree
        if t.mirrors:
            out.print(
                f"  merkle tree: the source's ({t.size:,} events, log {t.origin}, root "
                f"{t.root[:16]}…): checkpoints signed for the source verify against the copy",
                highlight=False,
            )
        else:
            err.print(
                f"[yellow]merkle tree:[/] the destination's own ({t.size:,} events; "
                f"{t.appended:,} added): {escape(t.why_not)}; checkpoints of the source do not "
                "carry over: sign a new one (`erpoz audit checkpoint`)",
                highlight=False,
            )
    for p in r.source_problems:
        err.print(
            f"[yellow]copied with the source's problem (--force):[/] {escape(str(p))}",
            highlight=False,
        )
    if r.columns_left_out:
        err.print(
            f"[yellow]not copied:[/] the destination's runs table has no column "
            f"{', '.join(r.columns_left_out)} (is its erpoz older?)",
            highlight=False,
        )
    if r.active:
        err.print(
            f"[yellow]left behind:[/] {_plural(len(r.active), 'run')} owned by a live process: "
            + escape("; ".join(str(a) for a in r.active[:5]))
            + ("; …" if len(r.active) > 5 else "")
            + ". Migrate again when they have finished, or pass --include-active to copy them "
            "as they are now",
            highlight=False,
        )
