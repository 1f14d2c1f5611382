"""Governance from erpoz.yaml, end to end through the real ``erpoz`` command: tools named in the
project file, the project's policy (tool review, a model denied for a tenant), guards at the
checkpoints, and a tool call approved from the review queue that then runs exactly once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ._helpers import Cli

TOOLS = '''
from pathlib import Path

from erpoz.tools import tool

OUTBOX = Path(__file__).with_name("outbox.txt")


@tool(side_effects=True)
def send_mail(to: str, body: str) -> str:
    """Send an e-mail."""
    with OUTBOX.open("a") as f:
        f.write(f"{to}|{body}\\n")
    return "sent"
'''

FLOW = """
from erpoz import Context, Flow, step


@step
async def notify(text: str, ctx: Context) -> str:
    answer = await ctx.models.chat("default", "Passages:\\n[1] " + text + "\\n\\nQuestion: " + text)
    await ctx.tools.call("send_mail", to="ops@example.com", body=text)
    return answer.text


flow = Flow("notify", inputs={"text": str})
flow.add(notify, text=flow.input("text"))
"""

PROJECT = """
models:
  reader: {provider: extractive}
routers:
  default: {type: fallback, models: [reader]}
tools: [govtools:send_mail]
guards:
  checks:
    pii: {at: [model_input, tool_call, delivery]}
policy:
  rules:
    - {name: mail needs a person, tool: send_mail, action: review}
    - {name: free tier has no models, model: "*", tenant: free, action: deny}
    - {name: cards are masked, data: pii.credit_card, action: redact}
"""


@pytest.fixture
def project(tmp_path: Path, cli: Cli) -> Path:
    (tmp_path / "govtools.py").write_text(textwrap.dedent(TOOLS))
    (tmp_path / "govflow.py").write_text(textwrap.dedent(FLOW))
    (tmp_path / "erpoz.yaml").write_text(PROJECT)
    cli.env["ERPOZ_CONFIG"] = str(tmp_path / "erpoz.yaml")
    cli.env["PYTHONPATH"] = str(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_tool_review_from_the_project_file_runs_the_tool_once_after_approval(
    cli: Cli, project: Path
) -> None:
    flow = f"{project / 'govflow.py'}:flow"
    text = "The refund for card 4111 1111 1111 1111 was approved."
    res = cli.ok("run", flow, "-i", f"text={text}", "-t", "tenant=acme", "--json", code=3)
    run_id = res.json()["run_id"]
    assert not (project / "outbox.txt").exists()  # waiting: the tool has not run
    queue = cli.ok("review", "ls", "--json").json()
    assert [q["run_id"] for q in queue] == [run_id]
    assert "send_mail" in queue[0]["reason"]

    done = cli.ok("review", "approve", run_id, "--reviewer", "ana", "--json")
    assert done.json()["status"] == "succeeded", str(done)
    sent = (project / "outbox.txt").read_text().splitlines()
    # exactly once, and the card number was redacted at the tool_call checkpoint
    assert sent == ["ops@example.com|The refund for card [CREDIT_CARD] was approved."]
    events = cli.events(run_id)
    kinds = [e["kind"] for e in events]
    assert kinds.count("tool_called") == 1
    decided = [e["data"] for e in events if e["kind"] == "policy_decided"]
    assert decided[-1]["approved_by_review"] is True
    resolved = [e["data"] for e in events if e["kind"] == "review_resolved"]
    assert resolved[0]["reviewer"] == "ana" and resolved[0]["grant"].startswith("tool:send_mail:")
    checkpoints = {e["data"]["checkpoint"] for e in events if e["kind"] == "guard_decided"}
    assert {"model_input", "tool_call", "delivery"} <= checkpoints
    output = cli.show(run_id)["output"]
    assert "4111" not in output and "[CREDIT_CARD]" in output
    # the card number is nowhere in the log except the run's own input
    for e in events:
        if e["kind"] != "run_started":
            assert "4111 1111" not in str(e), e


@pytest.mark.slow
def test_a_model_denied_for_a_tenant_fails_the_run_naming_the_rule(cli: Cli, project: Path) -> None:
    flow = f"{project / 'govflow.py'}:flow"
    res = cli.ok("run", flow, "-i", "text=hello", "-t", "tenant=free", "--json", code=1)
    assert "free tier has no models" in res.text
    bad = project / "erpoz.yaml"
    bad.write_text(PROJECT.replace("action: deny", "action: maybe"))
    res = cli.ok("run", flow, "-i", "text=hello", code=2)
    assert f"{bad}:" in res.text and "maybe" in res.text
