"""``erpoz submit`` and ``erpoz worker``: runs queued in a shared store, and the processes that
run them (mounted through ``lazy.py``)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape

from ..engine import (
    DEFAULT_MAX_CLAIMS,
    Engine,
    RunLimits,
    RunResult,
    Scheduler,
    Worker,
    schedules_from_config,
    sync_schedules,
)
from ..errors import ConfigError, ErpozError, FlowError, RunError, StoreError
from ..store import TERMINAL, Store
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_RUN,
    EXIT_STORE,
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
from ._running import load_plan, parse_inputs, parse_tags, report

if TYPE_CHECKING:
    from ..audit.checkpoints import AutoCheckpointer

QueueOpt = Annotated[str, typer.Option("--queue", "-q", help="The queue workers take it from.")]


def submit(
    flow: Annotated[str, typer.Argument(help="A flow file (.yaml), module:attr or file.py:attr.")],
    inputs: InputsOpt = None,
    input_json: InputJsonOpt = None,
    queue: QueueOpt = "default",
    tag: TagsOpt = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until a worker finishes it; exit as `erpoz run` does."),
    ] = False,
    store: StoreOpt = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Queue it under this id; when a run with it exists, that run is the answer "
            "(an idempotent submit; other inputs are an error).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a run of a flow for a worker (`erpoz worker`) and print its id.

    Inputs are checked now; the run is on record at once, with status queued.

    [dim]Example:[/] erpoz submit examples/triage.yaml -i ticket="refund INV-1" -q default
    """

    plan = load_plan(flow)
    values = parse_inputs(plan, inputs or [], input_json)
    tags = parse_tags(tag or [])
    st = open_or_fail(store)
    engine = Engine(st)

    async def go() -> tuple[str, RunResult | None]:
        try:
            rid = await engine.submit(plan, values, queue=queue, tags=tags, run_id=run_id)
            if not wait:
                return rid, None
            err.print(
                f"run {rid} queued on {queue}; waiting for a worker to run it "
                f"(erpoz worker -q {queue}) …",
                highlight=False,
            )
            return rid, await _until_done(st, rid)
        finally:
            await st.close()

    try:
        rid, result = asyncio.run(go())
    except FlowError as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except RunError as exc:
        fail(str(exc), EXIT_INVALID)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if result is not None:
        report(result, as_json, st)
    if as_json:
        out.print_json(data={"run_id": rid, "status": "queued", "queue": queue})
    else:
        out.print(f"run [bold]{rid}[/] queued on [bold]{escape(queue)}[/]", highlight=False)
        err.print(
            f"follow it: erpoz runs show {rid}   ·   run it: erpoz worker -q {queue}",
            highlight=False,
        )


async def _until_done(st: Store, run_id: str) -> RunResult:
    """Poll the store until the run ends or pauses."""
    delay = 0.05
    while True:
        info = await st.get_run(run_id)
        if info is not None and (info.status in TERMINAL or info.status == "waiting"):
            output = json.loads(info.output) if info.output else None
            events = await st.events(run_id) if info.status != "succeeded" else []
            failed = next((e.step for e in reversed(events) if e.kind == "step_failed"), None)
            return RunResult(
                run_id,
                info.status,
                output=output,
                error=info.error,
                failed_step=failed,
                waiting_steps=(info.waiting_step,) if info.waiting_step else (),
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A queue to take runs from (repeatable)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-n", min=1, help="Runs in flight at once.")
    ] = 8,
    store: StoreOpt = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Project file \\[default: erpoz.yaml]"),
    ] = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    durability: Annotated[str, typer.Option(help="sync | batch | effects")] = "sync",
    lease: Annotated[
        float,
        typer.Option(
            min=0.5,
            help="Seconds a claim lasts without a heartbeat; a worker that dies is replaced "
            "after this long (on this host: at once).",
        ),
    ] = 30.0,
    grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="On SIGTERM / Ctrl-C: seconds runs in flight get to finish before they are "
            "handed back to another worker.",
        ),
    ] = 30.0,
    poll: Annotated[
        float, typer.Option(min=0.01, help="Seconds an idle worker waits before looking again.")
    ] = 1.0,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once no run is left to claim.")
    ] = False,
    max_claims: Annotated[
        int,
        typer.Option(
            min=1,
            help="A run taken this many times without finishing (its steps keep killing "
            "their workers) is failed instead of taken again.",
        ),
    ] = DEFAULT_MAX_CLAIMS,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per finished run.")] = False,
    hold: HoldOpt = 1.0,
    rate: Annotated[
        list[str] | None,
        typer.Option(
            "--rate",
            help="QUEUE=N/S: start at most N runs of QUEUE per S seconds, across every worker "
            "of the store ('*' for all queues together; repeatable), e.g. default=5/1.",
        ),
    ] = None,
    max_running: Annotated[
        list[str] | None,
        typer.Option(
            "--max-running",
            help="QUEUE=N: at most N runs of QUEUE in flight across every worker of the store "
            "('*' for all queues together; repeatable), e.g. default=4.",
        ),
    ] = None,
    schedules: Annotated[
        bool,
        typer.Option(
            "--schedules/--no-schedules",
            help="Fire the store's schedules (erpoz schedule), after making those of "
            "schedules: in the project file current; each tick fires once across workers.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Take runs from the queues of a shared store and run them until stopped.

    Start as many as you like, on any machine that reaches the store (PostgreSQL; a SQLite
    file for workers on one machine). A worker that dies leaves its runs to the others, which
    go on from the log: recorded steps never run again. SIGTERM or Ctrl-C stops claiming,
    lets runs in flight finish for --grace seconds, then hands them back.

    [dim]Example:[/] erpoz worker --store postgresql://erpoz@db/erpoz -q default -n 16
    """
    if durability not in ("sync", "batch", "effects"):
        fail(f"--durability {durability!r}: sync, batch or effects", EXIT_INVALID)
    st = open_or_fail(store, durability)
    if st.url == "memory":
        fail(
            "a worker takes runs from a store other processes submit to: a SQLite file or "
            "PostgreSQL (--store), not 'memory', which lives and dies with this process",
            EXIT_INVALID,
        )
    st.lease_s = lease  # type: ignore[attr-defined]
    engine = build_engine(
        st, config=config, executor=executor, ray_address=ray_address, hold_s=hold
    )
    queues = queue or ["default"]
    verbose = not quiet and not as_json

    def finished(result: RunResult) -> None:
        if verbose and not err.is_terminal:
            err.print(f"run {result.run_id} {result.status}", highlight=False)

    try:
        limits = RunLimits.parse(rate or [], max_running or []) if rate or max_running else None
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    try:
        w = Worker(
            engine,
            limits=limits,
            queues=queues,
            concurrency=concurrency,
            poll_s=poll,
            burst=burst,
            max_claims=max_claims,
            on_result=finished,
        )
    except (ValueError, RunError) as exc:
        fail(str(exc), EXIT_INVALID)
    if not as_json:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        err.print(
            f"worker {engine.owner} · store {st.url} · queues {', '.join(queues)} · "
            f"{concurrency} at a time · executor "
            f"{'ray' if engine.executor.remote else 'local'}",
            highlight=False,
        )
    scheduler = _scheduler(engine, config) if schedules else None
    try:
        checkpoints = auto_checkpoints(st, config)
        stats = asyncio.run(
            _work(w, st, grace, live=verbose and err.is_terminal, cp=checkpoints, sched=scheduler)
        )
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except ErpozError as exc:
        fail(str(exc), EXIT_RUN)
    finally:
        engine.executor.shutdown()
    if as_json:
        out.print_json(data=stats)
    else:
        err.print(_summary(stats), highlight=False)
    if stats["errors"]:
        raise typer.Exit(EXIT_FAILED)


def _scheduler(engine: Engine, config: str | None) -> Scheduler:
    """The worker's scheduler, the project file's schedules made current in the store first
    (every worker does it; the second changes nothing). A bad section exits 2."""
    from ..models import load_config

    try:
        specs = schedules_from_config(load_config(config))
        if specs:
            asyncio.run(sync_schedules(engine.store, specs))
    except (ConfigError, FlowError) as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    return Scheduler(engine)


async def _work(
    w: Worker,
    st: Store,
    grace: float,
    *,
    live: bool,
    cp: AutoCheckpointer | None = None,
    sched: Scheduler | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stopping = {"n": 0}

    def on_signal() -> None:
        stopping["n"] += 1
        # a second signal: hand back at once
        w.stop(grace if stopping["n"] == 1 else 0.0)
        err.print(
            "stopping: no new runs; "
            + (f"runs in flight get {grace:g} s" if stopping["n"] == 1 else "handing runs back"),
            highlight=False,
        )

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    task = asyncio.ensure_future(with_checkpoints(cp, w.run()))
    ticking = asyncio.ensure_future(sched.run()) if sched is not None else None
    try:
        if live:
            with Live(_summary(w.stats.counts(), w.in_flight), console=err, transient=True) as lv:
                while not task.done():
                    await asyncio.wait({task}, timeout=0.5)
                    lv.update(_summary(w.stats.counts(), w.in_flight))
        stats = await task
    finally:
        if sched is not None and ticking is not None:
            sched.stop()
            await asyncio.gather(ticking, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await st.close()
    return stats.to_json()


def _summary(stats: dict[str, Any], in_flight: int | None = None) -> str:
    parts = [
        f"{stats['claimed']} claimed",
        f"{stats['succeeded']} succeeded",
        f"{stats['failed']} failed",
        f"{stats['waiting']} waiting",
    ]
    for key in ("cancelled", "handed_back", "lost", "abandoned", "errors"):
        if stats[key]:
            parts.append(f"{stats[key]} {key.replace('_', ' ')}")
    if in_flight is not None:
        parts.append(f"{in_flight} in flight")
    rate = stats["succeeded"] / stats["seconds"] if stats["seconds"] else 0.0
    return " · ".join(parts) + f" · {rate:.1f} runs/s · {time.strftime('%H:%M:%S')}"


def limits_command(
    store: StoreOpt = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Project file \\[default: erpoz.yaml]"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show every limit as it stands: the models' limits of the project file and those the
    store keeps (workers' --rate and --max-running), each with its use now and its room.

    [dim]Example:[/] erpoz limits --json
    """
    from ..models import limits_overview
    from ..project import load_hub

    try:
        specs = load_hub(config).specs
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)

    async def read() -> list[dict[str, Any]]:
        try:
            return await limits_overview(st, specs)
        finally:
            await st.close()

    try:
        rows = asyncio.run(read())
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        out.print_json(data={"limits": rows})
        return
    if not rows:
        out.print("no limits: none configured in the project file, none kept in the store")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("limit key", "kind", "allows", "used", "room", "configured"):
        table.add_column(col)
    for r in rows:
        per = f" per {r['per_s']:g} s" if r.get("per_s") else ""
        allows = "?" if r["limit"] is None else f"{r['limit']:g}{per}"
        room = "?" if r["room"] is None else f"{r['room']:g}"
        table.add_row(
            escape(r["key"]),
            r["kind"],
            allows,
            f"{r['used']:g}",
            room,
            "here" if r["configured"] else "store",
        )
    out.print(table)
