"""What the commands that run flows share: loading a flow and its inputs, driving a run with a
live table of its steps, and reporting its result with the exit code it means."""

from __future__ import annotations

import json
import time
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError, ErpozError, FlowError, RunError, StoreError
from ..user_json import MAX_JSON_DEPTH, check_depth, jsonable, read_json_file
from ._console import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN,
    EXIT_STORE,
    EXIT_WAITING,
    build_engine,
    err,
    fail,
    open_or_fail,
    out,
    reviewer_for,
)

if TYPE_CHECKING:  # the engine, flows and pydantic are imported by the commands that use them
    from rich.live import Live

    from ..engine import Decision, Engine, RunResult
    from ..flow import Plan
    from ..store import Event, RunInfo, Store

STATUS_EXIT = {
    "queued": EXIT_OK,
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "waiting": EXIT_WAITING,
    "cancelled": EXIT_CANCELLED,
}
STYLE = {
    "succeeded": "green",
    "failed": "red",
    "waiting": "yellow",
    "running": "cyan",
    "queued": "blue",
    "cancelled": "magenta",
    "skipped": "dim",
    "retrying": "yellow",
}


T = TypeVar("T")

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Project file (models, guards, tools) \\[default: $ERPOZ_CONFIG or ./erpoz.yaml]",
        show_default=False,
    ),
]


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning erpoz errors into a message and a meaningful exit code."""
    import asyncio

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


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--tag {pair!r}: expected key=value", EXIT_INVALID)
        tags[key.strip()] = value
    return tags


def load_plan(flow: str) -> Plan:
    from .. import load_flow

    try:
        return load_flow(flow).compile()
    except FlowError as exc:
        fail(str(exc), EXIT_INVALID)


def parse_inputs(plan: Plan, pairs: list[str], json_file: Path | None) -> dict[str, Any]:
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


class LiveView:
    """A table of top-level steps that follows the run's events."""

    def __init__(self, plan: Plan) -> None:
        from ..engine import top_step
        from ..observe.timeline import STEP_STATUS

        self.top_step = top_step
        self.step_status = STEP_STATUS
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
        row["status"] = self.step_status.get(kind, row["status"])
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
                f"[{STYLE.get(st, 'white')}]{st}[/]",
                str(row["attempt"] or ""),
                "" if row["ms"] is None else f"{row['ms']}",
                row["items"],
            )
        return table


async def drive(
    engine: Engine, coro: Coroutine[Any, Any, RunResult], view: LiveView | None
) -> RunResult:
    try:
        if view is None:
            return await coro
        from rich.live import Live

        with Live(view.render(), console=err, refresh_per_second=8, transient=False) as live:
            view.live = live
            result = await coro
            live.update(view.render())
            return result
    finally:
        await engine.store.close()


def report(result: RunResult, as_json: bool, store: Store, config: str | None = None) -> NoReturn:
    """Print a run's result and exit with its code; the commands it suggests name the same
    project file (``config``) when one was given."""
    from ..engine import top_step

    again = f" --config {config}" if config else ""
    if as_json:
        out.print_json(data=result.to_json())
    else:
        colour = STYLE.get(result.status, "white")
        out.print(f"run [bold]{result.run_id}[/] [{colour}]{result.status}[/]")
        if result.status == "succeeded":
            out.print_json(data=jsonable(result.output))
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
            report_sleep(result, again)
        elif result.status == "waiting":
            steps = ", ".join(result.waiting_steps)
            out.print(f"waiting for review of [yellow]{steps}[/]; decide with:")
            for flag in ("--approve", "--reject", "--edit FILE"):
                out.print(f"  erpoz runs resume {result.run_id} {flag}{again}", highlight=False)
    raise typer.Exit(STATUS_EXIT.get(result.status, EXIT_FAILED))


def report_sleep(result: RunResult, again: str) -> None:
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


async def with_close(store: Store, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        await store.close()


async def run_and_events(store: Store, run_id: str) -> tuple[RunInfo, list[Event]]:
    try:
        info, events = await store.run_with_events(run_id)  # one snapshot of both
        if info is None:
            raise RunError(f"no run {run_id!r} in {store.url}")
        return info, events
    finally:
        await store.close()


def resume_here(
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
    plan = load_plan(flow) if flow else None
    st = open_or_fail(store)
    view = LiveView(plan) if plan and progress and not as_json and err.is_terminal else None
    engine = build_engine(
        st, config=config, observers=[view.observe] if view else None, hold_s=hold
    )
    resuming = engine.resume(run_id, plan, decision=decision, wait=wait)
    try:
        result = call(drive(engine, resuming, view))
    finally:
        engine.executor.shutdown()
    report(result, as_json, st, config)
