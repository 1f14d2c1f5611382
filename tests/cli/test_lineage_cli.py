"""``erpoz audit lineage RUN STEP``, run as the real console script against a store written by
real runs."""

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine
from erpoz.flow._load import load_flow
from erpoz.models import ModelHub, ModelSpec
from erpoz.routing import FallbackRouter
from erpoz.store import open_store
from erpoz.testing import ScriptedModel
from erpoz.tools import Rule, ToolPolicy, ToolRegistry, tool

from ._helpers import TICKET, TRIAGE, Cli

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
    return (await ctx.models.chat("default", f"{q} {facts}")).text


@step
async def side(text: str) -> int:
    return len(text)


flow = Flow("lineage-cli", inputs={"text": str})
parsed = flow.add(parse, text=flow.input("text"))
facts = flow.add(fetch, q=parsed)
reply = flow.add(answer, q=parsed, facts=facts)
flow.add(side, text=flow.input("text"))
flow.output(reply)
"""


@tool
def lookup(q: str) -> dict[str, Any]:
    """Look a question up."""
    return {"found": 1}


@pytest.fixture
def run(cli: Cli) -> tuple[str, Path]:
    """One run of a file-based flow in the CLI's store: (run id, flow file)."""
    flow_file = cli.tmp_path / "cli_lineage_flow.py"
    flow_file.write_text(textwrap.dedent(FLOW_SOURCE), encoding="utf-8")
    hub = ModelHub()
    gpt = hub.add(ScriptedModel(["Paris"], name="gpt"), ModelSpec("gpt", "double", price_in=1.0))
    hub.add(FallbackRouter("default", [gpt]))
    tools = ToolRegistry([lookup], ToolPolicy((Rule("reads", "allow", "lookup"),)))

    async def main() -> str:
        store = open_store(cli.store)
        try:
            engine = Engine(store, services={ModelHub: hub, ToolRegistry: tools})
            result = await engine.run(
                load_flow(f"{flow_file}:flow"), {"text": "capital?"}, tags={"user": "ana"}
            )
            assert result.status == "succeeded", result
            return result.run_id
        finally:
            await store.close()

    return asyncio.run(main()), flow_file


def test_json_names_upstream_steps_and_attributes_calls(cli: Cli, run: tuple[str, Path]) -> None:
    run_id, _ = run
    data = cli.ok("audit", "lineage", run_id[:12], "answer", "--json").json()
    assert data["run_id"] == run_id and data["graph"] == "flow"
    assert [s["step"] for s in data["upstream"]] == ["parse", "fetch"]
    me = data["step"]
    assert me["step"] == "answer" and me["status"] == "succeeded"
    assert [m["model"] for m in me["models"]] == ["gpt"]
    assert [r["winner"] for r in me["routes"]] == ["gpt"]
    assert len(me["output"]["sha256"]) == 64
    fetch = data["upstream"][1]
    assert [t["tool"] for t in fetch["tools"]] == ["lookup"]
    assert [(p["resource"], p["action"]) for p in fetch["policy"]] == [("tool:lookup", "allow")]
    assert data["tags"] == {"user": "ana"} and [i["name"] for i in data["inputs"]] == ["text"]


def test_human_output_is_a_tree_of_the_step_and_its_upstream(
    cli: Cli, run: tuple[str, Path]
) -> None:
    run_id, _ = run
    res = cli.ok("audit", "lineage", run_id, "answer")
    for word in ("answer", "upstream", "parse", "fetch", "model gpt", "tool lookup"):
        assert word in res.text, res
    assert "side" not in res.text


def test_unknown_step_is_a_usage_error_naming_the_steps(cli: Cli, run: tuple[str, Path]) -> None:
    run_id, _ = run
    res = cli.ok("audit", "lineage", run_id, "anwser", code=2)
    assert "anwser" in res.stderr and "parse, side, fetch, answer" in res.text


def test_unknown_run_is_exit_5(cli: Cli, run: tuple[str, Path]) -> None:
    res = cli.ok("audit", "lineage", "r0000000000000", "answer", code=5)
    assert "no run" in res.stderr


def test_without_the_flow_file_it_says_it_used_the_recorded_order(
    cli: Cli, run: tuple[str, Path]
) -> None:
    run_id, flow_file = run
    (cli.tmp_path / "elsewhere").mkdir()
    moved = flow_file.rename(cli.tmp_path / "elsewhere" / flow_file.name)
    data = cli.ok("audit", "lineage", run_id, "answer", "--json").json()
    assert data["graph"] == "recorded order" and "cannot load" in data["graph_note"]
    assert {"parse", "fetch"} <= {s["step"] for s in data["upstream"]}
    assert "recorded order" in cli.ok("audit", "lineage", run_id, "answer").text
    again = cli.ok("audit", "lineage", run_id, "answer", "--flow", f"{moved}:flow", "--json")
    assert again.json()["graph"] == "flow"
    cli.ok("audit", "lineage", run_id, "answer", "--flow", "nowhere.yaml", code=2)


def test_a_yaml_flow_run_from_the_command_line(cli: Cli) -> None:
    """The example triage flow: a map, a conditional step with a tool event, a loop."""
    run_id = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--json").json()["run_id"]
    data = cli.ok("audit", "lineage", run_id, "reply", "--json").json()
    assert data["graph"] == "flow"
    upstream = {s["step"]: s for s in data["upstream"]}
    assert list(upstream) == ["classify", "mood", "billing", "policy", "draft", "revise"]
    assert [t["tool"] for t in upstream["billing"]["tools"]] == ["billing.lookup"]
    assert all(not s["tools"] for name, s in upstream.items() if name != "billing")
    loops = [x["execution"] for x in upstream["revise"]["executions"]]
    assert loops[0] == "revise" and all(x.startswith("revise#") for x in loops[1:])
    item = cli.ok("audit", "lineage", run_id, "mood[0]", "--json").json()
    assert item["execution"] == "mood[0]" and [s["step"] for s in item["upstream"]] == ["classify"]


def test_provenance_is_labelled_and_propagates_down_the_graph(
    cli: Cli, run: tuple[str, Path]
) -> None:
    run_id, _ = run
    data = cli.ok("audit", "lineage", run_id, "answer", "--json").json()
    parse, fetch = data["upstream"]
    assert parse["provenance"]["label"] == "trusted"  # it read only the run's input
    assert fetch["provenance"] == {
        "label": "untrusted",
        "sources": ["tool:lookup"],  # a tool's result is untrusted content
        "from_steps": [],
        "contained": [],
    }
    me = data["step"]["provenance"]
    assert me["label"] == "untrusted" and me["from_steps"] == ["fetch"] and me["sources"] == []
    text = cli.ok("audit", "lineage", run_id, "answer").text
    assert "provenance untrusted · from step fetch" in text
    assert "provenance untrusted · from tool:lookup" in text
