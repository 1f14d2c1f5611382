"""The search both built-in stores share: the vectors held in memory as one matrix and searched
exactly with numpy; words ranked by the database; the two fused by reciprocal rank; filters and
MMR worked out on the matrix.

A store subclasses :class:`ExactSearch` and supplies the database's part: the version of its
chunks, reading the matrix, counting and ranking the chunks that match words, and fetching rows.
The matrix is read once and read again only after the chunks changed, in this process or
another (the version moves with every write). A search is then one matrix-vector product; the
rows of the ``k`` best are fetched from the database.
"""

from __future__ import annotations

import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import MemoryStoreError, QueryError
from ._models import numpy
from ._search import check_filters, check_search, matches, query_terms, rrf
from ._search import mmr as mmr_select
from ._types import DocumentInfo, Hit, SearchMode

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DOC_COLS",
    "KEYWORD_BUDGET",
    "Doc",
    "ExactSearch",
    "HitRow",
    "Matrix",
    "document_info",
]

KEYWORD_BUDGET = 10_000
"""About how many matching chunks a keyword search ranks (FTS5 ranks a match in 0.5-1.5 µs).
In a large store the query's commonest words are left out of the match while the
rarer ones already match this many chunks; if even the rarest matches more, all words must
match. A small store (≤ this many chunks) always ranks every chunk with any query word."""

DOC_COLS = "source, sha256, kind, chunks, bytes, ingested_at, fingerprint, metadata"
"""The columns :func:`document_info` reads, in its order (both stores name them alike)."""

_CITE_UNSAFE = re.compile(r"[\[\]\r\n]")
_MISSING = object()

HitRow = tuple[int, str, str, "int | None", int, int, str, str, str]
"""What a hit is made of: ``(ord, heading JSON, text, page, start, stop, source, kind,
metadata JSON)`` of a chunk and its document."""


def document_info(row: Sequence[Any]) -> DocumentInfo:
    """A document from its :data:`DOC_COLS`."""
    return DocumentInfo(
        source=row[0],
        sha256=row[1],
        kind=row[2],
        chunks=int(row[3]),
        bytes=int(row[4]),
        ingested_at=float(row[5]),
        fingerprint=row[6],
        metadata=json.loads(row[7]),
    )


@dataclass(frozen=True, slots=True)
class Doc:
    source: str
    kind: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Matrix:
    """Everything a vector search and a filter need, in memory: row ``i`` is chunk ``ids[i]``
    (ascending)."""

    version: str
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    doc: npt.NDArray[np.int32]
    page: npt.NDArray[np.int32]  # -1: no page
    headings: list[str]
    docs: list[Doc]

    def rows_of(self, ids: Sequence[int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The rows of chunk ``ids``, and which of them the matrix has (a chunk written after
        it was read has no row: its entry in the first array is then meaningless)."""
        np = numpy()
        wanted = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        rows = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return rows, self.ids[rows] == wanted


class ExactSearch(ABC):
    """:meth:`search` of the :class:`~erpoz.memory.VectorStore` protocol, over a matrix kept in
    memory and a full-text index in the database. ``where`` names the database in errors."""

    where: str
    keyword_budget: int = KEYWORD_BUDGET
    """:data:`KEYWORD_BUDGET` for this store: a store whose database ranks matches more slowly
    sets a smaller one (a test may lower it to act as a large store)."""

    def __init__(self) -> None:
        self._matrix: Matrix | None = None
        self._matrix_lock = threading.Lock()
        self._df: dict[str, int] = {}  # how many chunks have each word, at _df_version
        self._df_version = ""
        self._chunk_count = 0
        self._executor: ThreadPoolExecutor | None = None  # hybrid: keyword beside vector

    # --- the database's part ----------------------------------------------------------------
    @abstractmethod
    def version(self) -> str:
        """The version of the chunks as the database has it now (it moves with every write)."""

    @abstractmethod
    def _load(self) -> Matrix:
        """The matrix of every chunk, with the version it was read at."""

    @abstractmethod
    def count(self) -> int:
        """How many chunks the store holds."""

    @abstractmethod
    def _any(self, terms: Sequence[str]) -> str:
        """A full-text expression matching chunks with any of ``terms``."""

    @abstractmethod
    def _all(self, terms: Sequence[str]) -> str:
        """A full-text expression matching chunks with all of ``terms``."""

    @abstractmethod
    def _doc_freq(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks have each of ``terms`` (a count above :attr:`keyword_budget` may be
        given as any larger number)."""

    @abstractmethod
    def _match(self, expr: str, limit: int | None) -> list[tuple[int, float]]:
        """The chunks matching ``expr``, best first, with their keyword score (higher is
        better); at most ``limit`` of them."""

    @abstractmethod
    def _rows(self, ids: Sequence[int]) -> dict[int, HitRow]:
        """The :data:`HitRow` of each chunk of ``ids`` still stored."""

    # --- the matrix -------------------------------------------------------------------------
    def matrix(self) -> Matrix:
        """The in-memory matrix, read again when the chunks changed since it was read."""
        version = self.version()
        with self._matrix_lock:
            current = self._matrix
            if current is not None and current.version == version:
                return current
            self._matrix = current = self._load()
            return current

    # --- searching --------------------------------------------------------------------------
    def search(
        self,
        query: str,
        vector: npt.NDArray[np.float32] | None,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        check_search(query, k, mode, mmr)
        wanted = check_filters(filters)
        if mode != "keyword" and vector is None:
            raise QueryError(f"a {mode} search needs the query's vector")
        pool = max(4 * k, 40) if (mmr is not None or mode == "hybrid") else k
        needs_matrix = mode != "keyword" or bool(wanted) or mmr is not None
        m = self.matrix() if needs_matrix else None
        mask = self._mask(m, wanted) if m is not None and wanted else None

        vec_scores: dict[int, float] = {}
        kw_scores: dict[int, float] = {}
        if mode == "hybrid":  # the full-text query runs in the database while numpy multiplies
            assert m is not None and vector is not None
            keyword = self._pool().submit(self._keyword, query, pool, m, mask)
            vec_scores = self._vector(m, vector, pool, mask)
            kw_scores = keyword.result()
        elif mode == "vector":
            assert m is not None and vector is not None
            vec_scores = self._vector(m, vector, pool, mask)
        else:
            kw_scores = self._keyword(query, pool, m, mask)
        if mode == "vector":
            ranked = list(vec_scores.items())
        elif mode == "keyword":
            ranked = list(kw_scores.items())
        else:
            ranked = rrf([list(vec_scores), list(kw_scores)])
        if not ranked:
            return []
        if mmr is not None and len(ranked) > 1:
            assert m is not None
            np = numpy()
            at, known = m.rows_of([cid for cid, _ in ranked])
            ranked = [r for r, ok in zip(ranked, known.tolist(), strict=True) if ok]
            rel = np.asarray([s for _, s in ranked], dtype=np.float32)
            picked = mmr_select(rel, m.vectors[at[known]], k, float(mmr))
            ranked = [ranked[i] for i in picked]
        ranked = ranked[:k]
        return self._hits(ranked, mode, vec_scores, kw_scores)

    def _pool(self) -> ThreadPoolExecutor:
        with self._matrix_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, "erpoz-memory-keyword")
            return self._executor

    def _vector(
        self,
        m: Matrix,
        vector: npt.NDArray[np.float32],
        pool: int,
        mask: npt.NDArray[np.bool_] | None,
    ) -> dict[int, float]:
        np = numpy()
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if len(m.ids) == 0:
            return {}
        if q.shape[0] != m.vectors.shape[1]:
            raise MemoryStoreError(
                f"the query vector has {q.shape[0]} dimensions, the stored vectors "
                f"{m.vectors.shape[1]}; embed the query with the embedder the documents were "
                "embedded with",
                path=self.where,
            )
        scores = m.vectors @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        top = min(pool, len(scores))
        idx = np.argpartition(-scores, top - 1)[:top] if top < len(scores) else np.arange(top)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return {int(m.ids[i]): float(scores[i]) for i in idx if np.isfinite(scores[i])}

    def _keyword(
        self,
        query: str,
        pool: int,
        m: Matrix | None,
        mask: npt.NDArray[np.bool_] | None,
    ) -> dict[int, float]:
        terms = query_terms(query)
        if not terms:
            return {}
        limit: int | None = pool if mask is None else max(10 * pool, 200)
        found: dict[int, float] = {}
        for expr in self._keyword_plan(terms):  # the next plan only when one finds nothing
            found = self._rank(expr, pool, limit, m, mask)
            if found:
                break
        return found

    def _rank(
        self,
        expr: str,
        pool: int,
        limit: int | None,
        m: Matrix | None,
        mask: npt.NDArray[np.bool_] | None,
    ) -> dict[int, float]:
        """The best ``pool`` chunks matching ``expr`` that pass ``mask``."""
        while True:
            rows = self._match(expr, limit)
            if mask is None or m is None:
                return dict(rows)
            ids = [cid for cid, _ in rows]
            at, known = m.rows_of(ids)
            keep: Sequence[bool] = (known & mask[at]).tolist()
            found = {cid: score for (cid, score), ok in zip(rows, keep, strict=True) if ok}
            if len(found) >= pool or limit is None or len(rows) < limit:
                return dict(list(found.items())[:pool])
            limit = None  # the filter kept too few: rank every match

    def _keyword_plan(self, terms: Sequence[str]) -> list[str]:
        """The full-text expressions to try, in order (see :data:`KEYWORD_BUDGET`)."""
        version = self.version()
        if self._df_version != version:
            self._df_version, self._df = version, {}
            self._chunk_count = self.count()
        budget = self.keyword_budget
        if self._chunk_count <= budget:
            return [self._any(terms)]
        df = self._df
        missing = [t for t in terms if t not in df]
        if missing:
            df.update(self._doc_freq(missing))
        present = sorted((t for t in terms if df[t] > 0), key=lambda t: df[t])
        if not present:
            return []
        kept: list[str] = []
        total = 0
        for term in present:
            if kept and total + df[term] > budget:
                break
            kept.append(term)
            total += df[term]
        if total <= budget:
            return [self._any(kept)]
        return [self._all(present), self._any(present[:1])]

    def _mask(self, m: Matrix, filters: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
        np = numpy()
        doc_ok = np.ones(len(m.docs), dtype=bool)
        chunk_ok = np.ones(len(m.ids), dtype=bool)
        for key, want in filters.items():
            if key == "source":
                doc_ok &= np.fromiter(
                    (matches(d.source, want, glob=True) for d in m.docs), bool, len(m.docs)
                )
            elif key == "kind":
                doc_ok &= np.fromiter((matches(d.kind, want) for d in m.docs), bool, len(m.docs))
            elif key == "page":
                pages = list(want) if isinstance(want, list | tuple | set) else [want]
                chunk_ok &= np.isin(m.page, [p for p in pages if isinstance(p, int)])
            elif key == "heading":
                chunk_ok &= np.fromiter(
                    (matches(h, want, glob=True) for h in m.headings), bool, len(m.headings)
                )
            else:
                doc_ok &= np.fromiter(
                    (matches(d.metadata.get(key, _MISSING), want) for d in m.docs),
                    bool,
                    len(m.docs),
                )
        return doc_ok[m.doc] & chunk_ok  # type: ignore[no-any-return]

    def _hits(
        self,
        ranked: Sequence[tuple[int, float]],
        mode: SearchMode,
        vec: Mapping[int, float],
        kw: Mapping[int, float],
    ) -> list[Hit]:
        by_id = self._rows([cid for cid, _ in ranked])
        hits = []
        for cid, score in ranked:
            r = by_id.get(cid)
            if r is None:  # deleted between ranking and fetching
                continue
            ord_, heading, text, page, start, stop, source, kind, meta = r
            parts: dict[str, float] = {}
            if cid in vec:
                parts["vector"] = vec[cid]
            if cid in kw:
                parts["keyword"] = kw[cid]
            if mode == "hybrid":
                parts["rrf"] = score
            hits.append(
                Hit(
                    id=_CITE_UNSAFE.sub("_", f"{source}#{ord_}"),
                    text=text,
                    source=source,
                    heading=tuple(json.loads(heading)),
                    page=page,
                    start=start,
                    end=stop,
                    score=score,
                    mode=mode,
                    chunk=ord_,
                    scores=parts,
                    metadata={"kind": kind, **json.loads(meta)},
                )
            )
        return hits

    def _stop_pool(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
