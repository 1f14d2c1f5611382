"""The model <-> tools loop: tool calls go through policy, results go back, turns are bounded."""

import asyncio
from typing import Any

from erpoz import Context, Engine, Flow, step
from erpoz.models import ChatResult, ModelHub, ModelSpec, ToolCall
from erpoz.provenance import unmark
from erpoz.store import MemoryStore
from erpoz.testing import ScriptedModel
from erpoz.tools import Rule, ToolPolicy, ToolRegistry, tool

CALLED: list[str] = []


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    CALLED.append(f"weather:{city}")
    return f"sunny in {city}"


@tool(side_effects=True)
def delete_account(user: str) -> str:
    """Delete a user's account."""
    CALLED.append(f"delete:{user}")
    return "deleted"


def asks(*calls: tuple[str, dict[str, Any]]) -> ChatResult:
    return ChatResult(
        "", "m", tool_calls=tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(calls))
    )


def run(script: list[Any], max_turns: int = 4) -> tuple[Any, list[Any], ScriptedModel]:
    model = ScriptedModel(script)
    hub = ModelHub()
    hub.add(model, ModelSpec("m", "test"))
    registry = ToolRegistry(
        [weather, delete_account], ToolPolicy((Rule("reads", "allow", "weather"),))
    )

    @step
    async def assistant(q: str, ctx: Context) -> str:
        return (await ctx.tools.agent("m", q, max_turns=max_turns)).text

    flow = Flow("agent", inputs={"q": str})
    flow.add(assistant, q=flow.input("q"))

    async def main() -> tuple[Any, list[Any]]:
        store = MemoryStore()
        engine = Engine(store, services={ModelHub: hub, ToolRegistry: registry})
        result = await engine.run(flow, {"q": "weather in Paris, then delete bob"})
        return result, await store.events(result.run_id)

    result, events = asyncio.run(main())
    return result, events, model


def test_allowed_tools_run_denied_ones_never_do_and_the_model_hears_why() -> None:
    CALLED.clear()
    script = [
        asks(("weather", {"city": "Paris"}), ("delete_account", {"user": "bob"})),
        "It is sunny in Paris; I may not delete accounts.",
    ]
    result, events, model = run(script)
    assert result.output == "It is sunny in Paris; I may not delete accounts."
    assert CALLED == ["weather:Paris"]  # the denied tool never executed, whatever was asked
    second = model.calls[1].messages
    assert [m.role for m in second] == ["user", "assistant", "tool", "tool"]
    assert second[2].text.startswith('<<untrusted source="tool:weather"')  # spotlighted
    assert unmark(second[2].text) == '"sunny in Paris"' and "denied" in second[3].text
    assert {t.name for t in model.calls[0].tools} == {"weather", "delete_account"}
    kinds = [e.kind for e in events]
    assert kinds.count("model_called") == 2 and kinds.count("policy_decided") == 2
    assert kinds.count("tool_called") == 1 and kinds.count("agent_turn") == 1


def test_the_loop_is_bounded() -> None:
    CALLED.clear()
    script = [asks(("weather", {"city": "Oslo"})) for _ in range(3)]
    result, _, _ = run(script, max_turns=3)
    assert result.status == "failed" and "after 3 turns" in (result.error or "")
    assert CALLED == ["weather:Oslo"] * 3
