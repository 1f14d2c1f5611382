"""Policy files: errors with file and line; `erpoz policy check` explains which rule decides."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz.cli import app
from erpoz.errors import ConfigError
from erpoz.tools import load_policy

GOOD = """\
rules:
  - name: billing may read
    tool: lookup_*
    flow: billing
    action: allow
  - name: mail needs a person
    tool: send_email
    action: review
  - name: audit everything else in billing
    tool: "*"
    flow: billing
    action: log
"""


def test_rules_apply_in_order_and_nothing_matching_is_denied(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    policy = load_policy(path)
    assert policy.decide("lookup_invoice", "billing", "s") == ("allow", "billing may read")
    assert policy.decide("send_email", "support", "s") == ("review", "mail needs a person")
    assert policy.decide("shell", "billing", "s") == ("log", "audit everything else in billing")
    assert policy.decide("shell", "support", "s")[0] == "deny"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("rules:\n  - name: a\n    action: maybe\n", 3, "action 'maybe': expected one of"),
        ("rules:\n  - name: a\n    action: allow\n    tools: x\n", 4, "unknown key 'tools'"),
        ("rules:\n  - action: allow\n", 2, "rule 1 has no 'name'"),
        (
            "rules:\n  - {name: a, tool: x, action: allow}\n  - {name: a, tool: y, action: deny}\n",
            3,
            "two rules are named 'a'",
        ),
        ("rules: [\n", 2, "malformed YAML"),
        ("allow: everything\n", 1, "a mapping with 'rules'"),
    ],
)
def test_mistakes_are_named_with_their_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_policy(path)
    assert err.value.file == str(path) and err.value.line == line


def test_cli_check_explains_the_decision(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    runner = CliRunner()
    res = runner.invoke(app, ["policy", "check", str(path), "--tool", "send_email", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output) == {
        "valid": True,
        "rules": 3,
        "tool": "send_email",
        "flow": "-",
        "step": "-",
        "tenant": "-",
        "user": "-",
        "action": "review",
        "rule": "mail needs a person",
        "untrusted": {  # what arguments from untrusted content get: no rule says, defaults
            "side_effects": "deny",
            "read_only": "allow",
            "fields": [],
            "rule": "default: side effects get the policy's 'untrusted' (deny unless set); "
            "default: read-only tools take untrusted arguments",
        },
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: a\n    action: maybe\n")
    res = runner.invoke(app, ["policy", "check", str(bad)], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and f"{bad}:3" in res.output


PROJECT = """\
models:
  reader: {provider: extractive}
guards:
  checks:
    pii: {at: [delivery]}
policy:
  rules:
    - name: free tier stays local
      model: gpt-*
      tenant: free-*
      action: deny
    - name: cards never leave
      data: pii.credit_card
      at: [delivery]
      action: redact
    - name: mail
      tool: send_email
      action: allow
"""


def test_cli_check_reads_the_policy_section_of_a_project_file(tmp_path: Path) -> None:
    path = tmp_path / "erpoz.yaml"
    path.write_text(PROJECT)
    runner = CliRunner()

    def ask(*args: str) -> dict[str, object]:
        res = runner.invoke(app, ["policy", "check", str(path), *args, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)  # type: ignore[no-any-return]

    got = ask("--model", "gpt-4o", "--tenant", "free-eu")
    assert (got["action"], got["rule"]) == ("deny", "free tier stays local")
    assert ask("--model", "gpt-4o", "--tenant", "acme")["action"] == "allow"
    got = ask("--data", "pii.credit_card", "--at", "delivery")
    assert (got["action"], got["rule"]) == ("redact", "cards never leave")
    assert ask("--data", "pii.credit_card", "--at", "model_input")["action"] == "log"
    assert ask("--tool", "send_email")["action"] == "allow"
    bad = runner.invoke(app, ["policy", "check", str(path), "--data", "x", "--at", "nowhere"])
    assert bad.exit_code == 2 and "nowhere" in bad.output
    path.write_text(PROJECT.replace("at: [delivery]", "at: [deliveryy]"))
    res = runner.invoke(app, ["policy", "check", str(path)], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and f"{path}:" in res.output and "deliveryy" in res.output
