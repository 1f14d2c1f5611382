"""Structured output that is not what it should be: text that is not JSON, or JSON that does
not fit a schema.

The schema is a pydantic model class or any type pydantic can validate (``list[int]``, a
``TypedDict``, a dataclass), checked with a ``TypeAdapter`` in JSON mode; or a JSON Schema
as a dict, checked with ``jsonschema`` (``pip install 'erpoz[local]'``; formats such as
``email`` or ``date-time`` are checked too); or ``"module:attr"``, the import path of one
of those. The JSON may be wrapped in a fenced ```` ```json ```` block, as chat models often
write it; the first such block is the one checked.

Findings cover the whole text and score 1.0: one ``not_json`` (detail: the parser's message,
with line and column in the text) or up to five ``schema`` ones (detail:
``"<field path>: <message>"``, the path as in ``items[0].name``, ``(root)`` for the top).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._findings import Finding
from ._registry import import_object

__all__ = ["SchemaGuard"]

NOT_JSON = "not_json"
SCHEMA = "schema"
MAX_ERRORS = 5
INSTALL_HINT = "pip install 'erpoz[local]'"

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.S)

#: (field path, message) pairs of what does not fit, for a parsed JSON text.
Validate = Callable[[str, Any], list[tuple[str, str]]]


def json_payload(text: str) -> tuple[str, int]:
    """The JSON part of ``text`` and where it starts: the whole text, or the inside of its
    first ```` ```json ```` (or bare ```` ``` ````) fence when the text does not itself start
    like JSON."""
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "[", '"') and "```" in text:
        m = _FENCE.search(text)
        if m is not None:
            return m.group(1), m.start(1)
    return text, 0


def field_path(loc: Iterable[Any]) -> str:
    """``("items", 0, "name")`` → ``items[0].name``; an empty path → ``(root)``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _pydantic(schema: Any, strict: bool) -> Validate:
    from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

    try:
        adapter: TypeAdapter[Any] = TypeAdapter(schema)
    except (PydanticSchemaGenerationError, TypeError) as exc:
        raise ValueError(f"schema {schema!r} is not a type pydantic can validate: {exc}") from exc

    def validate(payload: str, _data: Any) -> list[tuple[str, str]]:
        try:
            adapter.validate_json(payload, strict=strict)
        except ValidationError as exc:
            return [(field_path(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        return []

    return validate


def _json_schema(schema: Mapping[str, Any]) -> Validate:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(
            f"a JSON Schema (dict) needs the jsonschema package: {INSTALL_HINT}, or give a "
            "pydantic model instead"
        ) from None
    cls: Any = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(
            f"invalid JSON Schema at {field_path(exc.absolute_path)}: {exc.message}"
        ) from None
    validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)

    def validate(_payload: str, data: Any) -> list[tuple[str, str]]:
        return [(field_path(e.absolute_path), e.message) for e in validator.iter_errors(data)]

    return validate


class SchemaGuard:
    """Check that a text is JSON fitting ``schema``; implements :class:`~erpoz.guards.Guard`.

    ``schema``: a pydantic model class or other type, a JSON Schema dict, or the
    ``"module:attr"`` import path of one. ``strict`` makes pydantic refuse conversions such
    as ``"1"`` for an ``int`` (JSON Schemas are always strict). A schema that cannot be used
    is a ``ValueError`` (``ImportError`` when a dict is given without ``jsonschema``).
    """

    __slots__ = ("_validate", "name", "schema")

    def __init__(self, schema: Any, *, strict: bool = False, name: str = "schema") -> None:
        if isinstance(schema, str):
            schema = import_object(schema, what="schema")
        self.schema = schema
        self.name = name
        if isinstance(schema, Mapping):
            self._validate = _json_schema(schema)
        else:
            self._validate = _pydantic(schema, strict)

    def check(self, text: str) -> tuple[Finding, ...]:
        """``not_json`` when the text does not parse; a ``schema`` finding per error (up to
        five) when it does not fit; nothing when it does."""
        payload, offset = json_payload(text)
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            pos = offset + exc.pos
            line = text.count("\n", 0, pos) + 1
            column = pos - (text.rfind("\n", 0, pos) + 1) + 1
            detail = f"not JSON: {exc.msg} (line {line}, column {column})"
            return (Finding(self.name, NOT_JSON, 0, len(text), text, 1.0, detail),)
        errors = self._validate(payload, data)
        return tuple(
            Finding(self.name, SCHEMA, 0, len(text), text, 1.0, f"{path}: {message}")
            for path, message in errors[:MAX_ERRORS]
        )
