"""Chunking that follows a document's structure.

A chunk never crosses a heading (each section is chunked on its own) or a page. Within a
section, whole paragraphs are packed up to ``target`` tokens; a paragraph that does not fit
is split at sentence ends (and a sentence longer than ``target`` at word boundaries). When a
section needs more than one chunk, each chunk after the first starts with the last sentences
of the one before, up to ``overlap`` tokens, so that a fact split by a boundary is found from
either side. Every chunk is a slice of its unit's text, so its span points at the source.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._types import Block, Chunk, Parsed, Unit

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TARGET", "chunk_document", "sentences"]

DEFAULT_TARGET = 200
DEFAULT_OVERLAP = 20

# A sentence ends at . ! ? (and closing quotes or brackets) before white space and what looks
# like the next sentence's start, or at a line break ("49.00", "e.g. this" stay whole).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*[ \t]+(?=[\"'(\[]?[A-Z0-9])|[ \t]*\n\s*")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int
    end: int
    tokens: int
    para: int  # which paragraph of the section it belongs to


def sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Spans of the sentences (and lines) of ``text[start:end]``, trimmed of white space."""
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if m.start() > pos:
            yield pos, m.start()
        pos = m.end()
    while end > pos and text[end - 1].isspace():
        end -= 1
    if end > pos:
        yield pos, end


def _words(text: str, start: int, end: int, tokens: int, target: int) -> Iterator[tuple[int, int]]:
    """A span too long for one chunk, cut at word boundaries into pieces of about ``target``
    tokens (words are assumed to be equally long in tokens)."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    per = max(1, int(len(words) * target / max(tokens, 1)))
    for i in range(0, len(words), per):
        group = words[i : i + per]
        yield group[0][0], group[-1][1]


class _Packer:
    """Packs the pieces of one section into chunks."""

    def __init__(
        self,
        unit: Unit,
        heading: tuple[str, ...],
        count: Callable[[str], int],
        target: int,
        overlap: int,
    ) -> None:
        self.unit, self.heading, self.count = unit, heading, count
        self.target, self.overlap = target, overlap
        self.current: list[_Piece] = []
        self.fresh = 0  # pieces of the current chunk that are not overlap from the one before
        self.out: list[Chunk] = []

    @property
    def size(self) -> int:
        return sum(p.tokens for p in self.current)

    def emit(self) -> None:
        if not self.fresh:
            return
        start, end = self.current[0].start, self.current[-1].end
        text = self.unit.text[start:end]
        self.out.append(Chunk(text, self.heading, self.unit.page, start, end, self.count(text)))
        tail: list[_Piece] = []
        total = 0
        for piece in reversed(self.current[1:]):  # never the whole chunk again
            if total + piece.tokens > self.overlap:
                break
            tail.insert(0, piece)
            total += piece.tokens
        self.current, self.fresh = tail, 0

    def add(self, piece: _Piece) -> None:
        if self.fresh and self.size + piece.tokens > self.target:
            self.emit()
        self.current.append(piece)
        self.fresh += 1

    def paragraph(self, block: Block, index: int) -> None:
        text = self.unit.text
        tokens = self.count(text[block.start : block.end])
        if tokens <= self.target and self.size + tokens <= self.target:
            self.current.append(_Piece(block.start, block.end, tokens, index))
            self.fresh += 1
            return
        if self.fresh and self.size >= self.target // 2:
            self.emit()  # break between paragraphs rather than inside one
        if tokens <= self.target and self.size + tokens <= self.target:
            self.current.append(_Piece(block.start, block.end, tokens, index))
            self.fresh += 1
            return
        for s, e in sentences(text, block.start, block.end):
            n = self.count(text[s:e])
            if n <= self.target:
                self.add(_Piece(s, e, n, index))
                continue
            for ws, we in _words(text, s, e, n, self.target):
                self.add(_Piece(ws, we, self.count(text[ws:we]), index))


def chunk_document(
    parsed: Parsed,
    count: Callable[[str], int],
    *,
    target: int = DEFAULT_TARGET,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """The chunks of a parsed document, in document order. ``count`` counts tokens."""
    if target < 8:
        raise ValueError(f"target must be at least 8 tokens, not {target}")
    if not 0 <= overlap < target:
        raise ValueError(f"overlap must be between 0 and target ({target}), not {overlap}")
    out: list[Chunk] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the headings above
    for unit in parsed.units:
        packer = _Packer(unit, tuple(t for _, t in stack), count, target, overlap)
        for index, block in enumerate(unit.blocks):
            if block.kind == "heading":
                packer.emit()
                out.extend(packer.out)
                while stack and stack[-1][0] >= block.level:
                    stack.pop()
                stack.append((block.level, block.title))
                packer = _Packer(unit, tuple(t for _, t in stack), count, target, overlap)
                continue
            packer.paragraph(block, index)
        packer.emit()
        out.extend(packer.out)
    return out
