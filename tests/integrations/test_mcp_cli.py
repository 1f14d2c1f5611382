"""``erpoz mcp tools`` as a user runs it: a real server behind the project file, the policy's
decisions, JSON for machines, and exit codes that say what went wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP integration needs the mcp extra")

from typer.testing import CliRunner

from erpoz.cli import app

from .mcp_helpers import stdio_yaml

RULES = (
    "policy:\n  rules:\n"
    "    - {name: sums, tool: calc__add, action: allow, flow: billing}\n"
    "    - {name: sending needs a person, tool: calc__send, action: review}\n"
)


def erpoz(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["mcp", *args], env={"COLUMNS": "200", "NO_COLOR": "1", "ERPOZ_CONFIG": ""}
    )


@pytest.fixture(autouse=True)
def _in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)


def test_tools_lists_names_schemas_side_effects_and_policy(tmp_path: Path) -> None:
    (tmp_path / "erpoz.yaml").write_text(
        "mcp:\n" + stdio_yaml(tmp_path / "sent.jsonl") + RULES, encoding="utf-8"
    )
    listed = erpoz(tmp_path, "tools", "--flow", "billing", "--json")
    assert listed.exit_code == 0, listed.stderr
    tools = {t["tool"]: t for t in json.loads(listed.stdout)}
    assert set(tools) == {
        "calc__add",
        "calc__send",
        "calc__lookup",
        "calc__divide",
        "calc__pid",
        "calc__crash",
    }
    add, send = tools["calc__add"], tools["calc__send"]
    assert add["server"] == "calc" and add["side_effects"] is False and send["side_effects"]
    assert add["parameters"]["required"] == ["a", "b"]
    assert add["policy"] == {"action": "allow", "rule": "sums"}
    assert send["policy"] == {"action": "review", "rule": "sending needs a person"}
    assert tools["calc__pid"]["policy"]["action"] == "deny"
    other = json.loads(erpoz(tmp_path, "tools", "--flow", "other", "--json").stdout)
    assert next(t for t in other if t["tool"] == "calc__add")["policy"]["action"] == "deny"
    table = erpoz(tmp_path, "tools")
    assert table.exit_code == 0 and "calc__send" in table.stdout and "review" in table.stdout


def test_tools_exit_codes(tmp_path: Path) -> None:
    none = erpoz(tmp_path, "tools")
    assert none.exit_code == 2 and "no MCP servers" in none.stderr
    (tmp_path / "erpoz.yaml").write_text("mcp:\n  s:\n    command: x\n    tools: []\n")
    wrong = erpoz(tmp_path, "tools")
    assert wrong.exit_code == 2 and "erpoz.yaml:4" in wrong.stderr
    (tmp_path / "erpoz.yaml").write_text(
        "mcp:\n  s:\n    url: http://127.0.0.1:9/mcp\n    connect_timeout_s: 5\n"
    )
    down = erpoz(tmp_path, "tools")
    assert down.exit_code == 1 and "could not connect" in " ".join(down.stderr.split())
