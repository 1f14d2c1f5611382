"""What flows through memory: parsed documents, their chunks, stored documents and search hits.

Positions: a chunk's ``start``/``end`` are character offsets into the text of its *unit*: the
whole file for text and Markdown, the extracted text for HTML and images (OCR), the extracted
text of its page for PDF (``page`` is 1-based). ``heading`` is the path of headings above it,
outermost first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Block", "Chunk", "DocumentInfo", "Hit", "Kind", "Parsed", "SearchMode", "Unit"]

Kind = Literal["text", "markdown", "html", "pdf", "image"]
SearchMode = Literal["vector", "keyword", "hybrid"]


@dataclass(frozen=True, slots=True)
class Block:
    """A heading or a paragraph of a unit, with its character span in the unit's text."""

    kind: Literal["heading", "para"]
    start: int
    end: int
    level: int = 0
    """For a heading: 1 (top) to 6."""
    title: str = ""
    """For a heading: its text without markup."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A stretch of text positions refer to: a whole file, or one PDF page."""

    text: str
    blocks: tuple[Block, ...]
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A file read into text: its units in order, and what kind of file it was."""

    kind: Kind
    units: tuple[Unit, ...]
    title: str = ""
    notes: tuple[str, ...] = ()
    """Things worth telling the user that did not stop the file (pages without text …)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document that is embedded and searched as one."""

    text: str
    heading: tuple[str, ...]
    page: int | None
    start: int
    end: int
    tokens: int

    def indexed_text(self) -> str:
        """What is embedded: the heading path, then the text (headings carry much meaning)."""
        if not self.heading:
            return self.text
        return " > ".join(self.heading) + "\n" + self.text


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A document as the store holds it."""

    source: str
    sha256: str
    kind: str
    chunks: int
    bytes: int
    ingested_at: float
    fingerprint: str
    """The embedder and chunking settings the chunks were made with."""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the chunk's text, where it comes from, and how well it matched.

    ``score`` is the ranking score of the search mode (cosine similarity for ``vector``; for
    ``keyword`` the store's own, higher is better: the negated BM25 in SQLite, ``ts_rank`` in
    PostgreSQL; the reciprocal-rank-fusion score for ``hybrid``); ``scores`` has the parts
    (``vector``, ``keyword``, ``rrf``) that were computed.
    ``id`` (``source#n``) cites it: it has no brackets or line breaks.
    """

    id: str
    text: str
    source: str
    heading: tuple[str, ...]
    page: int | None
    start: int
    end: int
    score: float
    mode: SearchMode
    chunk: int
    """The chunk's position in its document (0-based)."""
    scores: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Human-readable position: ``source › Heading › Sub, p. 3``."""
        parts = [self.source, *self.heading]
        where = " › ".join(parts)
        return f"{where}, p. {self.page}" if self.page is not None else where

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "heading": list(self.heading),
            "page": self.page,
            "span": [self.start, self.end],
            "chunk": self.chunk,
            "score": self.score,
            "mode": self.mode,
            "scores": dict(self.scores),
            "metadata": dict(self.metadata),
            "text": self.text,
        }
