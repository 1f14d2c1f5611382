"""``erpoz schedule``: cron-style schedules that start runs of a flow, fired by workers
(``erpoz worker``) once per tick (mounted through ``lazy.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..engine import (
    CATCHUP,
    Engine,
    Schedule,
    Scheduler,
    add_schedule,
    pause_schedule,
    schedule_to_json,
    schedules_from_config,
    sync_schedules,
    tick_to_json,
)
from ..errors import ConfigError, ErpozError, FlowError, RunError, StoreError
from ..store import ScheduleBook, Store, Tick
from ._console import (
    EXIT_INVALID,
    EXIT_STORE,
    InputJsonOpt,
    InputsOpt,
    JsonOpt,
    StoreOpt,
    err,
    fail,
    open_or_fail,
    out,
)
from ._running import load_plan, parse_inputs

T = TypeVar("T")

schedule_app = typer.Typer(
    help="Cron-style schedules that start runs of a flow: workers (erpoz worker) fire each "
    "tick once, however many share the store.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name.")]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Project file \\[default: erpoz.yaml]"),
]


def _run(st: Store, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` and close the store; erpoz errors become a message and an exit code."""

    async def go() -> T:
        try:
            return await coro
        finally:
            await st.close()

    try:
        return asyncio.run(go())
    except (FlowError, ConfigError, RunError) as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except ErpozError as exc:
        fail(str(exc), EXIT_INVALID)


def _book(st: Store) -> ScheduleBook:
    if not isinstance(st, ScheduleBook):
        fail(f"the store {st.url} keeps no schedules", EXIT_STORE)
    return st


@schedule_app.command("add")
def add(
    name: NameArg,
    flow: Annotated[str, typer.Argument(help="A flow file (.yaml), module:attr or file.py:attr.")],
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            help="When: 5 fields (minute hour day month weekday), or 6 with seconds last.",
        ),
    ],
    inputs: InputsOpt = None,
    input_json: InputJsonOpt = None,
    queue: Annotated[str, typer.Option("--queue", "-q", help="The queue runs go to.")] = "default",
    catchup: Annotated[
        str,
        typer.Option(help=f"After downtime: {' | '.join(CATCHUP)} (the ticks missed)."),
    ] = "latest",
    timezone: Annotated[str, typer.Option("--timezone", help="The cron's time zone.")] = "UTC",
    replace: Annotated[
        bool, typer.Option("--replace", help="Change the schedule of that name if there is one.")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a schedule: runs of FLOW, with these inputs, at every tick of --cron.

    The flow is loaded and the inputs checked now. Workers (erpoz worker) fire the ticks.

    [dim]Example:[/] erpoz schedule add nightly triage.yaml --cron "0 2 * * *" -i ticket="..."
    """

    values = parse_inputs(load_plan(flow), inputs or [], input_json)
    st = open_or_fail(store)
    spec = Schedule(name, flow, cron, values, queue=queue, catchup=catchup, timezone=timezone)
    row = _run(st, add_schedule(st, spec, origin="cli", replace=replace))
    if as_json:
        out.print_json(data=schedule_to_json(row))
        return
    out.print(
        f"schedule [bold]{escape(row.name)}[/] added: {escape(row.cron)} ({row.timezone}); "
        f"next tick {_at(row.next_tick)}",
        highlight=False,
    )
    err.print("workers fire it: erpoz worker", highlight=False)


@schedule_app.command("ls")
def ls(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the schedules, with their next tick and how many ticks fired and were skipped.

    [dim]Example:[/] erpoz schedule ls --json
    """
    st = open_or_fail(store)
    rows = _run(st, _book(st).list_schedules())
    if as_json:
        out.print_json(data=[schedule_to_json(r) for r in rows])
        return
    if not rows:
        out.print("no schedules (add one: erpoz schedule add NAME FLOW --cron EXPR)")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in ("schedule", "cron", "flow", "queue", "catchup", "next tick", "fired", "skipped"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            f"{r.cron} ({r.timezone})",
            Path(r.flow).name,
            r.queue,
            r.catchup,
            "paused" if r.paused else _at(r.next_tick),
            str(r.fired),
            str(r.skipped),
        )
    out.print(table)


@schedule_app.command("show")
def show(
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, help="At most this many ticks, newest first.")] = 20,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a schedule and its last ticks: when, which run, fired or failed (and why).

    [dim]Example:[/] erpoz schedule show nightly
    """
    st = open_or_fail(store)

    async def both() -> tuple[list[Any], list[Tick]]:
        book = _book(st)
        return await book.list_schedules([name]), await book.schedule_ticks(name, limit)

    rows, ticks = _run(st, both())
    if not rows:
        fail(f"no schedule named '{name}' (erpoz schedule ls)", EXIT_INVALID)
    if as_json:
        out.print_json(data={**schedule_to_json(rows[0]), "ticks": [_tick(t) for t in ticks]})
        return
    r = rows[0]
    out.print(
        f"[bold]{escape(r.name)}[/] · {escape(r.cron)} ({r.timezone}) · flow {escape(r.flow)} · "
        f"queue {r.queue} · catchup {r.catchup} · "
        + ("paused" if r.paused else f"next tick {_at(r.next_tick)}"),
        highlight=False,
    )
    for t in ticks:
        note = f"  {escape(t.error)}" if t.error else ""
        out.print(f"{_at(t.tick)}  {t.run_id}  {t.state}{note}", highlight=False)


@schedule_app.command("rm")
def rm(name: NameArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a schedule (the runs it started and its ticks stay on record).

    [dim]Example:[/] erpoz schedule rm nightly
    """
    st = open_or_fail(store)
    if not _run(st, _book(st).delete_schedule(name)):
        fail(f"no schedule named '{name}' (erpoz schedule ls)", EXIT_INVALID)
    if as_json:
        out.print_json(data={"name": name, "removed": True})
    else:
        out.print(f"schedule {escape(name)} removed", highlight=False)


def _pause(name: str, paused: bool, store: str | None, as_json: bool) -> None:
    st = open_or_fail(store)
    row = _run(st, pause_schedule(st, name, paused))
    if as_json:
        out.print_json(data=schedule_to_json(row))
    elif paused:
        out.print(f"schedule {escape(name)} paused", highlight=False)
    else:
        out.print(
            f"schedule {escape(name)} resumed; next tick {_at(row.next_tick)}", highlight=False
        )


@schedule_app.command("pause")
def pause(name: NameArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Pause a schedule: no tick fires until it is resumed.

    [dim]Example:[/] erpoz schedule pause nightly
    """
    _pause(name, True, store, as_json)


@schedule_app.command("resume")
def resume(name: NameArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Resume a paused schedule from its next tick after now (the pause is not caught up).

    [dim]Example:[/] erpoz schedule resume nightly
    """
    _pause(name, False, store, as_json)


@schedule_app.command("sync")
def sync(config: ConfigOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Make the store's schedules those of ``schedules:`` in the project file (workers do this
    when they start): new ones added, changed ones changed, removed ones removed.

    [dim]Example:[/] erpoz schedule sync -c erpoz.yaml
    """
    from ..models import load_config

    try:
        specs = schedules_from_config(load_config(config))
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)
    done = _run(st, sync_schedules(st, specs))
    if as_json:
        out.print_json(data=done.to_json())
        return
    parts = [f"{len(v)} {k}" for k, v in done.to_json().items() if v]
    out.print(f"schedules: {', '.join(parts) or 'none in the project file'}", highlight=False)


@schedule_app.command("tick")
def tick(
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Fire what is due as of this time (ISO 8601, e.g. 2026-12-08T02:00:00Z) "
            "instead of now: a backfill.",
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fire the due ticks once, here, and exit (a worker does this every second).

    Each tick's run is queued for workers, like `erpoz submit`. With --at, as of that time:
    ticks up to it fire (or are skipped) by each schedule's catch-up rule, and later
    passes go on from there.

    [dim]Example:[/] erpoz schedule tick --at 2026-12-08T02:00:00Z
    """
    now = None
    if at is not None:
        try:
            now = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            fail(f"--at {at!r}: expected an ISO 8601 time such as 2026-12-08T02:00:00Z", 2)
    st = open_or_fail(store)
    done = _run(st, Scheduler(Engine(st)).run_once(now=now))
    if as_json:
        out.print_json(data=[_tick(t) for t in done])
        return
    if not done:
        out.print("no tick due", highlight=False)
    for t in done:
        note = f"  {escape(t.error)}" if t.error else ""
        out.print(f"{t.schedule}  {_at(t.tick)}  {t.run_id}  {t.state}{note}", highlight=False)


def _at(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _tick(t: Tick) -> dict[str, Any]:
    return tick_to_json(t)
