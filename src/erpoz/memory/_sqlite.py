"""The embedded vector store: chunks in SQLite, vectors as float32 blobs searched exactly with
numpy (:class:`~erpoz.memory._exact.ExactSearch`), words with FTS5 (BM25).

The version that tells a search its matrix is stale is ``chunks_version`` in ``mem_meta``,
moved by every write in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import MemoryStoreError
from ._exact import DOC_COLS, Doc, ExactSearch, HitRow, Matrix, document_info
from ._models import numpy
from ._search import fts_all, fts_any
from ._types import Chunk, DocumentInfo

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._db import MemoryDB

__all__ = ["SQLiteVectorStore"]


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


class SQLiteVectorStore(ExactSearch):
    """A :class:`~erpoz.memory.VectorStore` in a :class:`MemoryDB` (its own SQLite file,
    ``.erpoz/memory.db`` by default)."""

    def __init__(self, db: MemoryDB) -> None:
        super().__init__()
        self.db = db
        self.where = db.path

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
                f"SELECT {DOC_COLS} FROM mem_documents WHERE source=?", (source,)
            ).fetchone()
        return None if row is None else document_info(row)

    def documents(self) -> list[DocumentInfo]:
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {DOC_COLS} FROM mem_documents ORDER BY source"
            ).fetchall()
        return [document_info(r) for r in rows]

    def embedding(self) -> tuple[str, int] | None:
        name, dim = self.db.meta("embedder"), self.db.meta("dim")
        return None if name is None or dim is None else (name, int(dim))

    # --- the database's part of a search ----------------------------------------------------
    def version(self) -> str:
        return self.db.meta("chunks_version") or "0"

    def count(self) -> int:
        with self.db.lock:
            return int(self.db.conn.execute("SELECT count(*) FROM mem_chunks").fetchone()[0])

    def _load(self) -> Matrix:
        np = numpy()
        with self.db.lock:
            conn = self.db.conn
            docs_rows = conn.execute("SELECT id, source, kind, metadata FROM mem_documents")
            index: dict[int, int] = {}
            docs: list[Doc] = []
            for doc_id, source, kind, meta in docs_rows:
                index[doc_id] = len(docs)
                docs.append(Doc(source, kind, json.loads(meta)))
            rows = conn.execute(
                "SELECT id, doc, page, heading, vector FROM mem_chunks ORDER BY id"
            ).fetchall()
            version = self.version()  # as read under the lock
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
        return Matrix(version, ids, vectors, doc, page, headings, docs)

    def _any(self, terms: Sequence[str]) -> str:
        return fts_any(terms)

    def _all(self, terms: Sequence[str]) -> str:
        return fts_all(terms)

    def _doc_freq(self, terms: Sequence[str]) -> dict[str, int]:
        sql = "SELECT count(*) FROM mem_fts WHERE mem_fts MATCH ?"
        try:
            with self.db.lock:
                return {t: int(self.db.conn.execute(sql, (f'"{t}"',)).fetchone()[0]) for t in terms}
        except sqlite3.Error as exc:
            raise self.db.translate(exc, "keyword search failed") from exc

    def _match(self, expr: str, limit: int | None) -> list[tuple[int, float]]:
        """By BM25, negated (FTS5's rank is lower for better matches)."""
        sql = "SELECT rowid, rank FROM mem_fts WHERE mem_fts MATCH ? ORDER BY rank"
        try:
            with self.db.lock:
                if limit is None:
                    rows = self.db.conn.execute(sql, (expr,)).fetchall()
                else:
                    rows = self.db.conn.execute(sql + " LIMIT ?", (expr, limit)).fetchall()
        except sqlite3.Error as exc:
            raise self.db.translate(exc, "keyword search failed") from exc
        return [(int(r[0]), -float(r[1])) for r in rows]

    def _rows(self, ids: Sequence[int]) -> dict[int, HitRow]:
        marks = ",".join("?" * len(ids))
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT c.id, c.ord, c.heading, c.text, c.page, c.start, c.stop, d.source, "
                f"d.kind, d.metadata FROM mem_chunks c JOIN mem_documents d ON d.id = c.doc "
                f"WHERE c.id IN ({marks})",
                list(ids),
            ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def close(self) -> None:
        self._stop_pool()
        self.db.close()
