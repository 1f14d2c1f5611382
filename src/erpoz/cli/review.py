"""``erpoz review``: the human review queue, and the reviewers' decisions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import RunError
from ..user_json import read_json_file
from ._console import (
    EXIT_INVALID,
    EXIT_RUN,
    JsonOpt,
    StoreOpt,
    fail,
    open_or_fail,
    out,
)

if TYPE_CHECKING:  # the engine, flows and pydantic are imported by the commands that use them
    from ..store import Store

    pass
from ._running import (
    ConfigOpt,
    call,
    resume_here,
)

review_app = typer.Typer(
    help="The human review queue: runs waiting for a person, and their decisions.\n\n"
    "[dim]Example:[/] erpoz review ls",
    no_args_is_help=True,
)


async def _queue(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    from ..engine import review_items

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
            items.extend(review_items(info, await store.events(info.run_id)))
        return items
    finally:
        await store.close()


@review_app.command("ls")
def review_ls(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the steps waiting for review, oldest first, with the reason.

    [dim]Example:[/] erpoz review ls --json
    """
    items = sorted(call(_queue(open_or_fail(store))), key=lambda i: i["requested_at"])
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
    items = call(_queue(open_or_fail(store), run_id))
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve the proposal; the run goes on (in this process) from there.

    [dim]Example:[/] erpoz review approve RUN --comment "checked the amount"
    """
    from ..engine import Decision

    resume_here(
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject the proposal; the run fails, naming the reviewer and the reason.

    [dim]Example:[/] erpoz review reject RUN --comment "wrong customer"
    """
    from ..engine import Decision

    resume_here(
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the proposal with a corrected output (checked against the step's type) and go on.

    [dim]Example:[/] erpoz review edit RUN -f fixed.json
    """
    try:
        output = read_json_file(file)
    except ValueError as exc:
        fail(f"--file {file}: {exc}", EXIT_INVALID)
    from ..engine import Decision

    decision = Decision("edit", output=output, reviewer=reviewer, comment=comment, step=step)
    resume_here(run_id, decision, None, store, False, as_json, config)
