"""``erpoz runs send | event | wake | version``: messages to running flows, events they
publish, waking the sleeping runs that are due (see docs/durable.md), and which flow version a
run is on (docs/versioning.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..engine import Engine
from ..user_json import MAX_JSON_DEPTH, check_depth, jsonable
from ._console import (
    EXIT_INVALID,
    EXIT_RUN,
    EXIT_WAITING,
    HoldOpt,
    JsonOpt,
    StoreOpt,
    build_engine,
    fail,
    open_or_fail,
    out,
)
from ._running import ConfigOpt, call, run_and_events, with_close


def _value(raw: str) -> Any:
    """A message as typed: JSON when it parses as JSON, else the text itself."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    except RecursionError:
        fail(f"VALUE is nested more than {MAX_JSON_DEPTH} levels deep", EXIT_INVALID)
    try:
        check_depth(value)
    except ValueError as exc:
        fail(f"VALUE is {exc}", EXIT_INVALID)
    return value


def runs_send(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    topic: Annotated[str, typer.Argument(help="What the run waits for (ctx.recv(TOPIC, …)).")],
    value: Annotated[str, typer.Argument(help="The message: JSON, or text (taken as a string).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message to a run: kept until it takes it with ctx.recv; a run waiting for it
    wakes (a worker of its queue goes on at once, else `erpoz runs resume RUN`).

    [dim]Example:[/] erpoz runs send RUN reply '{"accepted": true}'
    """

    message = _value(value)
    st = open_or_fail(store)
    engine = Engine(st)
    message_id = call(with_close(st, engine.send(run_id, topic, message)))
    if as_json:
        out.print_json(data={"run_id": run_id, "topic": topic, "message_id": message_id})
    else:
        out.print(f"sent message {message_id} to run {run_id} on {topic}", highlight=False)


def runs_event(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    key: Annotated[str, typer.Argument(help="The event's key (ctx.set_event(KEY, …)).")],
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for it to be set.")] = 0.0,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print an event a run published (ctx.set_event); exit 3 when it is not set (yet, or
    set to null).

    [dim]Example:[/] erpoz runs event RUN answered --timeout 30
    """

    st = open_or_fail(store)
    engine = Engine(st)
    value = call(with_close(st, engine.get_event(run_id, key, timeout=timeout)))
    if as_json:
        out.print_json(data={"run_id": run_id, "key": key, "value": value})
    elif value is not None:
        out.print_json(data=value)
    else:
        out.print(f"run {run_id} has not set event {key!r}", highlight=False)
    if value is None:
        raise typer.Exit(EXIT_WAITING)


def runs_wake(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 100,
    hold: HoldOpt = 1.0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume, here, the sleeping runs whose wake time has come (runs of no queue: a worker
    wakes the runs of its queues itself). Run it from cron, or after a restart.

    [dim]Example:[/] erpoz runs wake --json
    """

    st = open_or_fail(store)
    # the runs go on here: their steps get the project's models, tools and memory
    engine = build_engine(st, config=config, hold_s=hold)
    results = call(with_close(st, engine.wake_due(limit=limit)))
    rows = [
        {
            "run_id": r.run_id,
            "status": r.status,
            "output": jsonable(r.output),
            "wake_at": r.wake_at,
        }
        for r in results
    ]
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        out.print("no sleeping run is due")
    for row in rows:
        out.print(f"run {row['run_id']} {row['status']}", highlight=False)


def runs_version(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (a unique prefix works).")],
    flow: Annotated[
        str | None,
        typer.Option(
            "--flow",
            help="The code to check it against (a flow file, module:attr or file.py:attr) "
            "\\[default: the source the run recorded].",
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the flow version a run started on (fingerprint, version, patches), the plans it
    was resumed on, and the plan it would go on with now — or why it cannot.

    [dim]Example:[/] erpoz runs version RUN --flow flows/mail.py:flow
    """
    from .. import load_flow
    from ..engine import version_report
    from ..errors import ErpozError

    st = open_or_fail(store)
    info, events = call(run_and_events(st, run_id))
    source = flow or info.source
    plan, why = None, "the run recorded no source to load its flow from: pass --flow"
    if source:
        try:
            plan = load_flow(source).compile()
        except (ErpozError, OSError) as exc:
            why = f"cannot load {source}: {exc}"
    report = {**version_report(info.run_id, events, plan), "flow": info.flow}
    if plan is None:
        report["goes_on"] = {"plan": None, "error": why}
    here = report["goes_on"]
    if as_json:
        out.print_json(data=report)
        if here["plan"] is None:
            raise typer.Exit(EXIT_RUN)
        return
    out.print(
        f"run {info.run_id} · flow {info.flow} · version {report['version'] or 'unversioned'} · "
        f"fingerprint {str(report['fingerprint'])[:12]} · "
        f"patches: {', '.join(report['patches']) or 'none'}",
        highlight=False,
    )
    for r in report["resumed"]:
        out.print(f"  resumed (event {r['seq']}) on plan {r['plan']}", highlight=False)
    if here["plan"] is not None:
        out.print(
            f"goes on on plan {here['plan']}: version {here['version'] or 'unversioned'} "
            f"({here['fingerprint'][:12]}) of {source}",
            highlight=False,
        )
    else:
        out.print(f"[red]cannot go on here: {escape(here['error'])}[/]", highlight=False)
        raise typer.Exit(EXIT_RUN)
