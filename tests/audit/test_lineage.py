"""Lineage of a step's output, read from real runs: upstream steps from the flow's graph (or the
recorded order when the flow cannot be loaded), and model calls, tool calls and decisions
attributed to the step that made them."""

import asyncio
import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.audit import Lineage, UnknownStep, lineage
from erpoz.audit.lineage import GRAPH_FLOW, GRAPH_RECORDED
from erpoz.errors import RunError
from erpoz.flow._load import load_flow
from erpoz.models import ModelHub, ModelSpec
from erpoz.routing import FallbackRouter
from erpoz.store import Event, Store, open_store
from erpoz.testing import ScriptedModel
from erpoz.tools import Rule, ToolPolicy, ToolRegistry, tool

TEXT = " What is the capital of France? "

# The flow lives in a file so the run records a source lineage can load the graph from.
FLOW_SOURCE = """
from erpoz import Context, Flow, step


@step
def parse(text: str) -> str:
    return text.strip()


@step
async def fetch(q: str, ctx: Context) -> dict:
    return await ctx.tools.call("lookup", q=q)


@step
async def answer(q: str, facts: dict, ctx: Context) -> str:
    reply = await ctx.models.chat("default", f"{q} (facts: {facts})")
    ctx.emit(
        "guard_decided",
        {
            "checkpoint": "model_output",
            "action": "log",
            "rule": "log pii",
            "passed": True,
            "scores": {"pii": 0.2},
            "findings": [
                {"data": "pii.email", "start": 0, "end": 5, "score": 0.9, "action": "log",
                 "rule": "log pii"}
            ],
            "ms": 0.1,
            "model": reply.model,
        },
    )
    return reply.text


@step
async def side(text: str) -> int:
    return len(text)


flow = Flow("lineage-demo", inputs={"text": str})
parsed = flow.add(parse, text=flow.input("text"))
facts = flow.add(fetch, q=parsed)
reply = flow.add(answer, q=parsed, facts=facts)
flow.add(side, text=flow.input("text"))
flow.output(reply)
"""


@tool
def lookup(q: str) -> dict[str, Any]:
    """Look a question up."""
    return {"found": 2, "secret-ish": q.upper()}


def services(replies: list[str]) -> dict[type, object]:
    hub = ModelHub()
    gpt = hub.add(
        ScriptedModel(replies, name="gpt"), ModelSpec("gpt", "double", price_in=0.15, price_out=0.6)
    )
    hub.add(FallbackRouter("default", [gpt]))
    tools = ToolRegistry([lookup], ToolPolicy((Rule("reads", "allow", "lookup"),)))
    return {ModelHub: hub, ToolRegistry: tools}


def write_flow(tmp_path: Path) -> Path:
    path = tmp_path / "lineage_flow.py"
    path.write_text(textwrap.dedent(FLOW_SOURCE), encoding="utf-8")
    return path


async def _trace(store: Store, run_id: str, step_id: str, **kw: Any) -> Lineage:
    return await lineage(store, run_id, step_id, **kw)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str, Path]:
    """A SQLite store with one run of the file-based flow: (store path, run id, flow file)."""
    flow_file = write_flow(tmp_path)
    db = tmp_path / "runs.db"

    async def main() -> str:
        store = open_store(db)
        try:
            engine = Engine(store, services=services(["Paris"]))
            result = await engine.run(
                load_flow(f"{flow_file}:flow"), {"text": TEXT}, tags={"tenant": "acme"}
            )
            assert result.status == "succeeded", result
            return result.run_id
        finally:
            await store.close()

    return db, asyncio.run(main()), flow_file


def trace(db: Path, run_id: str, step_id: str, **kw: Any) -> Lineage:
    async def main() -> Lineage:
        store = open_store(db)
        try:
            return await lineage(store, run_id, step_id, **kw)
        finally:
            await store.close()

    return asyncio.run(main())


def test_upstream_steps_come_from_the_flow_graph_in_dependency_order(
    recorded: tuple[Path, str, Path],
) -> None:
    db, run_id, _ = recorded
    lin = trace(db, run_id, "answer")
    assert lin.graph == GRAPH_FLOW and lin.graph_note is None
    assert [s.step for s in lin.upstream] == ["parse", "fetch"]  # not `side`: answer never read it
    assert lin.step.deps == ("parse", "fetch")
    assert {s.step: s.deps for s in lin.upstream} == {"parse": (), "fetch": ("parse",)}
    assert lin.tags == {"tenant": "acme"}
    assert [i["name"] for i in lin.inputs] == ["text"]
    assert lin.inputs[0]["sha256"] == hashlib.sha256(json.dumps(TEXT).encode()).hexdigest()
    # a root step has no upstream
    assert trace(db, run_id, "parse").upstream == ()


def test_model_tool_and_decisions_are_attributed_to_the_step_that_made_them(
    recorded: tuple[Path, str, Path],
) -> None:
    db, run_id, _ = recorded
    lin = trace(db, run_id, "answer")
    me, fetch = lin.step, {s.step: s for s in lin.upstream}["fetch"]
    assert me.status == "succeeded"
    assert me.output_sha256 == hashlib.sha256(b'"Paris"').hexdigest() and me.output_bytes == 7
    [call] = me.models
    assert call["model"] == "gpt" and call["status"] == "ok" and call["input_tokens"] > 0
    assert call["cost_usd"] > 0 and call["execution"] == "answer"
    [route] = me.routes
    assert route["router"] == "default" and route["winner"] == "gpt"
    [guard] = me.guards
    assert guard["checkpoint"] == "model_output" and guard["findings"] == ["pii.email"]
    assert me.tools == () and me.policy == ()
    [tool_call] = fetch.tools
    assert tool_call["tool"] == "lookup" and tool_call["status"] == "ok"
    assert tool_call["arguments"] == ["q"]
    [decision] = fetch.policy
    assert (decision["resource"], decision["action"], decision["rule"]) == (
        "tool:lookup",
        "allow",
        "reads",
    )
    assert fetch.models == ()


def test_values_are_hashed_never_shown(recorded: tuple[Path, str, Path]) -> None:
    db, run_id, _ = recorded
    dumped = json.dumps(trace(db, run_id, "answer").to_json())
    assert "capital" not in dumped.lower()  # the input, the tool's argument and result
    assert "Paris" not in dumped  # the output
    assert "secret-ish" not in dumped


def test_without_a_loadable_flow_it_falls_back_to_the_recorded_order(
    recorded: tuple[Path, str, Path],
) -> None:
    db, run_id, flow_file = recorded
    flow_file.unlink()
    lin = trace(db, run_id, "answer")
    assert lin.graph == GRAPH_RECORDED
    assert lin.graph_note is not None and "cannot load" in lin.graph_note

    async def events() -> list[Event]:
        store = open_store(db)
        try:
            return await store.events(run_id)
        finally:
            await store.close()

    log = asyncio.run(events())
    started = min(e.seq for e in log if e.step == "answer")
    finished_before = [
        e.step for e in log if e.kind == "step_succeeded" and e.seq < started and e.step
    ]
    assert [s.step for s in lin.upstream] == finished_before
    assert {"parse", "fetch"} <= set(finished_before)
    assert lin.step.models[0]["model"] == "gpt"  # attribution does not need the graph


def test_a_flow_object_run_records_no_source_and_the_flow_can_be_given(tmp_path: Path) -> None:
    flow = load_flow(f"{write_flow(tmp_path)}:flow")
    flow.source = None  # as if built in Python and run directly

    async def main() -> tuple[Lineage, Lineage, Lineage]:
        store = open_store(tmp_path / "obj.db")
        try:
            result = await Engine(store, services=services(["Paris"])).run(flow, {"text": TEXT})
            plain = await _trace(store, result.run_id, "answer")
            given = await _trace(store, result.run_id, "answer", flow=flow)
            other = Flow("lineage-demo", inputs={"text": str})
            other.add(_echo, id="answer", text=other.input("text"))
            changed = await _trace(store, result.run_id, "answer", flow=other)
            return plain, given, changed
        finally:
            await store.close()

    plain, given, changed = asyncio.run(main())
    assert plain.graph == GRAPH_RECORDED and "no source" in (plain.graph_note or "")
    assert given.graph == GRAPH_FLOW and [s.step for s in given.upstream] == ["parse", "fetch"]
    assert changed.graph == GRAPH_RECORDED and "changed" in (changed.graph_note or "")


@step
async def _echo(text: str) -> str:
    return text


@step
async def ask(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("default", question)).text


@step
async def split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",")]


def test_map_items_belong_to_their_step_and_one_item_can_be_asked_about(tmp_path: Path) -> None:
    flow = Flow("fan", inputs={"text": str})
    parts = flow.add(split, text=flow.input("text"))
    flow.map(ask, id="ask", over=parts, item="question", concurrency=1)

    async def main() -> tuple[Lineage, Lineage]:
        store = open_store(tmp_path / "map.db")
        try:
            engine = Engine(store, services=services(["one", "two"]))
            result = await engine.run(flow, {"text": "a?, b?"})
            assert result.output == ["one", "two"]
            return (
                await _trace(store, result.run_id, "ask"),
                await _trace(store, result.run_id, "ask[1]"),
            )
        finally:
            await store.close()

    whole, item = asyncio.run(main())
    assert [m["execution"] for m in whole.step.models] == ["ask[0]", "ask[1]"]
    assert [x["execution"] for x in whole.step.executions] == ["ask", "ask[0]", "ask[1]"]
    assert whole.step.output_sha256 == hashlib.sha256(b'["one","two"]').hexdigest()
    assert item.execution == "ask[1]"
    assert [m["execution"] for m in item.step.models] == ["ask[1]"]
    assert item.step.output_sha256 == hashlib.sha256(b'"two"').hexdigest()


def test_a_replay_finds_the_records_of_copied_steps_in_the_run_they_came_from(
    recorded: tuple[Path, str, Path],
) -> None:
    db, run_id, _ = recorded

    async def main() -> tuple[str, Lineage]:
        store = open_store(db)
        try:
            engine = Engine(store, services=services(["Rome"]))
            result = await engine.replay(run_id, "answer")
            assert result.output == "Rome"
            return result.run_id, await _trace(store, result.run_id, "answer")
        finally:
            await store.close()

    new_id, lin = asyncio.run(main())
    fetch = {s.step: s for s in lin.upstream}["fetch"]
    assert fetch.copied_from == run_id and fetch.evidence_run == run_id
    assert [t["tool"] for t in fetch.tools] == ["lookup"]
    assert lin.step.copied_from is None and lin.step.evidence_run == new_id
    assert lin.step.output_sha256 == hashlib.sha256(b'"Rome"').hexdigest()


def test_unknown_runs_and_steps_are_named(recorded: tuple[Path, str, Path]) -> None:
    db, run_id, _ = recorded
    with pytest.raises(RunError, match="no run"):
        trace(db, "r-nope-nope", "answer")
    with pytest.raises(UnknownStep) as info:
        trace(db, run_id, "anwser")
    assert set(info.value.steps) == {"parse", "fetch", "answer", "side"}
    with pytest.raises(UnknownStep):
        trace(db, run_id, "answer[7]")  # not an execution the run recorded
