"""The ``erpoz`` command: run and validate flows, inspect, resume, replay and cancel runs.

Exit codes: 0 succeeded · 1 run failed · 2 invalid flow or usage · 3 waiting for review ·
4 store error · 5 unknown run or wrong state · 6 cancelled · 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import FlowError
from ..version import __version__
from ._console import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
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
    with_checkpoints,
)
from ._running import (
    ConfigOpt,
    LiveView,
    call,
    drive,
    load_plan,
    parse_inputs,
    parse_tags,
    report,
    run_and_events,
)
from .lazy import LazyGroup

app = typer.Typer(
    name="erpoz",
    help="erpoz: typed AI flows on a durable, hash-chained event log.\n\n"
    "[dim]Example:[/] erpoz run examples/triage.yaml -i ticket='refund INV-1'",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=LazyGroup,  # the other command groups: imported when used (lazy.py)
)


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
    config: ConfigOpt = None,
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
    plan = load_plan(flow)
    values = parse_inputs(plan, inputs or [], input_json)
    tags = parse_tags(tag or [])
    st = open_or_fail(store, durability, fsync)
    view = LiveView(plan) if progress and not as_json and err.is_terminal else None
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
        result = call(drive(engine, running, view))
    finally:
        engine.executor.shutdown()
    report(result, as_json, st, config)


@app.command()
def validate(
    flow: Annotated[str, typer.Argument(help="A flow file (.yaml), module:attr or file.py:attr.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a flow without running it: names, wiring, types, cycles, loop bounds.

    [dim]Example:[/] erpoz validate examples/triage.yaml
    """
    from .. import load_flow

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
    _info, evs = call(run_and_events(st, run_id))
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
