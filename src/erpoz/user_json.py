"""JSON that users hand erpoz (``-i``, ``--input-json``, edited review outputs, API and gateway
bodies): read within bounds, every mistake a ``ValueError`` that says what is wrong, so the
command line answers with exit 2 and the server with 4xx — never a traceback."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

MAX_JSON_DEPTH = 100
"""How deeply arrays and objects may nest in a JSON value given to erpoz."""
MAX_JSON_FILE_BYTES = 64 * 1024 * 1024


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """``ValueError`` when ``value`` nests lists and dicts more than ``limit`` levels deep
    (counted without recursion, so a deep value cannot crash the check)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            raise ValueError(f"nested more than {limit} levels deep")
        stack.extend((c, depth + 1) for c in children)


def loads_json(text: str | bytes) -> Any:
    """Parse JSON nested at most :data:`MAX_JSON_DEPTH` levels; ``ValueError`` otherwise
    (malformed, not UTF-8, too deep)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
    check_depth(value)
    return value


def read_json_file(path: Path) -> Any:
    """A JSON file's value; ``ValueError`` saying why it cannot be read (missing, a folder,
    not UTF-8, malformed, too big or too deep)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JSON_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_FILE_BYTES:
        raise ValueError(f"larger than {MAX_JSON_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None
    try:
        return loads_json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


@functools.cache
def _any_adapter() -> Any:
    """One pydantic adapter of any value (bytes as base64), built on first use."""
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(Any, config=ConfigDict(ser_json_bytes="base64"))


def jsonable(value: Any) -> Any:
    """``value`` as JSON data the way the store records it (pydantic models, dataclasses, …;
    bytes as base64), or its ``repr`` when it has no JSON form: what the CLI's ``--json``, the
    server and :meth:`erpoz.RunResult.to_json` show of an output."""
    try:
        return _any_adapter().dump_python(value, mode="json")
    except Exception:
        return repr(value)
