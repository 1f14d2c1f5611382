"""Configuration fails closed: a policy rule that names no resource, an empty one, or (in
erpoz.yaml) a data rule for a detector no guard reports is an error naming file and line —
never "allow all". Before, `{name: r, action: allow}` was accepted and allowed every tool."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz.cli import app
from erpoz.errors import ConfigError
from erpoz.guards import guardrails_from_config
from erpoz.models._config import parse_config
from erpoz.policy import Rule, load_policy, parse_policy


@pytest.mark.parametrize(
    ("rules", "line", "message"),
    [
        ("  - {name: r, action: allow}\n", 2, "rule 'r' names no resource"),
        ("  - name: r\n    flow: billing\n    action: allow\n", 2, "rule 'r' names no resource"),
        ("  - {name: r, tool: '', action: allow}\n", 2, "'tool' is empty"),
        ("  - {name: r, model: ' ', action: deny}\n", 2, "'model' is empty"),
        ("  - {name: r, tool: x, tenant: '', action: allow}\n", 2, "'tenant' is empty"),
        ("  - {name: '', tool: x, action: allow}\n", 2, "'name' is empty"),
        ("  - {name: r, tool: x}\n", 2, "rule 1 has no 'action'"),
        ("  - {name: r, tool: x, action: permit}\n", 2, "action 'permit': expected one of"),
        ("  - {name: r, tool: x, action: allow}\n  - {name: s, action: deny}\n", 3, "names no"),
    ],
)
def test_a_rule_that_names_nothing_is_an_error_with_its_line(
    tmp_path: Path, rules: str, line: int, message: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n" + rules)
    with pytest.raises(ConfigError, match=message) as caught:
        load_policy(path)
    assert (caught.value.file, caught.value.line) == (str(path), line)


def test_policy_check_refuses_the_rule_that_allowed_every_tool(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - {name: r, action: allow}\n")
    res = CliRunner().invoke(
        app, ["policy", "check", str(path), "--tool", "send_email"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 2, res.output
    assert f"{path}:2" in res.output and "names no resource" in res.output
    assert "allow by rule r" not in res.output
    # said explicitly, it is a rule like any other
    path.write_text("rules:\n  - {name: r, tool: '*', action: allow}\n")
    res = CliRunner().invoke(app, ["policy", "check", str(path), "--tool", "send_email"])
    assert res.exit_code == 0 and "allow by rule r" in res.output


def test_a_python_rule_names_its_resource_too() -> None:
    with pytest.raises(ValueError, match="names no resource"):
        Rule("r", "allow")
    with pytest.raises(ValueError, match="tool is empty"):
        Rule("r", "allow", "")
    assert Rule("r", "allow", "*").resource == "tool"
    assert Rule("r", "deny", model="gpt-*").resource == "model"
    assert parse_policy("rules: [{name: r, data: pii, action: log}]").rules[0].resource == "data"


def project(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        guardrails_from_config(
            parse_config(textwrap.dedent(text), file="erpoz.yaml", base=tmp_path)
        )
    return caught.value


def test_a_data_rule_for_a_detector_no_guard_reports_is_an_error(tmp_path: Path) -> None:
    exc = project(
        """\
        guards:
          checks:
            pii: {at: [delivery]}
        policy:
          rules:
            - {name: cards never leave, data: pii.credit_card, action: redact}
            - name: no hijacking
              data: injection
              action: block
        """,
        tmp_path,
    )
    assert exc.line == 8 and exc.file == "erpoz.yaml"
    assert "data 'injection' names detector 'injection', which no guard" in exc.message
    assert "(detectors: pii)" in exc.message
    # without any guard, a data rule can never apply either
    exc = project(
        "policy: {rules: [{name: cards never leave, data: pii.credit_card, action: redact}]}\n",
        tmp_path,
    )
    assert exc.line == 1 and "detectors: none configured" in exc.message


def test_the_policy_file_of_a_project_is_checked_against_its_guards(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "rules:\n"
        "  - {name: r, tool: x, action: allow}\n"
        "  - {name: t, data: toxicity, action: log}\n"
    )
    exc = project("guards: {checks: {pii: {}}}\npolicy: policy.yaml\n", tmp_path)
    assert exc.file == str(tmp_path / "policy.yaml") and exc.line == 3
    # globs name no particular detector; a configured one passes
    rails = guardrails_from_config(
        parse_config(
            "guards: {checks: {pii: {}}}\n"
            "policy: {rules: [{name: a, data: '*.error', action: block},"
            " {name: b, data: pii.email, action: redact}]}\n",
            file="erpoz.yaml",
        )
    )
    assert rails is not None and [r.name for r in rails.policy.rules] == ["a", "b"]
