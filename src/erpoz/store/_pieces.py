"""Structural sharing of stored values: a large JSON payload is stored as content-addressed
pieces, so that the part of a value that did not change since an earlier event is stored once.

A payload is split along its JSON structure. A list's elements (or a dict's ``"key":value``
items) are cut into chunks of about :data:`CHUNK` characters; each closed chunk becomes a piece
that starts with a reference to the piece of the chunk before it, so the pieces of a container
form a chain, and a value that grew by appending shares every closed chunk with its earlier
versions. An item of :data:`BIG` characters or more is a piece of its own, referred to from its
chunk, so that it is shared wherever it appears. The container's last, open chunk stays inline.

A reference is the piece's key (its SHA-256, shortened) between two U+001F characters; compact
JSON never holds that character raw (JSON escapes every control character), so a stored payload
with one in it is a split one, and concatenating the pieces in place of their references gives
back exactly the text that was split. The event's hash commits to that whole text
(:func:`chain_hash` is unchanged), so ``erpoz audit verify`` detects a changed piece like a
changed event.

Pieces live in the ``blobs`` table (content-addressed by SHA-256 already) and are never deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..errors import StoreError

SEP = "\x1f"
"""Delimits a piece reference inside stored text."""

MIN_SPLIT = 2048
"""Payloads shorter than this are stored whole, as they are."""

SPLIT = 1024
"""A list or dict whose JSON text is at least this long is split into its items."""

CHUNK = 512
"""A chunk of items is closed (becomes a piece) once its text reaches this length."""

BIG = 4096
"""An item at least this long is a piece of its own (its chunk refers to it)."""

RUN_FROM = 64
"""A container of more items than this writes its small items in runs (see ``_list_items``)."""

KEY_CHARS = 32
"""A piece's key: the first 128 bits of its SHA-256, in hex. Shorter than a blob's (a piece is
about a kilobyte, and its key is stored three times: in the table, its index and the next
piece); collisions are out of reach, and the event hash over the whole value catches any
change anyway."""

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def split_payload(text: str, pieces: dict[str, str]) -> str:
    """The text to store for ``text``: itself, or (for a large JSON list or dict written the
    way :func:`json.dumps` writes compact JSON) its top fragment with references; the pieces it
    refers to are added to ``pieces`` (key → text)."""
    if len(text) < MIN_SPLIT or text[0] not in "[{":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    new: dict[str, str] = {}
    stored = _container(value, new)
    asm = Assembler("")
    asm.know(new)
    if asm.expand(stored) != text:  # written another way (e.g. pydantic's float format)
        return text
    pieces.update(new)
    return stored


def _container(value: dict[str, Any] | list[Any], pieces: dict[str, str]) -> str:
    if isinstance(value, list):
        return "[" + _chain(_list_items(value, pieces), pieces) + "]"
    return "{" + _chain(_dict_items(value, pieces), pieces) + "}"


def _list_items(value: list[Any], pieces: dict[str, str]) -> list[str]:
    """The texts of the list's items, or, for many small items, of runs of them written by one
    :func:`json.dumps` call each (fewer Python calls; each run is about a chunk long)."""
    run = _run_length(value[0], len(value))
    if run == 1:
        return [_item(v, pieces) for v in value]
    out: list[str] = []
    for i in range(0, len(value), run):
        part = value[i : i + run]
        text = _DUMPS(part)[1:-1]
        if len(text) >= SPLIT:  # some of them are large: one by one
            out.extend(_item(v, pieces) for v in part)
        else:
            out.append(text)
    return out


def _dict_items(value: dict[str, Any], pieces: dict[str, str]) -> list[str]:
    """:func:`_list_items` for a dict's ``"key":value`` items."""
    items = list(value.items())
    run = _run_length(items[0][1], len(items))
    if run == 1:
        return [_DUMPS(k) + ":" + _item(v, pieces) for k, v in items]
    out: list[str] = []
    for i in range(0, len(items), run):
        part = items[i : i + run]
        text = _DUMPS(dict(part))[1:-1]
        if len(text) >= SPLIT:
            out.extend(_DUMPS(k) + ":" + _item(v, pieces) for k, v in part)
        else:
            out.append(text)
    return out


def _run_length(first: Any, count: int) -> int:
    """How many items to write at once: about a chunk's worth, judged by the first item (so
    that the runs stay where they were when the container grows at its end)."""
    if count <= RUN_FROM:
        return 1
    return max(1, CHUNK // (len(_DUMPS(first)) + 1))


def _item(value: Any, pieces: dict[str, str]) -> str:
    if isinstance(value, (dict, list)) and len(value) > RUN_FROM:
        text = _container(value, pieces)  # surely large: no need to write it whole first
    else:
        text = _DUMPS(value)
        if len(text) >= SPLIT and isinstance(value, (dict, list)) and value:
            text = _container(value, pieces)
    if len(text) >= BIG:
        return _ref(_put(text, pieces))
    return text


def _chain(items: Sequence[str], pieces: dict[str, str]) -> str:
    """The items joined by commas, every closed chunk of them a piece chained to the one
    before it; returns what stays inline (a reference to the last closed chunk, then the open
    chunk)."""
    prev: str | None = None
    chunk: list[str] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += len(item) + 1
        if size >= CHUNK:
            prev = _put(_link(prev, chunk), pieces)
            chunk, size = [], 0
    return _link(prev, chunk)


def _link(prev: str | None, chunk: list[str]) -> str:
    if prev is None:
        return ",".join(chunk)
    return _ref(prev) + "," + ",".join(chunk) if chunk else _ref(prev)


def _ref(key: str) -> str:
    return SEP + key + SEP


def _put(text: str, pieces: dict[str, str]) -> str:
    key = hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]
    pieces[key] = text
    return key


def refs(text: str | None) -> list[str]:
    """The piece keys ``text`` refers to directly."""
    if text is None or SEP not in text:
        return []
    return text.split(SEP)[1::2]


class Assembler:
    """Puts split payloads back together from pieces fetched in rounds (one query per level of
    references not yet known); the events of a run, which share
    most of their pieces, fetch each piece once."""

    __slots__ = ("_raw", "_split", "strict", "where")

    def __init__(self, where: str, *, strict: bool = True) -> None:
        self.where = where
        self.strict = strict
        self._raw: dict[str, str] = {}
        self._split: dict[str, list[str]] = {}

    @property
    def pieces(self) -> dict[str, str]:
        """Every piece fetched so far (key → stored text)."""
        return self._raw

    def wanted(self, texts: Iterable[str | None]) -> set[str]:
        """The keys ``texts`` refer to that were not fetched yet."""
        return {k for t in texts for k in refs(t) if k not in self._raw}

    def know(self, pieces: dict[str, str]) -> None:
        """Take pieces already at hand (nothing to fetch after them)."""
        self._raw.update(pieces)

    def add(self, asked: set[str], got: dict[str, str]) -> set[str]:
        """Take the pieces fetched for ``asked``; the keys to fetch next."""
        missing = asked - got.keys()
        if missing and not self.strict:  # the audit's reads: the event's hash will not match
            got = {**got, **{k: f"<missing piece {k}>" for k in missing}}
        elif missing:
            raise StoreError(
                f"piece {min(missing)} of a stored value is missing from the blobs table: the "
                "store was damaged or tampered with; see `erpoz audit verify --all`",
                path=self.where,
            )
        self._raw.update(got)
        return self.wanted(got.values())

    def expand(self, text: str | None) -> str | None:
        """``text`` with every reference replaced by its piece's text, recursively (one pass
        over the pieces it refers to, one join)."""
        if text is None or SEP not in text:
            return text
        out: list[str] = []
        stack: list[tuple[list[str], int, str | None]] = [(text.split(SEP), 0, None)]
        path: set[str] = set()
        while stack:
            parts, i, key = stack.pop()
            while i < len(parts):
                if not i % 2:
                    out.append(parts[i])
                    i += 1
                    continue
                ref = parts[i]
                if ref in path:
                    out.append(self._cycle(ref))
                    i += 1
                    continue
                stack.append((parts, i + 1, key))
                path.add(ref)
                parts, i, key = self._parts(ref), 0, ref
            if key is not None:
                path.discard(key)
        return "".join(out)

    def _parts(self, key: str) -> list[str]:
        parts = self._split.get(key)
        if parts is None:
            parts = self._split[key] = self._raw[key].split(SEP)
        return parts

    def _cycle(self, key: str) -> str:
        if not self.strict:  # the audit's reads: the event's hash will not match
            return f"<piece {key} refers to itself>"
        raise StoreError(
            f"piece {key} of a stored value refers to itself: the store was tampered with; "
            "see `erpoz audit verify --all`",
            path=self.where,
        )


Fetch = Callable[[list[str]], dict[str, str]]


def expand_rows(
    rows: list[Any], fetch: Fetch, where: str, col: int = 7, *, strict: bool = True
) -> list[Any]:
    """``rows`` with the split payload in column ``col`` put back together (rows without one are
    returned as they are); ``fetch`` reads pieces by key. A missing or self-referring piece is a
    ``StoreError``, or, not ``strict`` (what the audit reads), a marker in the text, so that the
    event's hash does not match and the audit names the event."""
    asm, need = _start(rows, col, where, strict)
    if not need:
        return rows
    while need:
        need = asm.add(need, fetch(sorted(need)))
    return [_with(r, col, asm) for r in rows]


def _start(rows: list[Any], col: int, where: str, strict: bool) -> tuple[Assembler, set[str]]:
    """An assembler for ``rows`` and the piece keys their split payloads refer to (none when no
    row holds one: then nothing is assembled)."""
    asm = Assembler(where, strict=strict)
    texts = [t for r in rows if (t := r[col]) is not None and SEP in t]  # the split ones
    return asm, asm.wanted(texts) if texts else set()


async def aexpand_rows(
    rows: list[Any],
    fetch: Callable[[list[str]], Awaitable[dict[str, str]]],
    where: str,
    col: int = 7,
    *,
    strict: bool = True,
) -> list[Any]:
    """:func:`expand_rows` with an asynchronous ``fetch``."""
    asm, need = _start(rows, col, where, strict)
    if not need:
        return rows
    while need:
        need = asm.add(need, await fetch(sorted(need)))
    return [_with(r, col, asm) for r in rows]


def _with(row: Any, col: int, asm: Assembler) -> Any:
    text = row[col]
    if text is None or SEP not in text:
        return row
    return (*row[:col], asm.expand(text), *row[col + 1 :])
