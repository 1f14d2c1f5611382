"""The memory database: one SQLite file (WAL), shared by the document store and conversations.

Its tables are prefixed ``mem_`` and its schema version lives in ``mem_meta``, so they could
sit beside the run store's tables in one file. One connection, used from worker threads one at
a time (a lock); every write is one ``BEGIN IMMEDIATE`` transaction, so a failure leaves the
database as it was before it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ._conversation import SQLiteTurns
from ._errors import MemoryStoreError
from ._sqlite import SQLiteVectorStore

__all__ = ["SCHEMA_VERSION", "MemoryDB"]

SCHEMA_VERSION = 2

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mem_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS mem_documents (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        ingested_at REAL NOT NULL,
        fingerprint TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS mem_chunks (
        id INTEGER PRIMARY KEY,
        doc INTEGER NOT NULL REFERENCES mem_documents(id) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        page INTEGER,
        start INTEGER NOT NULL,
        stop INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        vector BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS mem_chunks_doc ON mem_chunks (doc, ord)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS mem_fts USING fts5(
        heading, text, content='mem_chunks', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER IF NOT EXISTS mem_chunks_ai AFTER INSERT ON mem_chunks BEGIN
        INSERT INTO mem_fts (rowid, heading, text) VALUES (new.id, new.heading, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mem_chunks_ad AFTER DELETE ON mem_chunks BEGIN
        INSERT INTO mem_fts (mem_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
    END""",
    """CREATE TABLE IF NOT EXISTS mem_turns (
        id INTEGER PRIMARY KEY,
        session TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        covers INTEGER,
        ts REAL NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        UNIQUE (session, seq)
    )""",
)

_UPGRADES: dict[int, tuple[str, ...]] = {
    # 2: a turn written from a step carries the step's idempotency key, once per session
    2: (
        "ALTER TABLE mem_turns ADD COLUMN key TEXT",
        "CREATE UNIQUE INDEX mem_turns_key ON mem_turns (session, key) WHERE key IS NOT NULL",
    ),
}


class MemoryDB:
    """A connection to the memory database, its lock and its transactions: the embedded
    :class:`~erpoz.memory.MemoryDatabase`.

    ``path`` is a file (created with its folder if missing) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            if self.path != ":memory:":
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise self.translate(exc, "cannot open the memory database") from exc
        except OSError as exc:
            raise MemoryStoreError(
                f"cannot open the memory database: {exc}", path=self.path
            ) from exc

    def translate(self, exc: sqlite3.Error, doing: str) -> MemoryStoreError:
        """A driver error as a MemoryStoreError that says what was being done, and where."""
        msg = str(exc)
        if "locked" in msg or "busy" in msg:
            return MemoryStoreError(
                f"{doing}: the database is locked by another process for more than 5 s; try again",
                path=self.path,
            )
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return MemoryStoreError(
                f"{doing}: the file is not an erpoz memory database or is corrupt ({msg}); "
                "point --memory at another file",
                path=self.path,
            )
        if "no such module: fts5" in msg:
            return MemoryStoreError(
                f"{doing}: this Python's SQLite is built without FTS5 (full-text search)",
                path=self.path,
            )
        return MemoryStoreError(f"{doing}: {msg}", path=self.path)

    def _migrate(self) -> None:
        conn = self.conn
        with self.transaction():
            row = None
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='mem_meta'"
            ).fetchone()
            if has_meta:
                row = conn.execute("SELECT value FROM mem_meta WHERE key='schema'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise MemoryStoreError(
                    f"the memory database has schema version {version}, newer than this erpoz "
                    f"knows ({SCHEMA_VERSION}); upgrade erpoz",
                    path=self.path,
                )
            if version < SCHEMA_VERSION:
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    version = 1
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _UPGRADES[number]:
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO mem_meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), rolled back on any error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM mem_meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def vector_store(self) -> SQLiteVectorStore:
        return SQLiteVectorStore(self)

    def turn_store(self) -> SQLiteTurns:
        return SQLiteTurns(self)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
