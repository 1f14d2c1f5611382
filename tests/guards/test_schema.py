"""Schema guard: pydantic models and types, JSON Schemas, fenced JSON, where a parse error
is, the five-error cap, import paths and schemas that cannot be used."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from erpoz.guards import SchemaGuard
from erpoz.guards.schema import field_path, json_payload


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    id: int
    items: list[Item]


ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["name", "qty"],
            },
        },
    },
    "required": ["id", "items"],
}

GOOD = '{"id": 7, "items": [{"name": "bolt", "qty": 3}]}'
BAD = '{"id": "seven", "items": [{"name": 1, "qty": 2}]}'


@pytest.mark.parametrize("schema", [Order, ORDER_SCHEMA, f"{__name__}:Order"])
def test_fitting_json_passes(schema: Any) -> None:
    guard = SchemaGuard(schema)
    assert guard.name == "schema"
    assert guard.check(GOOD) == ()
    assert guard.check(f"Here it is:\n```json\n{GOOD}\n```\nAnything else?") == ()
    assert guard.check(f"```\n{GOOD}\n```") == ()


def test_a_pydantic_model_reports_each_field_path() -> None:
    found = SchemaGuard(Order).check(BAD)
    assert [f.kind for f in found] == ["schema", "schema"]
    assert [f.detail.split(":")[0] for f in found] == ["id", "items[0].name"]
    assert "valid integer" in found[0].detail
    for f in found:
        assert (f.start, f.end, f.text, f.score) == (0, len(BAD), BAD, 1.0)


def test_a_json_schema_reports_each_field_path() -> None:
    bad = '{"id": "seven", "email": "not-an-email", "items": [{"name": "x"}]}'
    found = SchemaGuard(ORDER_SCHEMA).check(bad)
    assert sorted(f.detail for f in found) == [
        "email: 'not-an-email' is not a 'email'",
        "id: 'seven' is not of type 'integer'",
        "items[0]: 'qty' is a required property",
    ]
    (root,) = SchemaGuard(ORDER_SCHEMA).check("[]")
    assert root.detail == "(root): [] is not of type 'object'"


def test_any_type_pydantic_validates() -> None:
    guard = SchemaGuard(list[int])
    assert guard.check("[1, 2, 3]") == ()
    (finding,) = guard.check('[1, "two", 3]')
    assert finding.detail.startswith("[1]: Input should be a valid integer")
    assert guard.check('["4"]') == ()  # lax: pydantic's JSON mode converts
    assert SchemaGuard(list[int], strict=True).check('["4"]')[0].detail.startswith("[0]:")


def test_not_json_says_where() -> None:
    text = '{\n  "id": 7,\n  "items": [}\n'
    (finding,) = SchemaGuard(Order).check(text)
    assert (finding.kind, finding.start, finding.end, finding.score) == (
        "not_json",
        0,
        len(text),
        1.0,
    )
    assert finding.detail.endswith("(line 3, column 13)")
    fenced = 'Sure:\n```json\n{"id": 7,,}\n```'
    (finding,) = SchemaGuard(Order).check(fenced)
    assert finding.kind == "not_json" and finding.detail.endswith("(line 3, column 10)")
    assert SchemaGuard(Order).check("")[0].kind == "not_json"
    assert SchemaGuard(Order).check("The order is fine.")[0].kind == "not_json"


def test_at_most_five_schema_findings() -> None:
    found = SchemaGuard(list[int]).check(str(list("abcdefgh")).replace("'", '"'))
    assert len(found) == 5
    assert [f.detail.split(":")[0] for f in found] == ["[0]", "[1]", "[2]", "[3]", "[4]"]


def test_json_payload_and_field_paths() -> None:
    assert json_payload('  {"a": 1}') == ('  {"a": 1}', 0)
    text = 'x\n```json\n{"a": 1}\n```'
    body, at = json_payload(text)
    assert body == '{"a": 1}\n' and text[at:].startswith('{"a": 1}')
    assert field_path(()) == "(root)"
    assert field_path(("items", 0, "name")) == "items[0].name"
    assert field_path((2, "x")) == "[2].x"


@pytest.mark.parametrize(
    ("schema", "error", "message"),
    [
        ({"type": "nope"}, ValueError, "invalid JSON Schema"),
        ("no_such_module_xyz:Model", ValueError, "cannot import schema"),
        (f"{__name__}:Missing", ValueError, "no 'Missing' in it"),
        ("just-a-name", ValueError, "must look like 'package.module:attr'"),
        (42, ValueError, "not a type pydantic can validate"),
    ],
)
def test_schemas_that_cannot_be_used(schema: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SchemaGuard(schema)
