"""Ingestion: files → text with structure → chunks → vectors → the store, one file at a time.

Each file is one transaction: its old chunks are replaced by the new ones all at once, or, when
anything goes wrong with it, the store keeps what it had and the report says why. A file whose
content (sha256) and settings are unchanged is skipped. Problems of one file never stop the
others.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ErpozError
from ._chunking import DEFAULT_OVERLAP, DEFAULT_TARGET, chunk_document
from ._errors import IngestError
from ._loaders import (
    EXTENSIONS,
    decode_text,
    kind_of,
    parse_html,
    parse_markdown,
    parse_pdf,
    parse_text,
    sniff_image,
)
from ._models import default_embedder, default_ocr, embed_texts, model_name, ocr_text, token_counter
from ._protocol import VectorStore
from ._types import DocumentInfo, Kind, Parsed

__all__ = ["DEFAULT_MAX_BYTES", "FileResult", "IngestReport", "Ingestor", "ingest"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
CHUNKER_VERSION = 1
"""Part of every document's fingerprint: a change of the chunker re-ingests everything."""

Status = Literal["ingested", "unchanged", "failed", "ignored", "forgotten"]


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file."""

    path: str
    source: str
    status: Status
    chunks: int = 0
    reason: str | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "status": self.status,
            "chunks": self.chunks,
            "reason": self.reason,
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class IngestReport:
    """Every file's outcome, and the totals."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: Status) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def ingested(self) -> list[FileResult]:
        return self._with("ingested")

    @property
    def unchanged(self) -> list[FileResult]:
        return self._with("unchanged")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")

    @property
    def ignored(self) -> list[FileResult]:
        return self._with("ignored")

    @property
    def forgotten(self) -> list[FileResult]:
        return self._with("forgotten")

    @property
    def ok(self) -> bool:
        """No file failed."""
        return not self.failed

    @property
    def chunks(self) -> int:
        """Chunks written by this ingestion."""
        return sum(f.chunks for f in self.ingested)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.ingested)} ingested, {len(self.unchanged)} unchanged, "
            f"{len(self.failed)} failed, {len(self.forgotten)} forgotten, "
            f"{len(self.ignored)} ignored · {self.chunks} chunks in {self.seconds:.2f} s "
            f"({self.chunks_per_s:.1f} chunks/s)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ingested": len(self.ingested),
            "unchanged": len(self.unchanged),
            "failed": len(self.failed),
            "forgotten": len(self.forgotten),
            "ignored": len(self.ignored),
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "chunks_per_s": round(self.chunks_per_s, 1),
            "files": [f.to_json() for f in self.files],
        }


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def _walk(directory: Path) -> Iterable[Path]:
    """Files under ``directory``, sorted, hidden files and folders left out."""
    for top, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(top) / name


class Ingestor:
    """Ingests files into a :class:`VectorStore`.

    ``embedder`` is any EmbedModel (default: the local MiniLM, loaded on first use); ``ocr``
    an OCRModel or a callable from image bytes to text (default: the local RapidOCR, loaded
    on the first image). ``count_tokens`` sizes chunks (default: the embedder's tokenizer,
    so that a chunk fits what the embedder reads). Sources are named by their path relative
    to ``root`` when they lie under it, else by their absolute path. ``metadata`` is stored
    with every document (filter on it when searching).
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Any = None,
        *,
        ocr: Any = None,
        count_tokens: Callable[[str], int] | None = None,
        target_tokens: int = DEFAULT_TARGET,
        overlap_tokens: int = DEFAULT_OVERLAP,
        max_bytes: int = DEFAULT_MAX_BYTES,
        root: str | os.PathLike[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0 <= overlap_tokens < target_tokens or target_tokens < 8:
            raise ValueError(
                f"need 8 ≤ target_tokens and 0 ≤ overlap_tokens < target_tokens, got "
                f"{target_tokens} and {overlap_tokens}"
            )
        self.store = store
        self._embedder = embedder
        self._ocr = ocr
        self._count = count_tokens
        self.target_tokens = target_tokens
        self.overlap_tokens = overlap_tokens
        self.max_bytes = max_bytes
        self.root = Path(root).resolve() if root is not None else None
        self.metadata = dict(metadata or {})

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    @property
    def count_tokens(self) -> Callable[[str], int]:
        if self._count is None:
            self._count = token_counter(self.embedder)
        return self._count

    @property
    def fingerprint(self) -> str:
        return (
            f"{model_name(self.embedder)}|target={self.target_tokens}|"
            f"overlap={self.overlap_tokens}|chunker={CHUNKER_VERSION}"
        )

    def source_of(self, path: Path) -> str:
        """The name a file is stored under."""
        resolved = path.resolve()
        if self.root is not None and resolved.is_relative_to(self.root):
            return resolved.relative_to(self.root).as_posix()
        return resolved.as_posix()

    def path_of(self, source: str) -> Path:
        """The file a stored source name stands for."""
        path = Path(source)
        if not path.is_absolute() and self.root is not None:
            return self.root / path
        return path

    # --- planning ---------------------------------------------------------------------------
    def plan(self, paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, FileResult | None]]:
        """The files ``paths`` stand for (folders walked), each with an outcome already known
        (a missing path, a file type a folder holds but memory does not read) or ``None``."""
        out: list[tuple[Path, FileResult | None]] = []
        seen: set[Path] = set()
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                for file in _walk(path):
                    if file.resolve() in seen:
                        continue
                    seen.add(file.resolve())
                    known = None
                    if kind_of(file) is None:
                        known = FileResult(
                            str(file),
                            self.source_of(file),
                            "ignored",
                            reason=f"not a type memory reads ({file.suffix or 'no extension'})",
                        )
                    out.append((file, known))
            elif path.resolve() not in seen:
                seen.add(path.resolve())
                out.append((path, None))
        return out

    # --- one file ---------------------------------------------------------------------------
    def ingest_file(self, path: str | os.PathLike[str]) -> FileResult:
        """Ingest one file. Never raises for a problem of the file: the result says it."""
        file = Path(path)
        source = self.source_of(file)
        t0 = time.perf_counter()
        try:
            status, chunks, notes = self._ingest(file, source)
        except (ErpozError, ValueError, OSError) as exc:
            reason = exc.reason if isinstance(exc, IngestError) else str(exc)
            return FileResult(str(file), source, "failed", 0, reason, time.perf_counter() - t0)
        except Exception as exc:  # a bug or a library's surprise: this file fails, others go on
            reason = f"unexpected {type(exc).__name__}: {exc}"
            return FileResult(str(file), source, "failed", 0, reason, time.perf_counter() - t0)
        return FileResult(str(file), source, status, chunks, None, time.perf_counter() - t0, notes)

    def _ingest(self, file: Path, source: str) -> tuple[Status, int, tuple[str, ...]]:
        name = str(file)
        if not file.exists():
            raise IngestError(name, "no such file or folder")
        if not file.is_file():
            raise IngestError(name, "not a regular file")
        kind = kind_of(file)
        if kind is None:
            known = ", ".join(sorted(EXTENSIONS))
            raise IngestError(
                name, f"unsupported file type '{file.suffix or '(none)'}' (memory reads {known})"
            )
        size = file.stat().st_size
        if size == 0:
            raise IngestError(name, "an empty file (0 bytes)")
        if size > self.max_bytes:
            raise IngestError(
                name,
                f"too large: {_size(size)}, over the limit of {_size(self.max_bytes)} "
                "(raise max_bytes / --max-mb to take it)",
            )
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise IngestError(name, f"cannot read it: {exc.strerror or exc}") from None
        sha = hashlib.sha256(data).hexdigest()
        fingerprint = self.fingerprint
        stored = self.store.get_document(source)
        if stored is not None and stored.sha256 == sha and stored.fingerprint == fingerprint:
            return "unchanged", stored.chunks, ()
        parsed = self._parse(kind, data, name)
        chunks = chunk_document(
            parsed, self.count_tokens, target=self.target_tokens, overlap=self.overlap_tokens
        )
        if not chunks:
            raise IngestError(name, "no text to index (only headings, markup or white space)")
        vectors = embed_texts(self.embedder, [c.indexed_text() for c in chunks])
        metadata = dict(self.metadata)
        if parsed.title:
            metadata.setdefault("title", parsed.title)
        info = DocumentInfo(
            source, sha, kind, len(chunks), size, time.time(), fingerprint, metadata
        )
        self.store.replace_document(info, chunks, vectors, embedder=model_name(self.embedder))
        return "ingested", len(chunks), parsed.notes

    def _parse(self, kind: Kind, data: bytes, name: str) -> Parsed:
        if kind == "pdf":
            return parse_pdf(data, name)
        if kind == "image":
            if sniff_image(data) is None:
                raise IngestError(
                    name,
                    f"not an image (it starts with {data[:8]!r}); memory reads PNG, JPEG, GIF, "
                    "BMP, TIFF and WebP",
                )
            if self._ocr is None:
                self._ocr = default_ocr()
            text = ocr_text(self._ocr, data)
            if not text.strip():
                raise IngestError(name, "OCR found no text in the image")
            return parse_text(text, "image")
        text = decode_text(data, name)
        if kind == "markdown":
            return parse_markdown(text)
        if kind == "html":
            return parse_html(text)
        return parse_text(text)

    # --- many files -------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        prune: bool = False,
        on_file: Callable[[FileResult], None] | None = None,
        planned: Sequence[tuple[Path, FileResult | None]] | None = None,
    ) -> IngestReport:
        """Ingest files and folders (walked recursively, hidden entries left out). With
        ``prune``, documents stored from under the given folders (or given as files) whose
        file is gone are forgotten. ``on_file`` is called after each file."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        paths = list(paths)
        t0 = time.perf_counter()
        report = IngestReport()
        for file, known in planned if planned is not None else self.plan(paths):
            result = known or self.ingest_file(file)
            report.files.append(result)
            if on_file is not None:
                on_file(result)
        if prune:
            for result in self.prune(paths):
                report.files.append(result)
                if on_file is not None:
                    on_file(result)
        report.seconds = time.perf_counter() - t0
        return report

    def prune(self, paths: Iterable[str | os.PathLike[str]]) -> list[FileResult]:
        """Forget the stored documents under ``paths`` whose files no longer exist."""
        scopes = [Path(p).resolve() for p in paths]
        out = []
        for doc in self.store.documents():
            file = self.path_of(doc.source).resolve()
            inside = any(file == s or file.is_relative_to(s) for s in scopes)
            if inside and not file.exists() and self.store.delete_document(doc.source):
                out.append(
                    FileResult(str(file), doc.source, "forgotten", reason="the file is gone")
                )
        return out


def ingest(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    store: VectorStore,
    embedder: Any = None,
    **options: Any,
) -> IngestReport:
    """Ingest files and folders into ``store``: ``Ingestor(store, embedder, **options)``
    then :meth:`Ingestor.ingest` (``prune`` and ``on_file`` go to the latter)."""
    run = {k: options.pop(k) for k in ("prune", "on_file") if k in options}
    return Ingestor(store, embedder, **options).ingest(paths, **run)
