"""The embedded SQLite memory: the vector-store and conversation contracts, plus what only a
SQLite file has to get right."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from erpoz.memory import (
    Chunk,
    DocumentInfo,
    Memory,
    MemoryDB,
    MemoryStoreError,
    SQLiteVectorStore,
    open_memory,
)
from erpoz.memory import _sqlite as sqlite_store
from erpoz.memory._db import _SCHEMA
from erpoz.memory._search import query_terms
from memory.conversation_contract import ConversationContract
from memory.vector_contract import VectorStoreContract


class TestSQLiteVectorStore(VectorStoreContract):
    rows_module = sqlite_store

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return str(tmp_path / "memory.db")

    def chunk_texts(self, memory: Memory) -> list[tuple[str, str]]:
        assert isinstance(memory.db, MemoryDB)
        return list(
            memory.db.conn.execute(
                "SELECT d.source, c.text FROM mem_chunks c JOIN mem_documents d ON d.id = c.doc "
                "ORDER BY d.source, c.ord"
            )
        )

    def side_rows(self, memory: Memory) -> int:
        assert isinstance(memory.db, MemoryDB)
        return int(memory.db.conn.execute("SELECT count(*) FROM mem_fts").fetchone()[0])


class TestSQLiteConversations(ConversationContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'memory.db'}"


def test_the_keyword_plan_is_fts5_expressions(tmp_path: Path) -> None:
    store = SQLiteVectorStore(MemoryDB(tmp_path / "kw.db"))
    texts = [f"common words everywhere number{i}" for i in range(30)]
    texts += ["common rare zebra", "common zebra", "walrus common"]
    chunks = [Chunk(t, (), None, 0, len(t), 3) for t in texts]
    info = DocumentInfo("d.txt", "-", "text", 0, 0, 0.0, "-")
    store.replace_document(info, chunks, np.eye(len(chunks), 64, dtype=np.float32), embedder="e")
    assert store._keyword_plan(query_terms("common zebra")) == ['"common" OR "zebra"']  # small
    store.keyword_budget = 5
    assert store._keyword_plan(query_terms("common zebra")) == ['"zebra"']
    assert store._keyword_plan(query_terms("common words")) == ['"words" AND "common"', '"words"']
    store.close()


def test_a_file_that_is_not_a_memory_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(MemoryStoreError, match="not an erpoz memory database") as info:
        open_memory(junk)
    assert info.value.path == str(junk)
    with open_memory(f"sqlite:///{tmp_path / 'u.db'}") as memory:
        assert memory.path == str(tmp_path / "u.db")
        assert isinstance(memory.store, SQLiteVectorStore)


def test_a_memory_of_schema_1_gains_turn_keys_and_keeps_its_turns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in _SCHEMA:  # the tables as schema 1 made them
        db.execute(statement)
    db.execute("INSERT INTO mem_meta (key, value) VALUES ('schema', '1')")
    db.execute(
        "INSERT INTO mem_turns (session, seq, role, kind, text, tokens, ts) "
        "VALUES ('s', 1, 'user', 'turn', 'kept', 1, 0)"
    )
    db.commit()
    db.close()
    with open_memory(path) as memory:
        c = memory.conversation("s").sync
        assert [t.text for t in c.turns()] == ["kept"]
        assert c.append("assistant", "new", key="k").seq == 2
        assert c.append("assistant", "new", key="k").seq == 2
        assert memory.db.meta("schema") == "2"  # type: ignore[attr-defined]
