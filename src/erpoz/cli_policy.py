"""``erpoz policy check``: validate a policy file and explain which rule decides a request."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ._console import EXIT_INVALID, JsonOpt, fail, out
from .errors import ConfigError
from .tools import load_policy

policy_app = typer.Typer(
    help="Tool access policy files.\n\n[dim]Example:[/] erpoz policy check policy.yaml",
    no_args_is_help=True,
)


@policy_app.command("check")
def check(
    file: Annotated[str, typer.Argument(help="The policy file (YAML).")],
    tool: Annotated[str | None, typer.Option(help="Explain the decision for this tool.")] = None,
    flow: Annotated[str, typer.Option(help="… called from this flow.")] = "*",
    step: Annotated[str, typer.Option(help="… from this step.")] = "*",
    as_json: JsonOpt = False,
) -> None:
    """Validate a policy file (exit 2 with file and line when it is wrong); with --tool, say
    which rule decides and what it does.

    [dim]Example:[/] erpoz policy check policy.yaml --tool send_email --flow billing
    """
    try:
        policy = load_policy(file)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    result: dict[str, object] = {"valid": True, "rules": len(policy.rules)}
    if tool is not None:
        action, rule = policy.decide(tool, flow, step)
        result.update({"tool": tool, "flow": flow, "step": step, "action": action, "rule": rule})
    if as_json:
        out.print_json(data=result)
        return
    out.print(f"[green]valid[/]: {len(policy.rules)} rules")
    if tool is not None:
        out.print(
            f"tool {escape(tool)} from flow {escape(flow)}, step {escape(step)}: "
            f"[bold]{result['action']}[/] by rule {escape(str(result['rule']))}"
        )
