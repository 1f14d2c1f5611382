"""Step outputs to JSON and back, with a fast path for plain values."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError

_PLAIN_TYPES = frozenset((str, int, float, bool, type(None), Any))


class EncodeError(ValueError):
    pass


#: bytes travel as base64 text in JSON (pydantic's default, UTF-8, fails on most binary data)
_BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


@lru_cache(maxsize=1024)
def adapter(tp: Any) -> TypeAdapter[Any]:
    """The pydantic adapter of a declared type; ``bytes`` in it are base64 in JSON (a pydantic
    model or dataclass with a config of its own keeps its settings)."""
    try:
        return TypeAdapter(tp, config=_BYTES_AS_BASE64)
    except PydanticUserError:  # a type with its own config (BaseModel, configured dataclass)
        return TypeAdapter(tp)


_ENCODER = json.JSONEncoder(ensure_ascii=False)
_LITERALS = {True: "true", False: "false", None: "null"}


def encode(value: Any, tp: Any) -> str:
    """JSON text of a step output of declared type ``tp``."""
    cls = type(value)
    if cls is int:
        return str(value)
    if cls is str:
        return _ENCODER.encode(value)
    if cls is bool or value is None:
        return _LITERALS[value]
    if cls is float:
        return _ENCODER.encode(value)
    try:
        return adapter(tp).dump_json(value, warnings="error").decode()
    except Exception as exc:
        raise EncodeError(
            f"cannot serialise a {type(value).__name__} as JSON for declared type "
            f"{getattr(tp, '__name__', tp)}: {exc}"
        ) from None


#: For an output whose type is exactly its declared type, one of these: the check and the
#: encoding at once, as ``check_type`` + ``encode`` would do them (the engine's fast path).
EXACT_ENCODERS: dict[Any, Any] = {
    int: int.__repr__,
    str: _ENCODER.encode,
    float: _ENCODER.encode,
    bool: _LITERALS.__getitem__,
}


def decode(text: str, tp: Any) -> Any:
    """A recorded output back as a value of its declared type."""
    if tp in _PLAIN_TYPES:
        return json.loads(text)
    return adapter(tp).validate_json(text)


def validate(value: Any, tp: Any) -> Any:
    """Check a value (e.g. a reviewer's edit) against a declared type; raise ValueError."""
    try:
        return adapter(tp).validate_python(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def check_type(value: Any, tp: Any) -> bool:
    """Cheap check of a step's return value for plain declared types; others pass here and are
    checked when encoded."""
    if tp in (str, bool) or tp is type(None):
        return type(value) is tp or (tp is type(None) and value is None)
    if tp is int:
        return type(value) is int
    if tp is float:
        return type(value) in (float, int)
    return True
