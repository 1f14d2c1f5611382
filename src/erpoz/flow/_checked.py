"""A loaded YAML document checked by a pydantic model, its mistakes said at their line.

The models of erpoz's configuration files (flows, policies, ``erpoz.yaml``) are the one
description of their shape: they check what the readers load and publish the JSON Schemas
editors use (``erpoz schema``). :func:`explain` turns pydantic's first error into a sentence in
the file's terms (keys as written, ``rules[0].at[1]``) and the line it is on, found through the
line numbers :class:`LineMap` and :class:`LineSeq` keep.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from ._yaml import LineMap, LineSeq

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic.fields import FieldInfo

__all__ = ["DocMistake", "dotted", "explain", "locate"]

Loc = tuple[str | int, ...]

#: errors that say the value has the wrong type (a union tries each member: its other errors
#: say more)
_TYPE_ERRORS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "empty (null)",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


@dataclass(frozen=True, slots=True)
class DocMistake:
    """What is wrong (``message``), at which ``line`` (``None``: the file), and where in the
    document (pydantic's ``loc``, union members included)."""

    message: str
    line: int | None
    loc: Loc


def locate(
    doc: Any, path: Sequence[str | int], want: Literal["key", "value", "parent"]
) -> int | None:
    """The line of ``path`` in a loaded document. Components absent from it (pydantic's union
    tags, a missing key) are passed over; ``parent`` gives the key line of the last one
    present, ``key`` the key line of the last component, ``value`` its value line."""
    if doc is None:
        return None
    line: int | None = getattr(doc, "line", None)
    key_line = line
    node = doc
    for comp in path:
        if isinstance(node, LineMap) and isinstance(comp, str) and comp in node:
            key_line, line = node.key_lines[comp], node.lines[comp]
            node = node[comp]
        elif isinstance(node, LineSeq) and isinstance(comp, int) and 0 <= comp < len(node):
            key_line = line = node.lines[comp]
            node = node[comp]
    return line if want == "value" else key_line


def _present(doc: Any, loc: Sequence[str | int]) -> Loc:
    """The components of ``loc`` that are in the document (union tags left out)."""
    out: list[str | int] = []
    node = doc
    for comp in loc:
        in_map = isinstance(node, dict) and isinstance(comp, str) and comp in node
        in_list = isinstance(node, list) and isinstance(comp, int) and 0 <= comp < len(node)
        if in_map or in_list:
            node = node[comp]
            out.append(comp)
    return tuple(out)


def dotted(path: Sequence[str | int]) -> str:
    """``routers.default.models[1]``: a path as written in the file."""
    out = ""
    for comp in path:
        if isinstance(comp, int):
            out += f"[{comp}]"
        else:
            out += f".{comp}" if out else comp
    return out


def _unwrap(tp: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``X | None``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _member(tp: Any, comp: str | int) -> Any:
    """The member of a union that pydantic's tag ``comp`` names (a model's class name, or the
    model whose ``type`` field is that literal), else ``None``."""
    for a in get_args(tp):
        a = _unwrap(a)
        if isinstance(a, type) and issubclass(a, BaseModel):
            if a.__name__ == comp:
                return a
            kind = a.model_fields.get("type")
            if kind is not None and get_args(kind.annotation) == (comp,):
                return a
    return None


def _walk(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[Any, FieldInfo | None]:
    """The type at ``loc`` and the last model field on the way (``None``: lost the way)."""
    tp: Any = root
    field: FieldInfo | None = None
    for comp in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found = tp.model_fields.get(str(comp))
            if found is None:
                found = next((f for f in tp.model_fields.values() if f.alias == comp), None)
            if found is None:
                return None, None
            field, tp = found, found.annotation
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin is list:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            member = _member(tp, comp)
            if member is None:  # a tag of a plain member (``int``, ``constrained-str`` …)
                continue
            tp = member
        else:
            return tp, field
    return tp, field


def _keys(root: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    tp = _unwrap(_walk(root, loc)[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return None


def _number(field: FieldInfo | None) -> str | None:
    """What a numeric field takes, bounds included: ``a number between 0 and 1``."""
    if field is None:
        return None
    tp = _unwrap(field.annotation)
    noun = {int: "a whole number", float: "a number"}.get(tp)
    if noun is None:
        return None
    b: dict[str, Any] = {}
    for m in field.metadata:
        for k in ("gt", "ge", "lt", "le"):
            if getattr(m, k, None) is not None:
                b[k] = getattr(m, k)
    if "ge" in b and "le" in b:
        return f"{noun} between {b['ge']:g} and {b['le']:g}"
    if b.get("gt") == 0:
        return "a positive number" if tp is float else "a whole number > 0"
    for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if k in b:
            return f"{noun} {op} {b[k]:g}"
    return noun


def _pattern(field: FieldInfo | None) -> str | None:
    """The string ``pattern`` a field's type asks for (in an ``Annotated`` of it or of a union
    member), else ``None``."""
    if field is None:
        return None
    stack: list[Any] = [field.annotation]
    metas: list[Any] = list(field.metadata)
    while stack:
        tp = stack.pop()
        origin = get_origin(tp)
        if origin is Annotated:
            first, *extra = get_args(tp)
            stack.append(first)
            metas.extend(extra)
        elif origin in (Union, types.UnionType):
            stack.extend(get_args(tp))
    while metas:
        m = metas.pop()
        metas.extend(getattr(m, "metadata", None) or ())
        found = getattr(m, "pattern", None)
        if isinstance(found, str):
            return found
    return None


def _one_of(expected: str) -> str:
    """``'a', 'b' or 'c'`` (pydantic's words for a literal) as ``a, b, c``."""
    return ", ".join(v.strip().strip("'") for v in re.split(r", | or ", expected))


def _should(msg: str) -> str:
    """pydantic's ``Input should be …`` as ``must be …``."""
    if msg.startswith("Input should be "):
        return "must be " + msg[len("Input should be ") :]
    return msg[0].lower() + msg[1:]


def _scalar(value: bool | int | float) -> str:
    return "true/false" if isinstance(value, bool) else "number"


def explain(
    exc: ValidationError,
    doc: Any,
    root: type[BaseModel],
    *,
    place: Callable[[Loc], str] = dotted,
    patterns: Mapping[str, str] | None = None,
) -> DocMistake:
    """The mistake of ``exc`` (``root.model_validate(doc)`` failed) said in the file's terms.

    Of several errors it says the one deepest in the document that is not merely a wrong type
    (a union reports a wrong type for each member but the one that fits); wrong types of one
    value are said together (``a whole number or a mapping``). ``place`` names the mapping a
    key is in (default: its dotted path; ``""``: say nothing); ``patterns`` says in words what
    a string ``pattern`` of the model asks for."""
    errs = exc.errors()
    best = min(
        range(len(errs)),
        key=lambda i: (errs[i]["type"] in _TYPE_ERRORS, -len(_present(doc, errs[i]["loc"])), i),
    )
    e = errs[best]
    loc: Loc = tuple(e["loc"])
    present = _present(doc, loc)
    kind = e["type"]
    if kind == "extra_forbidden":
        keys = _keys(root, loc[:-1])
        expected = f" (expected: {', '.join(sorted(keys))})" if keys else ""
        where = place(present[:-1])
        return DocMistake(
            f"unknown key '{loc[-1]}'{f' in {where}' if where else ''}{expected}",
            locate(doc, loc, "key"),
            loc,
        )
    if kind == "missing":
        where = place(present)
        info = _walk(root, loc)[1]
        why = (
            f" ({info.description[0].lower()}{info.description[1:]})"
            if info and info.description
            else ""
        )
        return DocMistake(
            f"{where or 'the file'} has no '{loc[-1]}'{why}", locate(doc, loc, "parent"), loc
        )
    # the value's name: its key (with the positions in it, ``at[1]``) and the mapping it is in
    cut = max((i for i, c in enumerate(present) if isinstance(c, str)), default=0)
    name, where = dotted(present[cut:]) or "the file", place(present[:cut])
    prefix = f"{where}: " if where else ""
    line = locate(doc, loc, "value")
    got = e.get("input")
    shown = "" if isinstance(got, dict | list) else f", got {got!r}"
    ctx = e.get("ctx") or {}
    field = _walk(root, loc)[1]
    if kind in _TYPE_ERRORS:
        same = [x for x in errs if x["type"] in _TYPE_ERRORS and _present(doc, x["loc"]) == present]
        wanted = list(dict.fromkeys(_TYPE_ERRORS[x["type"]] for x in same))
        number = _number(field)
        if number is not None and len(wanted) == 1 and wanted[0] in ("a number", "a whole number"):
            wanted = [number]
        said = (patterns or {}).get(_pattern(field) or "")
        if wanted == ["a string"] and isinstance(got, bool | int | float):
            msg = f"'{name}' must be a string{shown} (YAML read a {_scalar(got)}: quote it)"
        elif wanted == ["a string"] and said:  # a list or a mapping: say what the string is
            msg = f"'{name}' {said}{shown}"
        else:
            msg = f"'{name}' must be {' or '.join(wanted)}{shown}"
    elif kind in _BOUNDS:
        number = _number(field)  # None: a bound on a value inside the field (a mapping's)
        said = f"must be {number}" if number else _should(e["msg"])
        msg = f"'{name}' {said}{shown}"
    elif kind == "literal_error":
        msg = f"{name} {got!r}: expected one of {_one_of(str(ctx.get('expected', '')))}"
    elif kind == "string_pattern_mismatch":
        said = (patterns or {}).get(str(ctx.get("pattern")))
        msg = f"'{name}' {said}{shown}" if said else f"'{name}': {e['msg'].lower()}{shown}"
    elif kind == "too_short":
        msg = f"'{name}' must have at least {ctx.get('min_length', 1)} item(s)"
    else:
        msg = f"'{name}': {e['msg'][0].lower() + e['msg'][1:]}{shown}"
    return DocMistake(prefix + msg, line, loc)
