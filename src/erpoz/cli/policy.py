"""``erpoz policy check``: validate a policy and explain which rule decides a request."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import ConfigError
from ..policy import CHECKPOINTS, DATA_DEFAULT, Policy, Subject, policy_from_doc
from ._console import EXIT_INVALID, JsonOpt, fail, out

policy_app = typer.Typer(
    help="Policies: who may call which tool or model, and what happens to which data."
    "\n\n[dim]Example:[/] erpoz policy check policy.yaml --tool send_email --flow billing",
    no_args_is_help=True,
)


def _read(file: str) -> Policy:
    """A policy file (``rules:``), or a project file whose ``policy`` section is read; the
    file is read and parsed once."""
    from ..flow import LineMap, load_config_yaml, read_text_file
    from ..guards import guardrails_from_config
    from ..models import parse_config

    try:
        text = read_text_file(Path(file), "the file")
    except ValueError as exc:
        raise ConfigError(str(exc), file=file) from None
    doc = load_config_yaml(text, file)
    if isinstance(doc, LineMap) and "rules" in doc:
        return policy_from_doc(doc, file=file)
    rails = guardrails_from_config(parse_config(text, file=file, base=Path(file).parent))
    return rails.policy if rails is not None else Policy()


@policy_app.command("check")
def check(
    file: Annotated[
        str, typer.Argument(help="A policy file, or erpoz.yaml (its 'policy' section).")
    ],
    tool: Annotated[str | None, typer.Option(help="Explain the decision for this tool.")] = None,
    model: Annotated[str | None, typer.Option(help="… for a call of this model.")] = None,
    data: Annotated[
        str | None,
        typer.Option(help="… for a finding of this data class (detector.kind: pii.email)."),
    ] = None,
    at: Annotated[str, typer.Option(help="… at this checkpoint (with --data).")] = "model_input",
    score: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="… with this score, 0 to 1 (with --data).")
    ] = 1.0,
    flow: Annotated[str, typer.Option(help="… in this flow.")] = "-",
    step: Annotated[str, typer.Option(help="… in this step.")] = "-",
    tenant: Annotated[str, typer.Option(help="… for this tenant.")] = "-",
    user: Annotated[str, typer.Option(help="… for this user.")] = "-",
    as_json: JsonOpt = False,
) -> None:
    """Validate a policy (exit 2 with file and line when it is wrong); with --tool, --model
    or --data, say which rule decides and what it does.

    [dim]Examples:[/] erpoz policy check policy.yaml --tool send_email --flow billing
    erpoz policy check erpoz.yaml --data pii.credit_card --at delivery --tenant acme
    """
    if sum(x is not None for x in (tool, model, data)) > 1:
        fail("ask about one of --tool, --model or --data at a time", EXIT_INVALID)
    if at not in CHECKPOINTS:
        fail(f"--at {at!r}: expected one of {', '.join(CHECKPOINTS)}", EXIT_INVALID)
    try:
        policy = _read(file)
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)
    subject = Subject(flow, step, tenant, user)
    result: dict[str, object] = {"valid": True, "rules": len(policy.rules)}
    asked = ""
    if tool is not None:
        action, rule = policy.decide(tool, subject=subject)
        asked = f"tool {tool}"
        result.update({"tool": tool, "action": action, "rule": rule})
        result["untrusted"] = policy.untrusted_of(tool, subject)
    elif model is not None:
        action, rule = policy.decide_model(model, subject)
        asked = f"model {model}"
        result.update({"model": model, "action": action, "rule": rule})
    elif data is not None:
        found = policy.decide_data(data, at, subject, score=score)
        asked = f"data {data} at {at}"
        result.update(
            {
                "data": data,
                "checkpoint": at,
                "action": found.action if found else "log",
                "rule": found.name if found else DATA_DEFAULT,
            }
        )
    if asked:
        result.update({"flow": flow, "step": step, "tenant": tenant, "user": user})
    if as_json:
        out.print_json(data=result)
        return
    out.print(f"[green]valid[/]: {len(policy.rules)} rules")
    if asked:
        out.print(
            f"{escape(asked)} (flow {escape(flow)}, step {escape(step)}, tenant "
            f"{escape(tenant)}, user {escape(user)}): [bold]{result['action']}[/] by rule "
            f"{escape(str(result['rule']))}"
        )
    untrusted = result.get("untrusted")
    if isinstance(untrusted, dict):
        fields = ", ".join(untrusted["fields"]) or "none"
        out.print(
            f"arguments from untrusted content: [bold]{untrusted['side_effects']}[/] if it has "
            f"side effects, {untrusted['read_only']} if read-only; fields that may carry them: "
            f"{escape(fields)} (by {escape(str(untrusted['rule']))})"
        )
