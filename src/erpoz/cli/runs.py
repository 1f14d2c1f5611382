"""``erpoz runs``: list, inspect, resume, replay, fork and cancel runs (its ``send``, ``event``,
``wake`` and ``diff`` live in :mod:`.waits` and :mod:`.diff`, imported when used)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..errors import RunError
from ..user_json import read_json_file
from ._console import (
    EXIT_INVALID,
    HoldOpt,
    InputJsonOpt,
    InputsOpt,
    JsonOpt,
    StoreOpt,
    build_engine,
    fail,
    open_or_fail,
    out,
)
from .lazy import LazyGroup

if TYPE_CHECKING:  # the engine, flows and pydantic are imported by the commands that use them
    from ..flow import Plan
    from ..store import Event, Store
from ._running import (
    STYLE,
    ConfigOpt,
    call,
    drive,
    load_plan,
    parse_inputs,
    report,
    report_sleep,
    resume_here,
    run_and_events,
    with_close,
)

runs_app = typer.Typer(
    help="List, inspect, resume, replay and cancel runs.\n\n"
    "[dim]Example:[/] erpoz runs ls --status waiting",
    no_args_is_help=True,
    cls=LazyGroup,
)

_STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")


@runs_app.command("ls")
def runs_ls(
    store: StoreOpt = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only runs with this status: queued, running, waiting, succeeded, failed, "
            "cancelled."
        ),
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Only runs of this flow (by name).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    tenant: Annotated[
        str | None, typer.Option(help="Only runs of this tenant ('-': runs without one).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first.

    [dim]Example:[/] erpoz runs ls --status waiting --tenant acme
    """
    if status is not None and status not in _STATUSES:
        fail(f"--status {status!r}: expected one of {', '.join(_STATUSES)}", EXIT_INVALID)
    st = open_or_fail(store)
    infos = call(with_close(st, st.list_runs(status=status, flow=flow, limit=limit, tenant=tenant)))
    if as_json:
        out.print_json(data=[i.to_json() for i in infos])
        return
    # run ids and times are never cut: at 80 columns a simple box leaves room for them, and a
    # narrow terminal folds the flow and the note instead
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("run", no_wrap=True, min_width=max((len(i.run_id) for i in infos), default=3))
    table.add_column("flow", overflow="fold", min_width=6)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold", ratio=1)
    for i in infos:
        note = i.error or (f"review: {i.waiting_step}" if i.waiting_step else "")
        if i.parent_run_id:
            note = f"replay of {i.parent_run_id} from {i.replay_from}" + (
                f"; {note}" if note else ""
            )
        table.add_row(
            i.run_id,
            i.flow,
            f"[{STYLE.get(i.status, 'white')}]{i.status}[/]",
            _when(i.created),
            str(i.head_seq),
            note[:60],
        )
    out.print(table)


def _when(ts: float) -> str:
    """``11:41:21`` today, ``12-07 11:41:21`` this year, else ``2025-12-07 11:41``."""
    t, now = time.localtime(ts), time.localtime()
    if t[:3] == now[:3]:
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%m-%d %H:%M:%S" if t[0] == now[0] else "%Y-%m-%d %H:%M", t)


def _rows(events: list[Event]) -> list[dict[str, Any]]:
    """The run's timeline (:func:`erpoz.observe.timeline.timeline`) as ``runs show`` prints it:
    start in ms from the run's first event, and how a success came about in its status."""
    from ..observe.timeline import timeline

    t0 = events[0].ts if events else 0.0
    rows = []
    for r in timeline(events):
        status = r["status"]
        if status == "succeeded" and r["copied_from"]:
            status = "copied"
        elif status == "succeeded" and r["cached"]:
            status = "succeeded (cached)"
        started = r["started"]
        rows.append(
            {
                "step": r["step"],
                "status": status,
                "attempts": r["attempts"],
                "start_ms": None if started is None else round((started - t0) * 1000, 1),
                "ms": r["ms"],
                "error": r["error"],
            }
        )
    return rows


STREAM_ROWS = 200
"""A timeline longer than this is written as plain lines, row by row, instead of a table."""


def _blank(value: object) -> str:
    return "" if value is None else str(value)


def _print_steps(steps: list[dict[str, Any]]) -> None:
    if len(steps) <= STREAM_ROWS:
        table = Table("step", "status", "attempts", "start ms", "ms", "error")
        for s in steps:
            table.add_row(
                s["step"],
                f"[{STYLE.get(s['status'].split()[0], 'white')}]{s['status']}[/]",
                str(s["attempts"]),
                _blank(s["start_ms"]),
                _blank(s["ms"]),
                (s["error"] or "")[:70],
            )
        out.print(table)
        return
    width = max(len(s["step"]) for s in steps)
    lines = [f"{'step':<{width}}  {'status':<18} attempts  start ms        ms  error\n"]
    for s in steps:  # (one string per row, written at once: 100,000 rows in a blink)
        start, ms, error = s["start_ms"], s["ms"], s["error"]
        lines.append(
            f"{s['step']:<{width}}  {s['status']:<18} {s['attempts']:>8}  "
            f"{'' if start is None else start:>8}  {'' if ms is None else ms:>8}  "
            f"{error[:70] if error else ''}\n"
        )
    out.file.write("".join(lines))
    out.file.flush()


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="Show at most this many rows of the timeline."),
    ] = None,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many rows of the timeline first.")
    ] = 0,
) -> None:
    """Show a run: status, inputs, the step timeline and the output. A long timeline is
    written row by row as plain lines; --limit and --offset page through it.

    [dim]Example:[/] erpoz runs show r0193a… --limit 50 --offset 100
    """
    st = open_or_fail(store)
    info, events = call(run_and_events(st, run_id))
    everything = _rows(events)
    end = None if limit is None else offset + limit
    steps = everything[offset:end]
    if as_json:
        out.print_json(data={**info.to_json(), "steps": steps, "steps_total": len(everything)})
        return
    colour = STYLE.get(info.status, "white")
    out.print(
        f"run [bold]{info.run_id}[/] · flow [bold]{info.flow}[/] · [{colour}]"
        f"{info.status}[/] · {info.head_seq} events"
    )
    if info.parent_run_id:
        out.print(f"replay of {info.parent_run_id} from step {info.replay_from}")
    out.print("inputs:", json.loads(info.inputs))
    _print_steps(steps)
    if len(steps) < len(everything):
        shown = f"rows {offset + 1}–{offset + len(steps)}" if steps else "no rows"
        more = (
            f"; next: --offset {offset + len(steps)}"
            if offset + len(steps) < len(everything)
            else ""
        )
        out.print(f"{shown} of {len(everything)} in the timeline{more}", highlight=False)
    if info.output is not None:
        out.print("output:")
        out.print_json(info.output)
    if info.error:
        out.print(f"[red]error: {info.error}[/]", highlight=False)
    if info.status == "waiting" and info.wake_at is not None:
        from ..engine import RunResult

        report_sleep(
            RunResult(
                info.run_id,
                "waiting",
                waiting_steps=(info.waiting_step or "?",),
                wake_at=info.wake_at,
                wake_on=info.wake_on,
            ),
            "",
        )
    elif info.status == "waiting":
        out.print(
            f"waiting for review of [yellow]{info.waiting_step}[/]: "
            f"erpoz runs resume {info.run_id} --approve | --reject | --edit FILE",
            highlight=False,
        )


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the pending review.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject it (the run fails).")] = False,
    edit: Annotated[
        Path | None,
        typer.Option("--edit", help="Replace the step's output by this JSON file's content."),
    ] = None,
    step: Annotated[str | None, typer.Option(help="Which waiting step, when several wait.")] = None,
    reviewer: Annotated[
        str,
        typer.Option(
            help="Who decides \\[default: $ERPOZ_REVIEWER, else reviewer: in erpoz.yaml, "
            "else the OS user]."
        ),
    ] = "",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    flow: Annotated[
        str | None,
        typer.Option(help="Load the flow from here instead of the run's recorded source."),
    ] = None,
    store: StoreOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a live table of steps.")] = True,
    config: ConfigOpt = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="A sleeping run that is not due yet: wait here until it is, then go on."
        ),
    ] = False,
    hold: HoldOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Continue a run that waits for review, crashed, was interrupted or sleeps.

    Steps whose success is recorded are not run again. A sleeping run goes on once it is due
    (before that it is reported as it is, exit 3, unless --wait).

    [dim]Examples:[/] erpoz runs resume RUN · erpoz runs resume RUN --approve ·
    erpoz runs resume RUN --edit fixed.json --comment "tone"
    """
    if sum((approve, reject, edit is not None)) > 1:
        fail("choose one of --approve, --reject, --edit", EXIT_INVALID)
    decision = None
    if approve or reject or edit is not None:
        output = None
        if edit is not None:
            try:
                output = read_json_file(edit)
            except ValueError as exc:
                fail(f"--edit {edit}: {exc}", EXIT_INVALID)
        action = "approve" if approve else "reject" if reject else "edit"
        from ..engine import Decision

        decision = Decision(action, output=output, reviewer=reviewer, comment=comment, step=step)
    resume_here(run_id, decision, flow, store, progress, as_json, config, wait=wait, hold=hold)


@runs_app.command("replay")
def runs_replay(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    from_step: Annotated[
        str | None, typer.Option("--from", help="Re-run from this step on.")
    ] = None,
    inputs: InputsOpt = None,
    input_json: InputJsonOpt = None,
    flow: Annotated[
        str | None,
        typer.Option(
            help="Use this flow (e.g. a changed version) instead of the run's recorded source."
        ),
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fork a run: a new run linked to it, with its recorded inputs (-i changes some) and this
    project's configuration (--config), that re-runs the step --from and what follows it, and
    every step reading a changed input; the other steps keep their recorded outputs.

    Compare the two with erpoz runs diff RUN NEW.

    [dim]Examples:[/] erpoz runs replay RUN --from answer --config erpoz.yaml ·
    erpoz runs fork RUN -i ticket="refund INV-2"
    """
    plan = load_plan(flow) if flow else None
    st = open_or_fail(store)
    if inputs or input_json is not None:
        base = plan or call(_recorded_plan(st, run_id))
        changes = parse_inputs(base, inputs or [], input_json)
    else:
        changes = {}
    if from_step is None and not changes:
        fail("say what runs again: --from STEP, or inputs that change (-i name=value)", 2)
    engine = build_engine(st, config=config)
    forking = engine.fork(run_id, from_step, inputs=changes, flow=plan)
    try:
        result = call(drive(engine, forking, None))
    finally:
        engine.executor.shutdown()
    if not as_json:
        what = f"from {from_step}" if from_step else "with new inputs"
        out.print(f"{'forked' if changes else 'replayed'} {run_id} {what} as a new run:")
    report(result, as_json, st, config)


runs_app.command("fork")(runs_replay)


async def _recorded_plan(st: Store, run_id: str) -> Plan:
    """The plan of a run's recorded source (to read -i values by its input types)."""
    info = await st.get_run(run_id)
    if info is None:
        raise RunError(f"no run {run_id!r} in {st.url}", run_id=run_id)
    if not info.source:
        raise RunError(
            f"run {info.run_id} was started from a flow object with no source; give --flow",
            run_id=info.run_id,
        )
    from .. import load_flow

    return load_flow(info.source).compile()


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a run: at once when no process runs it, else at its next step.

    [dim]Example:[/] erpoz runs cancel RUN
    """
    from ..engine import Engine

    st = open_or_fail(store)
    engine = Engine(st)
    outcome = call(with_close(st, engine.cancel(run_id)))
    if as_json:
        out.print_json(data={"run_id": run_id, "cancel": outcome})
    else:
        out.print(f"run {run_id}: cancel {outcome}")
