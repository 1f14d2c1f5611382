"""The published JSON Schemas and erpoz's readers are one description of a file: a document the
schema takes, the reader takes (unless a check no schema can say rejects it: those are listed
apart), a document the schema refuses, the reader refuses with the file, the line and the key.
The readers check with the models the schemas are made from (``erpoz.policy.PolicyFile``,
``erpoz.flow.FlowFile``)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from erpoz.errors import ConfigError, FlowError
from erpoz.flow import load_flow
from erpoz.policy import parse_policy

ROOT = Path(__file__).resolve().parents[1]


def published(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8")))


def schema_takes(name: str, text: str) -> bool:
    return published(name).is_valid(yaml.safe_load(text))


def policy_takes(text: str) -> bool:
    try:
        parse_policy(text, file="p.yaml")
    except ConfigError:
        return False
    return True


def flow_takes(tmp_path: Path, text: str) -> bool:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_flow(str(path)).compile()
    except FlowError:
        return False
    return True


RULE = "rules:\n  - {name: r, tool: t, action: allow%s}\n"
POLICIES = {
    # documents both take
    "one rule": (RULE % "", True),
    "every option": (
        "rules: []\nuntrusted: review\nspotlight: datamark\nmasked_check: false\n"
        "delivery_untrusted: deny\n",
        True,
    ),
    "spotlight off unquoted (YAML 1.1 false)": ("rules: []\nspotlight: off\n", True),
    "one untrusted field as a string": (RULE % ", untrusted_fields: body", True),
    "a data rule at one checkpoint": (
        "rules:\n  - {name: r, data: pii, at: delivery, action: redact}\n",
        True,
    ),
    "an integer min_score": (
        "rules:\n  - {name: r, data: pii, min_score: 1, action: log}\n",
        True,
    ),
    "optional keys given as null": (RULE % ", at: null, untrusted_fields: null, to: null", True),
    # documents both refuse
    "no rules": ("untrusted: deny\n", False),
    "an unknown key": (RULE % ", tennant: x", False),
    "a tenant that is a number": (RULE % ", tenant: 42", False),
    "an empty glob": (RULE % ", flow: ' '", False),
    "a blank name": ("rules:\n  - {name: ' ', tool: t, action: allow}\n", False),
    "an unknown action": ("rules:\n  - {name: r, tool: t, action: maybe}\n", False),
    "min_score over 1": ("rules:\n  - {name: r, data: pii, min_score: 2, action: log}\n", False),
    "min_score true": ("rules:\n  - {name: r, data: pii, min_score: true, action: log}\n", False),
    "max_reasks 0": (RULE % ", max_reasks: 0", False),
    "an empty list of checkpoints": (
        "rules:\n  - {name: r, data: pii, at: [], action: log}\n",
        False,
    ),
    "an unknown checkpoint": (
        "rules:\n  - {name: r, data: pii, at: [nowhere], action: log}\n",
        False,
    ),
    "an empty untrusted field": (RULE % ", untrusted_fields: ['']", False),
    "masked_check a string": ("rules: []\nmasked_check: sometimes\n", False),
    "rules a mapping": ("rules: {name: r}\n", False),
}
#: what only the reader refuses: a rule's parts that do not go together, names given twice
POLICY_SEMANTICS = [
    "rules:\n  - {name: r, tool: t, model: m, action: allow}\n",
    "rules:\n  - {name: r, tool: t, action: redact}\n",
    "rules:\n  - {name: r, data: pii, action: escalate, at: model_output}\n",
    "rules:\n  - {name: r, tool: t, action: allow}\n  - {name: r, tool: u, action: deny}\n",
]


@pytest.mark.parametrize(("text", "valid"), POLICIES.values(), ids=POLICIES.keys())
def test_the_policy_schema_and_reader_take_the_same_documents(text: str, valid: bool) -> None:
    assert schema_takes("policy.schema.json", text) is valid
    assert policy_takes(text) is valid


@pytest.mark.parametrize("text", POLICY_SEMANTICS)
def test_what_no_schema_says_the_policy_reader_still_refuses(text: str) -> None:
    assert schema_takes("policy.schema.json", text)
    assert not policy_takes(text)


STEP = "steps:\n  - {id: a, uses: 'tests.flow.flowsteps:make_text', with: {n: 2}%s}\n"
FLOWS = {
    "one step": (STEP % "", True),
    "every step option": (
        STEP % ", retry: {attempts: 3, backoff: 0}, timeout: 1.5, cache: false, review: false",
        True,
    ),
    "retry as a number": (STEP % ", retry: 2", True),
    "inputs with types and defaults": (
        "inputs:\n  n: int\n  m: {type: int, default: 3}\n"
        "steps:\n  - {id: a, uses: 'tests.flow.flowsteps:make_text', with: {n: '${inputs.n}'}}\n"
        "output: ${a}\n",
        True,
    ),
    "optional keys given as null": (STEP % ", when: null, timeout: null", True),
    # documents both refuse
    "no steps": ("name: empty\nsteps: []\n", False),
    "a misspelt step key": (STEP % ", retires: 3", False),
    "a timeout of true": (STEP % ", timeout: true", False),
    "a negative timeout": (STEP % ", timeout: -1", False),
    "retry true": (STEP % ", retry: true", False),
    "retry with no attempts": (STEP % ", retry: {attempts: 0}", False),
    "cache a string": (STEP % ", cache: 'yes'", False),
    "a step id that is a number": (
        "steps:\n  - {id: 1, uses: 'tests.flow.flowsteps:make_text'}\n",
        False,
    ),
    "a flow name that is a number": ("name: 2024\n" + STEP % "", False),
    "an input of an unknown key": (
        "inputs:\n  n: {type: int, doc: x}\n" + STEP % "",
        False,
    ),
    "an output that is no reference": (STEP % "" + "output: a\n", False),
    "with a list": (
        "steps:\n  - {id: a, uses: 'tests.flow.flowsteps:make_text', with: [2]}\n",
        False,
    ),
}
#: what only the reader refuses: references, imports, what steps take
FLOW_SEMANTICS = [
    "steps:\n  - {id: a, uses: 'tests.flow.flowsteps:make_text', with: {n: '${ghost}'}}\n",
    "steps:\n  - {id: a, uses: 'tests.flow.no_such_module:f'}\n",
    "steps:\n  - {id: a, uses: 'tests.flow.flowsteps:make_text', with: {n: 'x'}}\n",
    "steps:\n  - {id: a}\n",
]


@pytest.mark.parametrize(("text", "valid"), FLOWS.values(), ids=FLOWS.keys())
def test_the_flow_schema_and_reader_take_the_same_documents(
    tmp_path: Path, text: str, valid: bool
) -> None:
    assert schema_takes("flow.schema.json", text) is valid
    assert flow_takes(tmp_path, text) is valid


@pytest.mark.parametrize("text", FLOW_SEMANTICS)
def test_what_no_schema_says_the_flow_reader_still_refuses(tmp_path: Path, text: str) -> None:
    assert schema_takes("flow.schema.json", text)
    assert not flow_takes(tmp_path, text)


def test_a_policy_mistake_found_by_the_model_names_file_line_and_key() -> None:
    text = textwrap.dedent(
        """\
        rules:
          - name: mail
            tool: send_email
            action: allow
          - name: chat
            model: gpt-*
            action: deny
            untrusted_fields: 7
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, file="policy.yaml")
    assert (caught.value.file, caught.value.line) == ("policy.yaml", 8)
    assert caught.value.message == ("rule 2: 'untrusted_fields' must be a string or a list, got 7")
    with pytest.raises(ConfigError) as caught:
        parse_policy(text.replace("    untrusted_fields: 7\n", "    user_id: x\n"), file="p.yaml")
    assert (caught.value.file, caught.value.line) == ("p.yaml", 8)
    assert caught.value.message.startswith("unknown key 'user_id' in rule 2 (expected: action,")


def test_a_flow_mistake_found_by_the_model_names_file_line_step_and_key(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        "name: f\nsteps:\n  - id: a\n    uses: tests.flow.flowsteps:make_text\n"
        "    retry:\n      attempts: 2\n      backof: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(FlowError) as caught:
        load_flow(str(path))
    assert (caught.value.file, caught.value.line, caught.value.step) == (str(path), 7, "a")
    assert caught.value.message.startswith("unknown key 'backof' in retry (expected: attempts,")
