"""The embedded vector store: chunks in SQLite, vectors as float32 blobs searched exactly with
numpy, words with FTS5 (BM25).

The vectors are read once into one in-memory matrix (with the chunk ids, documents and pages
that filters need) and read again only after the chunks changed, in this process or another
(a version number in ``mem_meta`` moves with every write). A search is then one matrix-vector
product; the rows of the ``k`` best are fetched from SQLite.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._db import MemoryDB
from ._errors import MemoryStoreError, QueryError
from ._models import numpy
from ._search import check_filters, check_search, fts_all, fts_any, matches, query_terms, rrf
from ._search import mmr as mmr_select
from ._types import Chunk, DocumentInfo, Hit, SearchMode

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["SQLiteVectorStore"]

KEYWORD_BUDGET = 10_000
"""About how many matching chunks a keyword search ranks with BM25 (ranking costs 0.5-1.5 µs
a match). In a large store the query's commonest words are left out of the match while the
rarer ones already match this many chunks; if even the rarest matches more, all words must
match. A small store (≤ this many chunks) always ranks every chunk with any query word."""

_DOC_COLS = "source, sha256, kind, chunks, bytes, ingested_at, fingerprint, metadata"
_CITE_UNSAFE = re.compile(r"[\[\]\r\n]")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Doc:
    source: str
    kind: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Matrix:
    """Everything a vector search and a filter need, in memory: row ``i`` is chunk ``ids[i]``."""

    version: str
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    doc: npt.NDArray[np.int32]
    page: npt.NDArray[np.int32]  # -1: no page
    headings: list[str]
    docs: list[_Doc]

    def rows_of(self, ids: Sequence[int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The rows of chunk ``ids``, and which of them the matrix has (a chunk written after
        it was read has no row: its entry in the first array is then meaningless)."""
        np = numpy()
        wanted = np.asarray(ids, dtype=np.int64)
        if not len(self.ids):
            return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
        rows = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return rows, self.ids[rows] == wanted


def _info(row: Sequence[Any]) -> DocumentInfo:
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


def _chunk_rows(
    doc: int, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32]
) -> Iterator[tuple[Any, ...]]:
    """The rows to insert for a document's chunks."""
    for ord_, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
        yield (
            doc,
            ord_,
            json.dumps(list(chunk.heading), ensure_ascii=False),
            chunk.text,
            chunk.page,
            chunk.start,
            chunk.end,
            chunk.tokens,
            vector.tobytes(),
        )


class SQLiteVectorStore:
    """A :class:`~erpoz.memory.VectorStore` in a :class:`MemoryDB` (its own SQLite file,
    ``.erpoz/memory.db`` by default)."""

    def __init__(self, db: MemoryDB) -> None:
        self.db = db
        self._matrix: _Matrix | None = None
        self._matrix_lock = threading.Lock()
        self._df: dict[str, int] = {}  # how many chunks have each word, at _df_version
        self._df_version = ""
        self._chunk_count = 0
        self._executor: ThreadPoolExecutor | None = None  # hybrid: keyword beside vector

    # --- writing ----------------------------------------------------------------------------
    def replace_document(
        self,
        info: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        *,
        embedder: str,
    ) -> None:
        np = numpy()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        dim = int(vectors.shape[1]) if len(chunks) else 0
        try:
            with self.db.transaction() as conn:
                row = conn.execute(
                    "SELECT id FROM mem_documents WHERE source=?", (info.source,)
                ).fetchone()
                doc_id = None if row is None else int(row[0])
                if chunks:
                    self._check_embedding(conn, info.source, doc_id, embedder, dim)
                values = (
                    info.sha256,
                    info.kind,
                    info.bytes,
                    len(chunks),
                    info.ingested_at or time.time(),
                    info.fingerprint,
                    json.dumps(dict(info.metadata), ensure_ascii=False, default=str),
                )
                if doc_id is None:
                    cur = conn.execute(
                        "INSERT INTO mem_documents (sha256, kind, bytes, chunks, ingested_at, "
                        "fingerprint, metadata, source) VALUES (?,?,?,?,?,?,?,?)",
                        (*values, info.source),
                    )
                    doc_id = int(cur.lastrowid or 0)
                else:
                    conn.execute("DELETE FROM mem_chunks WHERE doc=?", (doc_id,))
                    conn.execute(
                        "UPDATE mem_documents SET sha256=?, kind=?, bytes=?, chunks=?, "
                        "ingested_at=?, fingerprint=?, metadata=? WHERE id=?",
                        (*values, doc_id),
                    )
                conn.executemany(
                    "INSERT INTO mem_chunks (doc, ord, heading, text, page, start, stop, tokens, "
                    "vector) VALUES (?,?,?,?,?,?,?,?,?)",
                    _chunk_rows(doc_id, chunks, vectors),
                )
                self._bump(conn)
        except sqlite3.Error as exc:
            raise self.db.translate(exc, f"cannot store {info.source}") from exc

    def _check_embedding(
        self, conn: sqlite3.Connection, source: str, doc_id: int | None, embedder: str, dim: int
    ) -> None:
        rows = dict(
            conn.execute("SELECT key, value FROM mem_meta WHERE key IN ('embedder', 'dim')")
        )
        if rows.get("embedder") == embedder and rows.get("dim") == str(dim):
            return
        others = conn.execute(
            "SELECT 1 FROM mem_chunks WHERE doc IS NOT ? LIMIT 1", (doc_id,)
        ).fetchone()
        if rows and others:
            raise MemoryStoreError(
                f"cannot store {source}: this memory holds {rows.get('dim')}-d vectors from "
                f"'{rows.get('embedder')}', and the embedder given is '{embedder}' ({dim}-d); "
                "use the same embedder, or another memory database",
                path=self.db.path,
            )
        conn.executemany(
            "INSERT OR REPLACE INTO mem_meta (key, value) VALUES (?, ?)",
            [("embedder", embedder), ("dim", str(dim))],
        )

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO mem_meta (key, value) VALUES ('chunks_version', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def delete_document(self, source: str) -> bool:
        try:
            with self.db.transaction() as conn:
                row = conn.execute(
                    "SELECT id FROM mem_documents WHERE source=?", (source,)
                ).fetchone()
                if row is None:
                    return False
                conn.execute("DELETE FROM mem_chunks WHERE doc=?", (row[0],))
                conn.execute("DELETE FROM mem_documents WHERE id=?", (row[0],))
                if conn.execute("SELECT 1 FROM mem_chunks LIMIT 1").fetchone() is None:
                    conn.execute("DELETE FROM mem_meta WHERE key IN ('embedder', 'dim')")
                self._bump(conn)
                return True
        except sqlite3.Error as exc:
            raise self.db.translate(exc, f"cannot forget {source}") from exc

    # --- reading ----------------------------------------------------------------------------
    def get_document(self, source: str) -> DocumentInfo | None:
        with self.db.lock:
            row = self.db.conn.execute(
                f"SELECT {_DOC_COLS} FROM mem_documents WHERE source=?", (source,)
            ).fetchone()
        return None if row is None else _info(row)

    def documents(self) -> list[DocumentInfo]:
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {_DOC_COLS} FROM mem_documents ORDER BY source"
            ).fetchall()
        return [_info(r) for r in rows]

    def embedding(self) -> tuple[str, int] | None:
        name, dim = self.db.meta("embedder"), self.db.meta("dim")
        return None if name is None or dim is None else (name, int(dim))

    def count(self) -> int:
        """How many chunks the store holds."""
        with self.db.lock:
            return int(self.db.conn.execute("SELECT count(*) FROM mem_chunks").fetchone()[0])

    def matrix(self) -> _Matrix:
        """The in-memory matrix, read again when the chunks changed since it was read."""
        version = self.db.meta("chunks_version") or "0"
        with self._matrix_lock:
            current = self._matrix
            if current is not None and current.version == version:
                return current
            self._matrix = current = self._load(version)
            return current

    def _load(self, version: str) -> _Matrix:
        np = numpy()
        with self.db.lock:
            conn = self.db.conn
            docs_rows = conn.execute("SELECT id, source, kind, metadata FROM mem_documents")
            index: dict[int, int] = {}
            docs: list[_Doc] = []
            for doc_id, source, kind, meta in docs_rows:
                index[doc_id] = len(docs)
                docs.append(_Doc(source, kind, json.loads(meta)))
            rows = conn.execute(
                "SELECT id, doc, page, heading, vector FROM mem_chunks ORDER BY id"
            ).fetchall()
            version = self.db.meta("chunks_version") or "0"  # as read under the lock
        dim = int(self.db.meta("dim") or 0)
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        doc = np.fromiter((index[r[1]] for r in rows), dtype=np.int32, count=n)
        page = np.fromiter((-1 if r[2] is None else r[2] for r in rows), dtype=np.int32, count=n)
        headings = [" > ".join(json.loads(r[3])) for r in rows]
        if n:
            vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32)
            vectors = vectors.reshape(n, dim)
        else:
            vectors = np.empty((0, dim), dtype=np.float32)
        return _Matrix(version, ids, vectors, doc, page, headings, docs)

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
        if mode == "hybrid":  # the full-text query runs in SQLite while numpy multiplies
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
                self._executor = ThreadPoolExecutor(1, "erpoz-memory-fts")
            return self._executor

    def _vector(
        self,
        m: _Matrix,
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
                path=self.db.path,
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
        m: _Matrix | None,
        mask: npt.NDArray[np.bool_] | None,
    ) -> dict[int, float]:
        terms = query_terms(query)
        if not terms:
            return {}
        try:
            exprs = self._keyword_plan(terms)
            limit: int | None = pool if mask is None else max(10 * pool, 200)
            found: dict[int, float] = {}
            for expr in exprs:  # the next plan only when one finds nothing
                found = self._rank(expr, pool, limit, m, mask)
                if found:
                    break
            return found
        except sqlite3.Error as exc:
            raise self.db.translate(exc, "keyword search failed") from exc

    def _rank(
        self,
        expr: str,
        pool: int,
        limit: int | None,
        m: _Matrix | None,
        mask: npt.NDArray[np.bool_] | None,
    ) -> dict[int, float]:
        """The best ``pool`` chunks matching ``expr`` by BM25 (negated: higher is better)."""
        sql = "SELECT rowid, rank FROM mem_fts WHERE mem_fts MATCH ? ORDER BY rank"
        while True:
            with self.db.lock:
                if limit is None:
                    rows = self.db.conn.execute(sql, (expr,)).fetchall()
                else:
                    rows = self.db.conn.execute(sql + " LIMIT ?", (expr, limit)).fetchall()
            if mask is None or m is None:
                return {int(r[0]): -float(r[1]) for r in rows}
            ids = [int(r[0]) for r in rows]
            at, known = m.rows_of(ids)
            keep: Sequence[bool] = (known & mask[at]).tolist()
            found = {cid: -float(r[1]) for cid, r, ok in zip(ids, rows, keep, strict=True) if ok}
            if len(found) >= pool or limit is None or len(rows) < limit:
                return dict(list(found.items())[:pool])
            limit = None  # the filter kept too few: rank every match

    def _keyword_plan(self, terms: Sequence[str]) -> list[str]:
        """The FTS5 expressions to try, in order (see :data:`KEYWORD_BUDGET`)."""
        version = self.db.meta("chunks_version") or "0"
        if self._df_version != version:
            self._df_version, self._df = version, {}
            self._chunk_count = self.count()
        if self._chunk_count <= KEYWORD_BUDGET:
            return [fts_any(terms)]
        df = self._df
        with self.db.lock:
            for term in terms:
                if term not in df:
                    row = self.db.conn.execute(
                        "SELECT count(*) FROM mem_fts WHERE mem_fts MATCH ?", (f'"{term}"',)
                    ).fetchone()
                    df[term] = int(row[0])
        present = sorted((t for t in terms if df[t] > 0), key=lambda t: df[t])
        if not present:
            return []
        kept: list[str] = []
        total = 0
        for term in present:
            if kept and total + df[term] > KEYWORD_BUDGET:
                break
            kept.append(term)
            total += df[term]
        if total <= KEYWORD_BUDGET:
            return [fts_any(kept)]
        return [fts_all(present), fts_any(present[:1])]

    def _mask(self, m: _Matrix, filters: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
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
        ids = [cid for cid, _ in ranked]
        marks = ",".join("?" * len(ids))
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT c.id, c.ord, c.heading, c.text, c.page, c.start, c.stop, d.source, "
                f"d.kind, d.metadata FROM mem_chunks c JOIN mem_documents d ON d.id = c.doc "
                f"WHERE c.id IN ({marks})",
                ids,
            ).fetchall()
        by_id = {r[0]: r for r in rows}
        hits = []
        for cid, score in ranked:
            r = by_id.get(cid)
            if r is None:  # deleted between ranking and fetching
                continue
            parts: dict[str, float] = {}
            if cid in vec:
                parts["vector"] = vec[cid]
            if cid in kw:
                parts["keyword"] = kw[cid]
            if mode == "hybrid":
                parts["rrf"] = score
            source = r[7]
            metadata = {"kind": r[8], **json.loads(r[9])}
            hits.append(
                Hit(
                    id=_CITE_UNSAFE.sub("_", f"{source}#{r[1]}"),
                    text=r[3],
                    source=source,
                    heading=tuple(json.loads(r[2])),
                    page=r[4],
                    start=r[5],
                    end=r[6],
                    score=score,
                    mode=mode,
                    chunk=r[1],
                    scores=parts,
                    metadata=metadata,
                )
            )
        return hits

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.db.close()
