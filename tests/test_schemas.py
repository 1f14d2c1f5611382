"""The JSON Schemas of erpoz.yaml, policy files and YAML flows (``erpoz schema``): the copies
published in ``schemas/`` are the ones the code makes, and every shipped example file is valid
against its schema (while a mistake is not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from tests.cli._helpers import Cli

from erpoz.schema import KINDS, json_schema

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {
    "config": "erpoz.schema.json",
    "policy": "policy.schema.json",
    "flow": "flow.schema.json",
}
EXAMPLES = ROOT / "examples"
FILES = {
    "config": [EXAMPLES / "tools.yaml", EXAMPLES / "mcp_calc" / "erpoz.yaml"],
    "policy": [EXAMPLES / "policy.yaml"],
    "flow": [EXAMPLES / "triage.yaml", EXAMPLES / "typo.yaml"],
}


def errors(kind: str, doc: Any) -> list[str]:
    validator = Draft202012Validator(json_schema(kind))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_published_schema_is_the_one_the_code_makes(kind: str) -> None:
    published = json.loads((ROOT / "schemas" / PUBLISHED[kind]).read_text(encoding="utf-8"))
    assert published == json_schema(kind), f"run: erpoz schema {kind} -o schemas/{PUBLISHED[kind]}"
    Draft202012Validator.check_schema(published)


@pytest.mark.parametrize(("kind", "path"), [(k, p) for k, ps in FILES.items() for p in ps])
def test_every_example_file_is_valid(kind: str, path: Path) -> None:
    assert errors(kind, yaml.safe_load(path.read_text(encoding="utf-8"))) == []


def test_mistakes_are_not_valid() -> None:
    flow = yaml.safe_load((EXAMPLES / "triage.yaml").read_text(encoding="utf-8"))
    flow["steps"][0]["retires"] = 3
    assert any("retires" in e for e in errors("flow", flow))
    bad_models = yaml.safe_load((EXAMPLES / "bad-models.yaml").read_text(encoding="utf-8"))
    assert any("pirce" in e for e in errors("config", bad_models))
    rule = {"rules": [{"name": "x", "tool": "*", "action": "maybe"}]}
    assert errors("policy", rule)


def test_the_command_prints_or_writes_a_schema(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert cli.ok("schema", "policy", store=False).json() == json_schema("policy")
    target = tmp_path / "flow.schema.json"
    cli.ok("schema", "flow", "-o", target, store=False)
    assert json.loads(target.read_text(encoding="utf-8")) == json_schema("flow")
    res = cli("schema", "yaml", store=False)
    assert res.code == 2 and "choose config, policy, flow" in res.text


def test_the_rule_schema_names_every_action_and_checkpoint_the_policy_takes() -> None:
    from erpoz.policy import CHECKPOINTS, DATA_ACTIONS, MODEL_ACTIONS, TOOL_ACTIONS

    rule = json_schema("policy")["$defs"]["RuleSpec"]["properties"]
    assert set(rule["action"]["enum"]) == TOOL_ACTIONS | MODEL_ACTIONS | DATA_ACTIONS
    at = json.dumps(rule["at"])
    assert all(f'"{c}"' in at for c in CHECKPOINTS)
