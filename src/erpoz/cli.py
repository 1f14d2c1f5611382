"""The ``erpoz`` command: run and validate flows, inspect, resume, replay and cancel runs.

Exit codes: 0 succeeded · 1 run failed · 2 invalid flow or usage · 3 waiting for review ·
4 store error · 5 unknown run or wrong state · 6 cancelled · 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ._console import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN,
    EXIT_STORE,
    EXIT_WAITING,
    ExecutorOpt,
    HoldOpt,
    InputJsonOpt,
    InputsOpt,
    JsonOpt,
    RayAddressOpt,
    StoreOpt,
    TagsOpt,
    auto_checkpoints,
    build_engine,
    err,
    fail,
    open_or_fail,
    out,
    reviewer_for,
    with_checkpoints,
)
from .cli_lazy import LazyGroup
from .errors import ConfigError, ErpozError, FlowError, RunError, StoreError
from .store import Event, RunInfo, Store
from .user_json import MAX_JSON_DEPTH, check_depth, read_json_file
from .version import __version__

if TYPE_CHECKING:  # the engine, flows and pydantic are imported by the commands that use them
    from .engine import Decision, Engine, RunResult
    from .flow import Plan

_STATUS_EXIT = {
    "queued": EXIT_OK,
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "waiting": EXIT_WAITING,
    "cancelled": EXIT_CANCELLED,
}
_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "waiting": "yellow",
    "running": "cyan",
    "queued": "blue",
    "cancelled": "magenta",
    "skipped": "dim",
    "retrying": "yellow",
}

_STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")

_STEP_STATUS = {
    "step_started": "running",
    "step_succeeded": "succeeded",
    "step_failed": "failed",
    "step_retried": "retrying",
    "step_skipped": "skipped",
    "review_requested": "waiting",
}
"""The status a step shows after each kind of event (live view and `runs show` alike)."""

T = TypeVar("T")

_ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Project file (models, guards, tools) \\[default: $ERPOZ_CONFIG or ./erpoz.yaml]",
        show_default=False,
    ),
]

app = typer.Typer(
    name="erpoz",
    help="erpoz: typed AI flows on a durable, hash-chained event log.\n\n"
    "[dim]Example:[/] erpoz run examples/triage.yaml -i ticket='refund INV-1'",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=LazyGroup,  # the commands of the other cli_* modules: imported when used (cli_lazy.py)
)
runs_app = typer.Typer(
    help="List, inspect, resume, replay and cancel runs.\n\n"
    "[dim]Example:[/] erpoz runs ls --status waiting",
    no_args_is_help=True,
    cls=LazyGroup,
)
app.add_typer(runs_app, name="runs")


def _call(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning erpoz errors into a message and a meaningful exit code."""
    try:
        return asyncio.run(coro)
    except (FlowError, ConfigError) as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except RunError as exc:
        fail(str(exc), EXIT_RUN)
    except ErpozError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        err.print("interrupted; the run can be continued with `erpoz runs resume RUN`")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _parse_tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--tag {pair!r}: expected key=value", EXIT_INVALID)
        tags[key.strip()] = value
    return tags


def _load(flow: str) -> Plan:
    from . import load_flow

    try:
        return load_flow(flow).compile()
    except FlowError as exc:
        fail(str(exc), EXIT_INVALID)


def _parse_inputs(plan: Plan, pairs: list[str], json_file: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if json_file is not None:
        try:
            loaded = read_json_file(json_file)
        except ValueError as exc:
            fail(f"--input-json {json_file}: {exc}", EXIT_INVALID)
        if not isinstance(loaded, dict):
            fail(f"--input-json {json_file}: expected a JSON object of inputs", EXIT_INVALID)
        values.update(loaded)
    types = {i.name: i.type for i in plan.inputs}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"-i {pair!r}: write inputs as key=value", EXIT_INVALID)
        if types.get(key) is str:
            values[key] = raw
            continue
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw  # not JSON: the text itself
        except RecursionError:
            fail(f"-i {key}: the value is nested more than {MAX_JSON_DEPTH} levels deep", 2)
        else:
            try:
                check_depth(values[key])
            except ValueError as exc:
                fail(f"-i {key}: the value is {exc}", EXIT_INVALID)
    return values


class _LiveView:
    """A table of top-level steps that follows the run's events."""

    def __init__(self, plan: Plan) -> None:
        from .engine import top_step

        self.top_step = top_step
        self.plan = plan
        self.rows: dict[str, dict[str, Any]] = {
            n.id: {"status": "pending", "attempt": 0, "ms": None, "items": ""} for n in plan.nodes
        }
        self.t0 = time.perf_counter()
        self.live: Live | None = None

    def observe(
        self, kind: str, step: str | None, attempt: int, data: Mapping[str, Any] | None
    ) -> None:
        if step is None:
            return
        top = self.top_step(step)
        row = self.rows.get(top)
        if row is None:
            return
        if top != step:
            if kind == "step_succeeded":
                row["done"] = row.get("done", 0) + 1
                total = row.get("total")
                row["items"] = f"{row['done']}/{total}" if total else f"{row['done']} done"
            return
        row["status"] = _STEP_STATUS.get(kind, row["status"])
        if kind == "step_started":
            row["attempt"] = attempt
            if data and "items" in data:
                row["total"] = data["items"]
        elif kind == "step_succeeded":
            row["ms"] = (data or {}).get("ms")
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Table:
        table = Table(
            title=f"{self.plan.name} · {time.perf_counter() - self.t0:.1f}s",
            title_justify="left",
            expand=False,
        )
        for col in ("step", "status", "attempt", "ms", "items"):
            table.add_column(col)
        for sid, row in self.rows.items():
            st = row["status"]
            table.add_row(
                sid,
                f"[{_STYLE.get(st, 'white')}]{st}[/]",
                str(row["attempt"] or ""),
                "" if row["ms"] is None else f"{row['ms']}",
                row["items"],
            )
        return table


async def _drive(
    engine: Engine, coro: Coroutine[Any, Any, RunResult], view: _LiveView | None
) -> RunResult:
    try:
        if view is None:
            return await coro
        with Live(view.render(), console=err, refresh_per_second=8, transient=False) as live:
            view.live = live
            result = await coro
            live.update(view.render())
            return result
    finally:
        await engine.store.close()


def _report(result: RunResult, as_json: bool, store: Store, config: str | None = None) -> NoReturn:
    """Print a run's result and exit with its code; the commands it suggests name the same
    project file (``config``) when one was given."""
    from .engine import top_step

    again = f" --config {config}" if config else ""
    if as_json:
        out.print_json(
            data={
                "run_id": result.run_id,
                "status": result.status,
                "output": _jsonable(result.output),
                "error": result.error,
                "failed_step": result.failed_step,
                "waiting_steps": list(result.waiting_steps),
                "wake_at": result.wake_at,
                "wake_on": result.wake_on,
            }
        )
    else:
        colour = _STYLE.get(result.status, "white")
        out.print(f"run [bold]{result.run_id}[/] [{colour}]{result.status}[/]")
        if result.status == "succeeded":
            out.print_json(data=_jsonable(result.output))
        elif result.status == "failed":
            out.print(
                f"[red]{escape(result.failed_step or 'run')}: {escape(result.error or '')}[/]",
                markup=True,
                highlight=False,
            )
            out.print(
                f"inspect: erpoz runs show {result.run_id}   ·   "
                f"retry: erpoz runs replay {result.run_id} --from "
                f"{top_step(result.failed_step) if result.failed_step else 'STEP'}{again}",
                highlight=False,
            )
        elif result.status == "queued":
            out.print(
                f"back in its queue: a worker goes on with it (erpoz runs show {result.run_id})",
                highlight=False,
            )
        elif result.status == "waiting" and result.wake_at is not None:
            _report_sleep(result, again)
        elif result.status == "waiting":
            steps = ", ".join(result.waiting_steps)
            out.print(f"waiting for review of [yellow]{steps}[/]; decide with:")
            for flag in ("--approve", "--reject", "--edit FILE"):
                out.print(f"  erpoz runs resume {result.run_id} {flag}{again}", highlight=False)
    raise typer.Exit(_STATUS_EXIT.get(result.status, EXIT_FAILED))


def _report_sleep(result: RunResult, again: str) -> None:
    """What a run that waits durably waits for, and what goes on with it."""
    assert result.wake_at is not None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.wake_at))
    steps = escape(", ".join(result.waiting_steps))
    left = f"in {max(0.0, result.wake_at - time.time()):.1f} s"
    kind, _, what = (result.wake_on or "").partition(":")
    if kind == "msg":
        out.print(f"[yellow]{steps}[/] waits for a message on {escape(what)} until {when}")
        out.print(f"  erpoz runs send {result.run_id} {what} VALUE", highlight=False)
    elif kind == "event":
        run, _, key = what.partition(":")
        out.print(f"[yellow]{steps}[/] waits for event {escape(key)} of run {run} until {when}")
    else:
        out.print(f"[yellow]{steps}[/] sleeps until {when} ({left})")
    out.print(
        "no process holds it: a worker of its queue goes on when it is due, or",
        highlight=False,
    )
    out.print(f"  erpoz runs resume {result.run_id} --wait{again}", highlight=False)


def _jsonable(value: Any) -> Any:
    """A value as JSON data, as the store records it (bytes as base64)."""
    from pydantic import ConfigDict, TypeAdapter

    try:
        as_json = TypeAdapter(Any, config=ConfigDict(ser_json_bytes="base64"))
        return json.loads(as_json.dump_json(value))
    except Exception:
        return repr(value)


@app.command()
def run(
    flow: Annotated[str, typer.Argument(help="A flow file (.yaml), module:attr or file.py:attr.")],
    inputs: InputsOpt = None,
    input_json: InputJsonOpt = None,
    store: StoreOpt = None,
    durability: Annotated[str, typer.Option(help="sync | batch | effects | memory")] = "sync",
    fsync: Annotated[
        bool, typer.Option("--fsync", help="Sync each commit to the device (power-loss safe).")
    ] = False,
    progress: Annotated[
        bool, typer.Option(help="Show a live table of steps (on a terminal).")
    ] = True,
    tag: TagsOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    config: _ConfigOpt = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Start the run under this id; when a run with it exists, report that run "
            "instead (an idempotent start; other inputs are an error).",
        ),
    ] = None,
    hold: HoldOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Run a flow and wait for it to succeed, fail, pause for review or sleep.

    [dim]Example:[/] erpoz run examples/triage.yaml -i ticket="refund my invoice" -t tenant=acme
    """
    plan = _load(flow)
    values = _parse_inputs(plan, inputs or [], input_json)
    tags = _parse_tags(tag or [])
    st = open_or_fail(store, durability, fsync)
    view = _LiveView(plan) if progress and not as_json and err.is_terminal else None
    engine = build_engine(
        st,
        config=config,
        executor=executor,
        ray_address=ray_address,
        observers=[view.observe] if view else None,
        hold_s=hold,
    )
    started = engine.run(plan, values, tags=tags, run_id=run_id)
    running = with_checkpoints(auto_checkpoints(st, config), started)
    try:
        result = _call(_drive(engine, running, view))
    finally:
        engine.executor.shutdown()
    _report(result, as_json, st, config)


@app.command()
def validate(
    flow: Annotated[str, typer.Argument(help="A flow file (.yaml), module:attr or file.py:attr.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a flow without running it: names, wiring, types, cycles, loop bounds.

    [dim]Example:[/] erpoz validate examples/triage.yaml
    """
    from . import load_flow

    try:
        plan = load_flow(flow).compile()
    except FlowError as exc:
        if as_json:
            out.print_json(
                data={
                    "valid": False,
                    "error": exc.message,
                    "file": exc.file,
                    "line": exc.line,
                    "step": exc.step,
                }
            )
            raise typer.Exit(EXIT_INVALID) from None
        fail(str(exc), EXIT_INVALID)
    if as_json:
        out.print_json(
            data={
                "valid": True,
                "flow": plan.name,
                "fingerprint": plan.fingerprint,
                "steps": [n.id for n in plan.nodes],
                "inputs": [i.name for i in plan.inputs],
            }
        )
        return
    out.print(
        f"[green]valid[/]: flow [bold]{plan.name}[/] · {len(plan.nodes)} steps · "
        f"inputs: {', '.join(i.name for i in plan.inputs) or 'none'}"
    )


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
    infos = _call(
        _with_close(st, st.list_runs(status=status, flow=flow, limit=limit, tenant=tenant))
    )
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
            f"[{_STYLE.get(i.status, 'white')}]{i.status}[/]",
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


async def _with_close(store: Store, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        await store.close()


async def _run_and_events(store: Store, run_id: str) -> tuple[RunInfo, list[Event]]:
    try:
        info, events = await store.run_with_events(run_id)  # one snapshot of both
        if info is None:
            raise RunError(f"no run {run_id!r} in {store.url}")
        return info, events
    finally:
        await store.close()


def _timeline(events: list[Event]) -> list[dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    t0 = events[0].ts if events else 0.0
    for e in events:
        if e.step is None or not e.kind.startswith(("step_", "review_")):
            continue
        row = steps.get(e.step)
        if row is None:  # (not setdefault: no row built per event of a long run)
            row = steps[e.step] = {
                "step": e.step,
                "status": "pending",
                "attempts": 0,
                "start_ms": round((e.ts - t0) * 1000, 1),
                "ms": None,
                "error": None,
            }
        row["status"] = _STEP_STATUS.get(e.kind, row["status"])
        if e.kind == "step_started":
            row["attempts"] = max(row["attempts"], e.attempt)
        elif e.kind == "step_succeeded":
            row["ms"] = e.data.get("ms")
            if e.data.get("cached"):
                row["status"] = "succeeded (cached)"
            if e.data.get("copied_from"):
                row["status"] = "copied"
        elif e.kind == "step_failed":
            row["error"] = e.data.get("error")
    return list(steps.values())


STREAM_ROWS = 200
"""A timeline longer than this is written as plain lines, row by row, instead of a table."""


def _print_steps(steps: list[dict[str, Any]]) -> None:
    if len(steps) <= STREAM_ROWS:
        table = Table("step", "status", "attempts", "start ms", "ms", "error")
        for s in steps:
            table.add_row(
                s["step"],
                f"[{_STYLE.get(s['status'].split()[0], 'white')}]{s['status']}[/]",
                str(s["attempts"]),
                str(s["start_ms"]),
                "" if s["ms"] is None else str(s["ms"]),
                (s["error"] or "")[:70],
            )
        out.print(table)
        return
    width = max(len(s["step"]) for s in steps)
    write = out.file.write
    write(f"{'step':<{width}}  {'status':<18} attempts  start ms        ms  error\n")
    for s in steps:
        ms = "" if s["ms"] is None else str(s["ms"])
        write(
            f"{s['step']:<{width}}  {s['status']:<18} {s['attempts']:>8}  {s['start_ms']:>8}"
            f"  {ms:>8}  {(s['error'] or '')[:70]}\n"
        )
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
    info, events = _call(_run_and_events(st, run_id))
    everything = _timeline(events)
    end = None if limit is None else offset + limit
    steps = everything[offset:end]
    if as_json:
        out.print_json(data={**info.to_json(), "steps": steps, "steps_total": len(everything)})
        return
    colour = _STYLE.get(info.status, "white")
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
        from .engine import RunResult

        _report_sleep(
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
    config: _ConfigOpt = None,
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
        from .engine import Decision

        decision = Decision(action, output=output, reviewer=reviewer, comment=comment, step=step)
    _resume(run_id, decision, flow, store, progress, as_json, config, wait=wait, hold=hold)


def _resume(
    run_id: str,
    decision: Decision | None,
    flow: str | None,
    store: str | None,
    progress: bool,
    as_json: bool,
    config: str | None = None,
    *,
    wait: bool = False,
    hold: float = 1.0,
) -> NoReturn:
    """Resume a run (with a reviewer's decision, if any) in this process and report."""
    if decision is not None:
        decision = replace(decision, reviewer=reviewer_for(decision.reviewer, config))
    plan = _load(flow) if flow else None
    st = open_or_fail(store)
    view = _LiveView(plan) if plan and progress and not as_json and err.is_terminal else None
    engine = build_engine(
        st, config=config, observers=[view.observe] if view else None, hold_s=hold
    )
    resuming = engine.resume(run_id, plan, decision=decision, wait=wait)
    try:
        result = _call(_drive(engine, resuming, view))
    finally:
        engine.executor.shutdown()
    _report(result, as_json, st, config)


# --- erpoz review -----------------------------------------------------------------------------
review_app = typer.Typer(
    help="The human review queue: runs waiting for a person, and their decisions.\n\n"
    "[dim]Example:[/] erpoz review ls",
    no_args_is_help=True,
)


async def _queue(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    from .engine import pending_reviews

    try:
        if run_id is not None:
            info = await store.get_run(run_id)
            if info is None:
                raise RunError(f"no run {run_id!r} in {store.url}")
            infos = [info]
        else:
            infos = await store.list_runs(status="waiting", limit=10_000)
        items = []
        for info in infos:
            for sid, e in pending_reviews(await store.events(info.run_id)).items():
                items.append(
                    {
                        "run_id": info.run_id,
                        "flow": info.flow,
                        "step": sid,
                        "reason": e.data.get("reason", ""),
                        "evidence": e.data.get("evidence"),
                        "requested_at": e.ts,
                        "waiting_s": round(time.time() - e.ts, 1),
                        "proposal": None if e.payload is None else json.loads(e.payload),
                        "grant": e.data.get("grant"),
                    }
                )
        return items
    finally:
        await store.close()


@review_app.command("ls")
def review_ls(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the steps waiting for review, oldest first, with the reason.

    [dim]Example:[/] erpoz review ls --json
    """
    items = sorted(_call(_queue(open_or_fail(store))), key=lambda i: i["requested_at"])
    if as_json:
        out.print_json(data=items)
        return
    table = Table("run", "flow", "step", "waiting", "reason")
    for i in items:
        table.add_row(
            i["run_id"],
            i["flow"],
            i["step"],
            f"{i['waiting_s']:.0f} s",
            escape(str(i["reason"]))[:70],
        )
    out.print(table)
    out.print(
        f"{len(items)} waiting" + ("; decide with: erpoz review approve RUN" if items else "")
    )


@review_app.command("show")
def review_show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a waiting run asks a reviewer: the step, the reason, the evidence, the proposal.

    [dim]Example:[/] erpoz review show RUN
    """
    items = _call(_queue(open_or_fail(store), run_id))
    if not items:
        fail(f"run {run_id} has no step waiting for review", EXIT_RUN)
    if as_json:
        out.print_json(data=items)
        return
    for i in items:
        out.print(
            f"run [bold]{i['run_id']}[/] · flow {i['flow']} · step [yellow]{i['step']}[/]"
            f" · waiting {i['waiting_s']:.0f} s"
        )
        out.print(f"reason: {escape(str(i['reason']))}", highlight=False)
        if i["evidence"] is not None:
            out.print("evidence:")
            out.print_json(data=i["evidence"])
        if i.get("grant"):
            out.print(
                "asks permission: approving lets the step run again and go ahead with exactly "
                f"this ({escape(str(i['grant']))}); rejecting fails it"
            )
            evidence = i["evidence"] if isinstance(i["evidence"], dict) else {}
            if evidence.get("masked"):
                out.print("would be sent (what the guards found masked):")
                out.print(escape(str(evidence["masked"])), highlight=False)
            continue
        out.print("proposed output:")
        out.print_json(data=i["proposal"])


_ReviewerOpt = Annotated[
    str,
    typer.Option(
        help="Who decides \\[default: $ERPOZ_REVIEWER, else reviewer: in erpoz.yaml, "
        "else the OS user]."
    ),
]
_StepOpt = Annotated[str | None, typer.Option(help="Which waiting step, when several wait.")]


@review_app.command("approve")
def review_approve(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    step: _StepOpt = None,
    reviewer: _ReviewerOpt = "",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    store: StoreOpt = None,
    config: _ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve the proposal; the run goes on (in this process) from there.

    [dim]Example:[/] erpoz review approve RUN --comment "checked the amount"
    """
    from .engine import Decision

    _resume(
        run_id,
        Decision("approve", reviewer=reviewer, comment=comment, step=step),
        None,
        store,
        False,
        as_json,
        config,
    )


@review_app.command("reject")
def review_reject(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    step: _StepOpt = None,
    reviewer: _ReviewerOpt = "",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    store: StoreOpt = None,
    config: _ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject the proposal; the run fails, naming the reviewer and the reason.

    [dim]Example:[/] erpoz review reject RUN --comment "wrong customer"
    """
    from .engine import Decision

    _resume(
        run_id,
        Decision("reject", reviewer=reviewer, comment=comment, step=step),
        None,
        store,
        False,
        as_json,
        config,
    )


@review_app.command("edit")
def review_edit(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    file: Annotated[Path, typer.Option("--file", "-f", help="The corrected output (JSON).")],
    step: _StepOpt = None,
    reviewer: _ReviewerOpt = "",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    store: StoreOpt = None,
    config: _ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the proposal with a corrected output (checked against the step's type) and go on.

    [dim]Example:[/] erpoz review edit RUN -f fixed.json
    """
    try:
        output = read_json_file(file)
    except ValueError as exc:
        fail(f"--file {file}: {exc}", EXIT_INVALID)
    from .engine import Decision

    decision = Decision("edit", output=output, reviewer=reviewer, comment=comment, step=step)
    _resume(run_id, decision, None, store, False, as_json, config)


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
    config: _ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fork a run: a new run linked to it, with its recorded inputs (-i changes some) and this
    project's configuration (--config), that re-runs the step --from and what follows it, and
    every step reading a changed input; the other steps keep their recorded outputs.

    Compare the two with erpoz runs diff RUN NEW.

    [dim]Examples:[/] erpoz runs replay RUN --from answer --config erpoz.yaml ·
    erpoz runs fork RUN -i ticket="refund INV-2"
    """
    plan = _load(flow) if flow else None
    st = open_or_fail(store)
    if inputs or input_json is not None:
        base = plan or _call(_recorded_plan(st, run_id))
        changes = _parse_inputs(base, inputs or [], input_json)
    else:
        changes = {}
    if from_step is None and not changes:
        fail("say what runs again: --from STEP, or inputs that change (-i name=value)", 2)
    engine = build_engine(st, config=config)
    forking = engine.fork(run_id, from_step, inputs=changes, flow=plan)
    try:
        result = _call(_drive(engine, forking, None))
    finally:
        engine.executor.shutdown()
    if not as_json:
        what = f"from {from_step}" if from_step else "with new inputs"
        out.print(f"{'forked' if changes else 'replayed'} {run_id} {what} as a new run:")
    _report(result, as_json, st, config)


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
    from . import load_flow

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
    from .engine import Engine

    st = open_or_fail(store)
    engine = Engine(st)
    outcome = _call(_with_close(st, engine.cancel(run_id)))
    if as_json:
        out.print_json(data={"run_id": run_id, "cancel": outcome})
    else:
        out.print(f"run {run_id}: cancel {outcome}")


@app.command()
def events(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    store: StoreOpt = None,
    kind: Annotated[str | None, typer.Option(help="Only events of this kind.")] = None,
    payloads: Annotated[bool, typer.Option(help="Show payloads (outputs) too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's event log: sequence, time, kind, step, attempt, data, hash.

    [dim]Example:[/] erpoz events RUN --kind step_failed --json
    """
    st = open_or_fail(store)
    _info, evs = _call(_run_and_events(st, run_id))
    if kind:
        evs = [e for e in evs if e.kind == kind]
    if as_json:
        out.print_json(data=[e.to_json() for e in evs])
        return
    table = Table("seq", "time", "kind", "step", "att", "data", "hash")
    for e in evs:
        data = json.dumps(e.data, ensure_ascii=False)
        if len(data) > 80:
            data = data[:79] + "…"
        if payloads and e.payload is not None:
            data += f" payload={e.payload}"  # shown whole: the user asked for it
        table.add_row(
            str(e.seq),
            time.strftime("%H:%M:%S", time.localtime(e.ts)) + f".{int(e.ts * 1000) % 1000:03d}",
            e.kind,
            e.step or "",
            str(e.attempt or ""),
            escape(data),
            e.hash[:10],
        )
    out.print(table)


def _version(value: bool) -> None:
    if value:
        out.print(f"erpoz {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """erpoz: typed AI flows on a durable, hash-chained event log.

    [dim]Example:[/] erpoz run examples/triage.yaml -i ticket='refund INV-1'
    """


app.add_typer(review_app, name="review")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
