"""Tools from a step: denied unless granted, every decision and call recorded, arguments checked."""

import asyncio
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.store import MemoryStore
from erpoz.tools import Rule, ToolError, ToolPolicy, ToolRegistry, tool

SENT: list[tuple[str, str]] = []


@tool(side_effects=True, secret=["api_key"])
def send_email(to: str, body: str, api_key: str = "k") -> str:
    """Send an e-mail."""
    SENT.append((to, body))
    return f"sent to {to}"


@tool
async def lookup(invoice: int, detail: bool = False) -> dict[str, Any]:
    """Look an invoice up."""
    return {"invoice": invoice, "total": 49.0, "detail": detail}


@step
async def act(target: str, ctx: Context) -> str:
    found = await ctx.tools.call("lookup", invoice=1042)
    sent = await ctx.tools.call(
        "send_email", to=target, body=f"total {found['total']}", api_key="s3cret"
    )
    return str(sent)


def run(registry: ToolRegistry | None, target: str = "ana@example.com") -> tuple[Any, list[Any]]:
    flow = Flow("billing", inputs={"target": str})
    flow.add(act, target=flow.input("target"))
    services = {ToolRegistry: registry} if registry else {}

    async def main() -> tuple[Any, list[Any]]:
        store = MemoryStore()
        result = await Engine(store, services=services).run(flow, {"target": target})
        return result, await store.events(result.run_id)

    return asyncio.run(main())


def test_tools_are_denied_unless_granted_and_never_run() -> None:
    SENT.clear()
    registry = ToolRegistry([send_email, lookup], ToolPolicy((Rule("read", "allow", "lookup"),)))
    result, events = run(registry)
    assert result.status == "failed" and "PolicyViolation" in (result.error or "")
    assert SENT == []  # the denied tool never executed
    decisions = [e.data for e in events if e.kind == "policy_decided"]
    assert [(d["resource"], d["action"], d["rule"]) for d in decisions] == [
        ("tool:lookup", "allow", "read"),
        ("tool:send_email", "deny", "default: tools are denied unless granted"),
    ]


def test_granted_calls_are_recorded_with_secrets_redacted_and_a_key() -> None:
    SENT.clear()
    policy = ToolPolicy((Rule("billing may mail", "allow", "*", flow="billing"),))
    result, events = run(ToolRegistry([send_email, lookup], policy))
    assert result.output == "sent to ana@example.com"
    assert SENT == [("ana@example.com", "total 49.0")]
    calls = [e.data for e in events if e.kind == "tool_called"]
    assert [c["tool"] for c in calls] == ["lookup", "send_email"]
    mail = calls[1]
    assert mail["arguments"]["api_key"] == "[REDACTED]" and mail["status"] == "ok"
    assert len(mail["idempotency_key"]) == 32 and "idempotency_key" not in calls[0]
    assert mail["result_bytes"] > 0


def test_review_rule_pauses_the_run_before_the_call() -> None:
    SENT.clear()
    policy = ToolPolicy(
        (Rule("reads", "allow", "lookup"), Rule("mail needs a person", "review", "send_*"))
    )
    result, events = run(ToolRegistry([send_email, lookup], policy))
    assert result.status == "waiting" and SENT == []
    (req,) = [e for e in events if e.kind == "review_requested"]
    assert req.data["evidence"]["arguments"]["api_key"] == "[REDACTED]"


def test_bad_arguments_and_unknown_tools_are_clear_errors() -> None:
    registry = ToolRegistry([lookup], ToolPolicy((Rule("all", "allow", "*"),)))

    @step
    async def wrong(target: str, ctx: Context) -> str:
        try:
            await ctx.tools.call("lookup", invoice="not a number")
        except ToolError as exc:
            first = str(exc)
        try:
            await ctx.tools.call("nope")
        except ToolError as exc:
            return f"{first} | {exc}"
        return "unexpected"

    flow = Flow("w", inputs={"target": str})
    flow.add(wrong, target=flow.input("target"))
    out = asyncio.run(
        Engine(MemoryStore(), services={ToolRegistry: registry}).run(flow, {"target": "x"})
    ).output
    assert "tool 'lookup': argument invoice" in out
    assert "unknown tool 'nope' (tools: lookup)" in out


def test_schema_comes_from_type_hints() -> None:
    assert lookup.spec.parameters["properties"]["invoice"]["type"] == "integer"
    assert lookup.spec.parameters["required"] == ["invoice"]
    assert lookup.spec.description == "Look an invoice up."
    with pytest.raises(ToolError, match="needs a type hint"):
        tool(lambda x: x)
