"""The shared vector store: chunks in PostgreSQL, vectors as float32 ``bytea`` searched exactly
with numpy in each process (:class:`~erpoz.memory._exact.ExactSearch`), words with PostgreSQL's
full-text search (a generated ``tsvector`` with a GIN index, ranked by ``ts_rank``).

pgvector is not used: the vectors are read into memory once per change and searched exactly,
as the SQLite store does, so that both stores give the same results and the database needs no
extension. A search costs one round trip to check the version (``chunks_version`` in
``memory_meta``), the matrix-vector product, and one round trip for the rows of the best.

Writers of documents take turns: each write locks the ``chunks_version`` row first (as SQLite
has one writer), does its work in one transaction and moves the version last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import MemoryStoreError
from ._exact import DOC_COLS, Doc, ExactSearch, HitRow, Matrix, document_info
from ._models import numpy
from ._types import Chunk, DocumentInfo

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._postgres_db import Conn, PostgresMemoryDB

__all__ = ["PostgresVectorStore"]

FLOAT32 = "<f4"
"""How vectors are kept: float32, little-endian, whatever machine wrote them."""

_LOCK_WRITES = "SELECT value FROM memory_meta WHERE key = 'chunks_version' FOR UPDATE"
_BUMP = "UPDATE memory_meta SET value = (value::bigint + 1)::text WHERE key = 'chunks_version'"
_VERSION = "SELECT value FROM memory_meta WHERE key = 'chunks_version'"
_NEW_IDS = (
    "SELECT nextval(pg_get_serial_sequence('memory_chunks', 'id')) FROM generate_series(1, %s)"
)
_MATCH = (
    "SELECT id, ts_rank(words, q, 16) AS score FROM memory_chunks, "
    "to_tsquery('english', %s) AS q WHERE words @@ q ORDER BY score DESC, id LIMIT %s"
)
"""Ranked by ``ts_rank`` divided by 1 + log(the chunk's distinct words) (normalization 16): of
PostgreSQL's rankings, the one closest to SQLite's BM25 on the demo question set (keyword
hit@1 0.633, hit@5 0.933 against BM25's 0.633 and 0.900; ``ts_rank_cd`` gave 0.5 and 0.9)."""
_DOC_FREQ = (
    "SELECT e, (SELECT count(*) FROM (SELECT 1 FROM memory_chunks "
    "WHERE words @@ to_tsquery('english', e) LIMIT %s) AS m) FROM unnest(%s::text[]) AS e"
)


def _text(value: str) -> str:
    """``value`` as PostgreSQL can keep it: its text type has no NUL character, so each becomes
    U+FFFD (one character for one: spans stay right)."""
    return value.replace("\x00", "\ufffd")


def _chunk_rows(ids: Sequence[int], doc: int, chunks: Sequence[Chunk]) -> Iterator[tuple[Any, ...]]:
    """The ``memory_chunks`` rows of a document's chunks."""
    for ord_, (cid, chunk) in enumerate(zip(ids, chunks, strict=True)):
        yield (
            cid,
            doc,
            ord_,
            json.dumps(list(chunk.heading), ensure_ascii=False),
            _text(chunk.text),
            chunk.page,
            chunk.start,
            chunk.end,
            chunk.tokens,
        )


class PostgresVectorStore(ExactSearch):
    """A :class:`~erpoz.memory.VectorStore` in a :class:`PostgresMemoryDB`."""

    keyword_budget = 5_000
    """Half of SQLite's: matching and ranking cost PostgreSQL 2-3 µs a chunk, about twice what
    FTS5 takes, so this keeps a keyword search over 100,000 chunks near 10 ms. It finds 0.77 of
    the top 10 that ranking every chunk with a query word gives (0.85 at 10,000, for twice the
    time)."""

    def __init__(self, db: PostgresMemoryDB) -> None:
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
        vectors = np.ascontiguousarray(vectors, dtype=FLOAT32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        dim = int(vectors.shape[1]) if len(chunks) else 0
        values = (
            info.sha256,
            info.kind,
            info.bytes,
            len(chunks),
            info.ingested_at or time.time(),
            info.fingerprint,
            json.dumps(dict(info.metadata), ensure_ascii=False, default=str),
        )

        def write(conn: Conn) -> None:
            conn.execute(_LOCK_WRITES)
            row = conn.execute(
                "SELECT id FROM memory_documents WHERE source = %s", (info.source,)
            ).fetchone()
            doc_id = None if row is None else int(row[0])
            if chunks:
                self._check_embedding(conn, info.source, doc_id, embedder, dim)
            if doc_id is None:
                row = conn.execute(
                    "INSERT INTO memory_documents (sha256, kind, bytes, chunks, ingested_at, "
                    "fingerprint, metadata, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING id",
                    (*values, info.source),
                ).fetchone()
                assert row is not None
                doc_id = int(row[0])
            else:
                conn.execute("DELETE FROM memory_chunks WHERE doc = %s", (doc_id,))
                conn.execute(
                    "UPDATE memory_documents SET sha256 = %s, kind = %s, bytes = %s, "
                    "chunks = %s, ingested_at = %s, fingerprint = %s, metadata = %s "
                    "WHERE id = %s",
                    (*values, doc_id),
                )
            if chunks:
                ids = [int(r[0]) for r in conn.execute(_NEW_IDS, (len(chunks),))]
                with conn.cursor() as cur:
                    with cur.copy(
                        "COPY memory_chunks (id, doc, ord, heading, text, page, start, stop, "
                        "tokens) FROM STDIN"
                    ) as copy:
                        for chunk_row in _chunk_rows(ids, doc_id, chunks):
                            copy.write_row(chunk_row)
                    with cur.copy("COPY memory_vectors (chunk, vector) FROM STDIN") as copy:
                        for cid, vector in zip(ids, vectors, strict=True):
                            copy.write_row((cid, vector.tobytes()))
            conn.execute(_BUMP)

        self.db.run(f"cannot store {info.source}", write, "write")

    def _check_embedding(
        self, conn: Conn, source: str, doc_id: int | None, embedder: str, dim: int
    ) -> None:
        rows: dict[str, str] = dict(
            conn.execute("SELECT key, value FROM memory_meta WHERE key IN ('embedder', 'dim')")
        )
        if rows.get("embedder") == embedder and rows.get("dim") == str(dim):
            return
        others = conn.execute(
            "SELECT 1 FROM memory_chunks WHERE doc IS DISTINCT FROM %s::bigint LIMIT 1",
            (doc_id,),
        ).fetchone()
        if rows and others:
            raise MemoryStoreError(
                f"cannot store {source}: this memory holds {rows.get('dim')}-d vectors from "
                f"'{rows.get('embedder')}', and the embedder given is '{embedder}' ({dim}-d); "
                "use the same embedder, or another memory database",
                path=self.db.path,
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO memory_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                [("embedder", embedder), ("dim", str(dim))],
            )

    def delete_document(self, source: str) -> bool:
        def write(conn: Conn) -> bool:
            conn.execute(_LOCK_WRITES)
            deleted = conn.execute(
                "DELETE FROM memory_documents WHERE source = %s RETURNING id", (source,)
            ).fetchone()
            if deleted is None:
                return False
            if conn.execute("SELECT 1 FROM memory_chunks LIMIT 1").fetchone() is None:
                conn.execute("DELETE FROM memory_meta WHERE key IN ('embedder', 'dim')")
            conn.execute(_BUMP)
            return True

        return self.db.run(f"cannot forget {source}", write, "write")

    # --- reading ----------------------------------------------------------------------------
    def get_document(self, source: str) -> DocumentInfo | None:
        row = self.db.run(
            f"cannot read the document {source}",
            lambda conn: conn.execute(
                f"SELECT {DOC_COLS} FROM memory_documents WHERE source = %s", (source,)
            ).fetchone(),
        )
        return None if row is None else document_info(row)

    def documents(self) -> list[DocumentInfo]:
        rows = self.db.run(
            "cannot list the documents",
            lambda conn: conn.execute(
                f"SELECT {DOC_COLS} FROM memory_documents ORDER BY source"
            ).fetchall(),
        )
        return [document_info(r) for r in rows]

    def embedding(self) -> tuple[str, int] | None:
        rows: dict[str, str] = dict(
            self.db.run(
                "cannot read the memory's settings",
                lambda conn: conn.execute(
                    "SELECT key, value FROM memory_meta WHERE key IN ('embedder', 'dim')"
                ).fetchall(),
            )
        )
        name, dim = rows.get("embedder"), rows.get("dim")
        return None if name is None or dim is None else (name, int(dim))

    # --- the database's part of a search ----------------------------------------------------
    def version(self) -> str:
        row = self.db.run(
            "cannot read the memory's version", lambda conn: conn.execute(_VERSION).fetchone()
        )
        return "0" if row is None else str(row[0])

    def count(self) -> int:
        row = self.db.run(
            "cannot count the chunks",
            lambda conn: conn.execute("SELECT count(*) FROM memory_chunks").fetchone(),
        )
        return 0 if row is None else int(row[0])

    def _load(self) -> Matrix:
        return self.db.run("cannot read the vectors", self._read_matrix, "snapshot")

    def _read_matrix(self, conn: Conn) -> Matrix:
        """Every chunk and vector, in one snapshot: the vectors stream from a server-side
        cursor into one preallocated matrix (no second copy of them in Python objects)."""
        np = numpy()
        version_row = conn.execute(_VERSION).fetchone()
        version = "0" if version_row is None else str(version_row[0])
        dim_row = conn.execute("SELECT value FROM memory_meta WHERE key = 'dim'").fetchone()
        dim = 0 if dim_row is None else int(dim_row[0])
        index: dict[int, int] = {}
        docs: list[Doc] = []
        for doc_id, source, kind, meta in conn.execute(
            "SELECT id, source, kind, metadata FROM memory_documents"
        ):
            index[doc_id] = len(docs)
            docs.append(Doc(source, kind, json.loads(meta)))
        rows = conn.execute("SELECT id, doc, page, heading FROM memory_chunks").fetchall()
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        doc = np.fromiter((index[r[1]] for r in rows), dtype=np.int32, count=n)[order]
        page = np.fromiter((-1 if r[2] is None else r[2] for r in rows), np.int32, n)[order]
        headings = [" > ".join(json.loads(rows[i][3])) for i in order.tolist()]

        vectors = np.empty((n, dim), dtype=np.float32)
        vids = np.empty(n, dtype=np.int64)
        filled = 0
        with conn.cursor(name="erpoz_memory_matrix", binary=True) as cur:
            cur.execute("SELECT chunk, vector FROM memory_vectors")
            while batch := cur.fetchmany(4096):
                end = filled + len(batch)
                if end > n:
                    break
                vids[filled:end] = [r[0] for r in batch]
                block = np.frombuffer(b"".join(r[1] for r in batch), dtype=FLOAT32)
                vectors[filled:end] = block.reshape(len(batch), dim)
                filled = end
        vorder = np.argsort(vids[:filled], kind="stable")
        if filled != n or not np.array_equal(vids[vorder], ids):
            raise MemoryStoreError(
                f"the memory holds {n} chunks but {filled} vectors, or vectors of other "
                "chunks; ingest its documents again (or forget them)",
                path=self.db.path,
            )
        if np.any(vorder != np.arange(n)):  # rows come back in the order they lie on disk
            vectors = vectors[vorder]
        return Matrix(version, ids, vectors, doc, page, headings, docs)

    def _any(self, terms: Sequence[str]) -> str:
        return " | ".join(f"'{t}'" for t in terms)

    def _all(self, terms: Sequence[str]) -> str:
        return " & ".join(f"'{t}'" for t in terms)

    def _doc_freq(self, terms: Sequence[str]) -> dict[str, int]:
        """Counted up to just past the keyword budget: beyond it, how many does not matter."""
        exprs = {self._any([t]): t for t in terms}
        rows = self.db.run(
            "keyword search failed",
            lambda conn: conn.execute(_DOC_FREQ, (self.keyword_budget + 1, list(exprs))).fetchall(),
        )
        return {exprs[e]: int(n) for e, n in rows}

    def _match(self, expr: str, limit: int | None) -> list[tuple[int, float]]:
        """By ``ts_rank`` (how often the query's words occur, for the chunk's length)."""
        rows = self.db.run(
            "keyword search failed",
            lambda conn: conn.execute(_MATCH, (expr, limit)).fetchall(),
        )
        return [(int(r[0]), float(r[1])) for r in rows]

    def _rows(self, ids: Sequence[int]) -> dict[int, HitRow]:
        rows = self.db.run(
            "cannot read the chunks found",
            lambda conn: conn.execute(
                "SELECT c.id, c.ord, c.heading, c.text, c.page, c.start, c.stop, d.source, "
                "d.kind, d.metadata FROM memory_chunks c JOIN memory_documents d "
                "ON d.id = c.doc WHERE c.id = ANY(%s)",
                (list(ids),),
            ).fetchall(),
        )
        return {r[0]: tuple(r[1:]) for r in rows}

    def close(self) -> None:
        self._stop_pool()
        self.db.close()
