"""Type checks between connected ports, done once at compile time."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

_NONE = type(None)
_UNION_ORIGINS = (Union, types.UnionType)
_SEQ_ORIGINS = (list, tuple, set, frozenset)


def type_name(tp: object) -> str:
    """Render a type the way a user wrote it (``list[Doc]``, ``int | None``)."""
    if tp is Any:
        return "Any"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _members(tp: object) -> tuple[object, ...]:
    return get_args(tp) if get_origin(tp) in _UNION_ORIGINS else (tp,)


def is_compatible(src: object, dst: object) -> bool:
    """Can a value of type ``src`` be passed where ``dst`` is declared?

    Deliberately permissive where a check would need the value (Any, bare containers) and strict
    where types are spelled out: class mismatches and container item mismatches are errors.
    """
    if src is dst or src is Any or dst is Any or src is object or dst is object:
        return True
    if get_origin(src) in _UNION_ORIGINS:
        return all(is_compatible(m, dst) for m in get_args(src))
    if get_origin(dst) in _UNION_ORIGINS:
        return any(is_compatible(src, m) for m in get_args(dst))
    if get_origin(src) is Literal:
        return all(is_compatible(type(v), dst) for v in get_args(src)) or (
            get_origin(dst) is Literal and set(get_args(src)) <= set(get_args(dst))
        )
    if get_origin(dst) is Literal:
        # A plain str can hold a value the Literal rejects; only the run can tell.
        return all(is_compatible(src, type(v)) for v in get_args(dst))
    s_origin, d_origin = get_origin(src) or src, get_origin(dst) or dst
    if d_origin is float and s_origin is int:
        return True
    if isinstance(s_origin, type) and isinstance(d_origin, type):
        if s_origin is bool and d_origin is int:
            return False  # a flag wired into a count is almost always a wiring mistake
        if not issubclass(s_origin, d_origin):
            return False
    elif s_origin != d_origin:
        return False
    s_args, d_args = get_args(src), get_args(dst)
    if not s_args or not d_args:
        return True
    if d_origin is tuple or s_origin is tuple:
        if len(s_args) == 2 and s_args[1] is Ellipsis:
            s_args = (s_args[0],)
        if len(d_args) == 2 and d_args[1] is Ellipsis:
            return all(is_compatible(a, d_args[0]) for a in s_args)
        return len(s_args) == len(d_args) and all(map(is_compatible, s_args, d_args))
    return len(s_args) == len(d_args) and all(map(is_compatible, s_args, d_args))


def admits_none(tp: object) -> bool:
    return tp is Any or tp is None or tp is _NONE or _NONE in _members(tp)


def item_type(tp: object) -> object | None:
    """The item type of a list-like type, ``Any`` when unspecified, None when not a list."""
    if tp is Any:
        return Any
    origin = get_origin(tp) or tp
    if origin in _SEQ_ORIGINS:
        args = get_args(tp)
        if not args:
            return Any
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return Union[args] if len(set(args)) > 1 else args[0]  # noqa: UP007
        first: object = args[0]
        return first
    return None


def field_type(tp: object, name: str) -> object:
    """Type of field ``name`` of a dataclass, pydantic model, TypedDict or dict type.

    Raises ``KeyError`` listing the fields there are.
    """
    if tp is Any:
        return Any
    origin = get_origin(tp) or tp
    if origin is dict or origin is typing.Mapping:
        args = get_args(tp)
        return args[1] if args else Any
    if isinstance(origin, type):
        if issubclass(origin, BaseModel):
            fields = {k: f.annotation for k, f in origin.model_fields.items()}
        elif dataclasses.is_dataclass(origin) or typing.is_typeddict(origin):
            fields = typing.get_type_hints(origin)
        else:
            raise KeyError(f"{type_name(tp)} has no named fields")
        if name not in fields:
            raise KeyError(f"{type_name(tp)} has no field '{name}' (fields: {', '.join(fields)})")
        return fields[name] if fields[name] is not None else Any
    raise KeyError(f"{type_name(tp)} has no named fields")


def get_field(value: Any, name: str) -> Any:
    """Read a field from a model/dataclass (attribute) or a mapping (key)."""
    if isinstance(value, dict):
        return value[name]
    return getattr(value, name)
