"""The memory on PostgreSQL: the vector-store and conversation contracts, plus what only a
shared database has to get right (URLs, migrations, connections, the run store beside it).

Runs against ``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
each test in a throw-away schema. When the server cannot be reached the tests skip, naming the
URL — or fail, when ``ERPOZ_TEST_POSTGRES=required`` (what a CI run that wants PostgreSQL sets).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from erpoz.memory import (
    Chunk,
    DocumentInfo,
    Memory,
    MemoryStoreError,
    demo_corpus,
    open_memory,
    project_memory,
)
from memory.conversation_contract import ConversationContract
from memory.helpers import HashEmbed, write
from memory.vector_contract import VectorStoreContract, corpus_at
from pgtest import REQUIRED, Schema, need_postgres, throwaway_schema

if REQUIRED:
    import psycopg  # without it, a run that requires PostgreSQL fails here
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")

from erpoz.memory import _postgres as pg_store
from erpoz.memory._postgres_db import PostgresMemoryDB, migrations


@pytest.fixture(autouse=True)
def _need_postgres() -> None:
    need_postgres()


@pytest.fixture
def schema() -> Iterator[Schema]:
    with throwaway_schema() as s:
        yield s


def _sql(memory: Memory, query: str) -> list[tuple[Any, ...]]:
    assert isinstance(memory.db, PostgresMemoryDB)
    return memory.db.run("a test's query", lambda conn: conn.execute(query).fetchall())


class TestPostgresVectorStore(VectorStoreContract):
    rows_module = pg_store

    @pytest.fixture
    def url(self, schema: Schema) -> str:
        return schema.url

    def chunk_texts(self, memory: Memory) -> list[tuple[str, str]]:
        return _sql(
            memory,
            "SELECT d.source, c.text FROM memory_chunks c JOIN memory_documents d "
            "ON d.id = c.doc ORDER BY d.source, c.ord",
        )

    def side_rows(self, memory: Memory) -> int:
        return int(_sql(memory, "SELECT count(*) FROM memory_vectors")[0][0])


class TestPostgresConversations(ConversationContract):
    @pytest.fixture
    def url(self, schema: Schema) -> str:
        return schema.url


def latest_migration() -> int:
    return migrations()[-1][0]


# --- opening, URLs, errors ----------------------------------------------------------------------
def test_open_memory_selects_postgres_from_the_url_and_the_environment(
    schema: Schema, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for url in (schema.url, schema.url.replace("postgresql://", "postgres://", 1)):
        with open_memory(url, embedder=HashEmbed()) as memory:
            assert isinstance(memory.db, PostgresMemoryDB)
            assert memory.path == url
    monkeypatch.setenv("ERPOZ_MEMORY", schema.url)
    monkeypatch.chdir(tmp_path)
    with open_memory() as memory:
        assert isinstance(memory.db, PostgresMemoryDB)
    shared = project_memory()  # what ctx.memory falls back to: one per process and URL
    assert project_memory() is shared and shared.path == schema.url
    shared.close()
    assert not (tmp_path / ".erpoz").exists()  # no SQLite file made on the side


def test_the_url_shown_hides_the_password(schema: Schema) -> None:
    with_password = schema.url.replace("postgres@", "postgres:s3cret@", 1)
    with open_memory(with_password) as memory:
        assert "s3cret" not in memory.path and "postgres:***@" in memory.path


def test_an_unreachable_server_is_a_clear_memory_error() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/test"  # nothing listens on port 1
    with pytest.raises(MemoryStoreError, match="cannot reach PostgreSQL") as info:
        open_memory(url)
    message = str(info.value)
    assert "s3cret" not in message and "postgres:***@127.0.0.1:1/test" in message
    assert "is the server running and the URL right?" in message
    assert info.value.path == "postgresql://postgres:***@127.0.0.1:1/test"


def test_a_schema_that_does_not_exist_is_named_as_such(schema: Schema) -> None:
    missing = schema.url.replace(schema.name, f"{schema.name}_missing")
    with pytest.raises(MemoryStoreError, match=r"no schema of the URL's search_path exists"):
        open_memory(missing)


def test_missing_psycopg_is_a_clear_memory_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "erpoz.memory._postgres_db", None)
    with pytest.raises(MemoryStoreError, match=r"pip install 'erpoz\[postgres\]'"):
        open_memory("postgresql://postgres:s3cret@127.0.0.1/test")


def test_the_cli_ingests_into_and_searches_a_postgres_memory(
    schema: Schema, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from erpoz.cli import memory as cli_memory
    from erpoz.cli.memory import memory_cli

    monkeypatch.setattr(cli_memory, "make_embedder", HashEmbed)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    write(tmp_path / "docs" / "refunds.md", "# Refunds\n\nRefunds arrive within five days.\n")
    ingested = runner.invoke(memory_cli, ["ingest", "docs", "--memory", schema.url, "--json"])
    assert ingested.exit_code == 0, ingested.output
    data = json.loads(ingested.stdout)
    assert (data["ingested"], data["memory"]) == (1, schema.url)
    found = runner.invoke(
        memory_cli, ["search", "when do refunds arrive", "--memory", schema.url, "--json"]
    )
    assert found.exit_code == 0, found.output
    assert [h["id"] for h in json.loads(found.stdout)["hits"]] == ["docs/refunds.md#0"]


# --- migrations ---------------------------------------------------------------------------------
def test_migrations_bring_a_blank_schema_to_the_latest_version(schema: Schema) -> None:
    with open_memory(schema.url) as memory:
        assert isinstance(memory.db, PostgresMemoryDB)
        assert memory.db.schema_version == latest_migration()
    assert schema.tables() == {
        "memory_schema_version",
        "memory_meta",
        "memory_documents",
        "memory_chunks",
        "memory_vectors",
        "memory_turns",
    }
    indexes = {
        r[0]
        for r in schema.sql(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema.name,)
        )
    }
    assert "memory_chunks_words" in indexes  # the GIN index keyword search uses


def test_migrations_are_idempotent_and_keep_the_data(schema: Schema, tmp_path: Path) -> None:
    path = write(tmp_path / "a.md", "# A\n\nKept across openings.\n")
    with open_memory(schema.url, embedder=HashEmbed()) as memory:
        memory.ingest_sync([path], root=tmp_path)
        memory.conversation("s").sync.append("user", "still here")
    for _ in range(2):
        with open_memory(schema.url, embedder=HashEmbed()) as memory:
            assert [d.source for d in memory.documents_sync()] == ["a.md"]
            assert [t.text for t in memory.conversation("s").sync.turns()] == ["still here"]
    assert schema.sql("SELECT version FROM memory_schema_version ORDER BY version") == [
        (n,) for n, _ in migrations()
    ]


def test_concurrent_openers_of_a_blank_schema_migrate_once(schema: Schema) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        dbs = list(pool.map(lambda _: PostgresMemoryDB(schema.url), range(6)))
    for db in dbs:
        db.close()
    assert schema.sql("SELECT count(*) FROM memory_schema_version") == [(latest_migration(),)]


def test_a_newer_schema_version_asks_to_upgrade(schema: Schema) -> None:
    PostgresMemoryDB(schema.url).close()
    schema.sql("INSERT INTO memory_schema_version VALUES (999, 0)")
    with pytest.raises(MemoryStoreError, match=r"schema version 999, newer .* upgrade erpoz"):
        open_memory(schema.url)


def test_the_memory_and_the_run_store_share_one_schema(schema: Schema, tmp_path: Path) -> None:
    from erpoz.store import open_store

    store = open_store(schema.url)
    try:
        with open_memory(schema.url, embedder=HashEmbed()) as memory:
            path = write(tmp_path / "a.md", "# A\n\nBeside the runs.\n")
            assert memory.ingest_sync([path], root=tmp_path).ok
            assert memory.search_sync("runs", mode="keyword")[0].source == "a.md"
    finally:
        asyncio.run(store.close())
    tables = schema.tables()
    assert {"runs", "events", "blobs", "cache", "erpoz_schema_version"} <= tables
    assert {"memory_chunks", "memory_schema_version"} <= tables


# --- what PostgreSQL does differently -----------------------------------------------------------
def test_nul_characters_are_kept_as_replacement_characters(schema: Schema) -> None:
    """PostgreSQL's text holds no NUL: each becomes U+FFFD, one for one, so spans still fit."""
    text = "alpha\x00omega"
    with open_memory(schema.url, embedder=HashEmbed(), count_tokens=len) as memory:
        info = DocumentInfo("nul.txt", "-", "text", 0, 0, 0.0, "-")
        chunk = Chunk(text, ("Head\x00ing",), None, 0, len(text), 3)
        memory.store.replace_document(info, [chunk], np.eye(1, 8, dtype=np.float32), embedder="e")
        (hit,) = memory.store.search("omega", None, mode="keyword")
        assert hit.text == "alpha\ufffdomega" and len(hit.text) == hit.end - hit.start
        assert hit.heading == ("Head\x00ing",)  # JSON keeps it escaped
        turn = memory.conversation("s").sync.append("user", "a\x00b")
        assert turn.text == "a\ufffdb"
        assert [t.text for t in memory.conversation("s").sync.turns()] == ["a\ufffdb"]


def test_a_write_the_database_refuses_is_translated_and_changes_nothing(
    schema: Schema, tmp_path: Path
) -> None:
    with open_memory(schema.url, embedder=HashEmbed()) as memory:
        corpus = corpus_at(tmp_path / "corpus")
        memory.ingest_sync(corpus, root=corpus)
        before = memory.search_sync("kettle", k=10, mode="vector")
        info = DocumentInfo("kettle.txt", "-", "text", 0, 0, 0.0, "-")
        chunks = [Chunk("fine", (), None, 0, 4, 1), Chunk("too far", (), 2**40, 0, 7, 2)]
        vectors = np.eye(2, 256, dtype=np.float32)
        with pytest.raises(MemoryStoreError, match=r"cannot store kettle\.txt: PostgreSQL refused"):
            memory.store.replace_document(info, chunks, vectors, embedder="hash")
        assert memory.search_sync("kettle", k=10, mode="vector") == before
        assert memory.search_sync("descale", mode="keyword")[0].source == "kettle.txt"


def test_broken_connections_are_replaced_without_failing_a_search(
    schema: Schema, tmp_path: Path
) -> None:
    with open_memory(schema.url, embedder=HashEmbed()) as memory:
        corpus = corpus_at(tmp_path / "corpus")
        memory.ingest_sync(corpus, root=corpus)
        memory.search_sync("kettle", k=1)  # the pool now holds idle connections
        assert isinstance(memory.db, PostgresMemoryDB)
        idle = [c.info.backend_pid for c in memory.db._idle]
        assert idle
        for pid in idle:  # as a server restart or a firewall cutting idle connections would
            schema.sql("SELECT pg_terminate_backend(%s)", (pid,))
        (hit,) = memory.search_sync("descale the kettle", k=1)
        assert hit.source == "kettle.txt"
        memory.conversation("s").sync.append("user", "still writing")
        assert not {c.info.backend_pid for c in memory.db._idle} & set(idle)


def test_vectors_read_back_in_any_order_stay_with_their_chunks(schema: Schema) -> None:
    """Rows written again (an update, a vacuum that frees space) move on disk: the vectors then
    come back from the table out of id order, and each must still be its own chunk's."""
    rng = np.random.default_rng(3)
    with open_memory(schema.url, embedder=HashEmbed()) as memory:
        store = memory.store
        for d in range(4):
            vectors = rng.standard_normal((20, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            chunks = [Chunk(f"doc {d} chunk {i}", (), None, 0, 5, 1) for i in range(20)]
            info = DocumentInfo(f"d{d}.txt", "-", "text", 0, 0, 0.0, "-")
            store.replace_document(info, chunks, vectors, embedder="r")
        schema.sql(  # new versions of the first document's rows go to the end of the table
            "UPDATE memory_vectors SET vector = vector WHERE chunk IN "
            "(SELECT chunk FROM memory_vectors ORDER BY chunk LIMIT 20)"
        )
        on_disk = [r[0] for r in schema.sql("SELECT chunk FROM memory_vectors")]
        assert on_disk != sorted(on_disk)  # the case this test is about
        m = store.matrix()  # type: ignore[attr-defined]
        stored = dict(schema.sql("SELECT chunk, vector FROM memory_vectors"))
        for row, cid in enumerate(m.ids.tolist()):
            assert np.array_equal(m.vectors[row], np.frombuffer(stored[cid], dtype="<f4"))
        text = dict(schema.sql("SELECT id, text FROM memory_chunks"))
        for row in (0, len(m.ids) // 2, len(m.ids) - 1):
            (hit,) = store.search("x", m.vectors[row], k=1, mode="vector")
            assert hit.text == text[int(m.ids[row])]


def test_vector_search_gives_what_the_sqlite_store_gives(schema: Schema, tmp_path: Path) -> None:
    corpus = corpus_at(tmp_path / "corpus")
    found = []
    for url in (schema.url, str(tmp_path / "memory.db")):
        with open_memory(url, embedder=HashEmbed()) as memory:
            memory.ingest_sync(corpus, root=corpus)
            hits = memory.search_sync("the kettle is hot after boiling", k=6, mode="vector")
            found.append([(h.id, h.text, round(h.score, 6)) for h in hits])
    assert found[0] == found[1]


# --- end to end, with the real MiniLM -----------------------------------------------------------
def test_real_files_ingested_with_minilm_are_found_on_postgres(schema: Schema) -> None:
    from models.local_fixtures import minilm

    embedder = minilm()  # loaded once per test session, shared with the other MiniLM tests
    corpus = demo_corpus()

    async def main() -> None:
        async with open_memory(schema.url, embedder=embedder) as memory:
            files = [corpus / "kettle-manual.md", corpus / "refund-policy.md"]
            report = await memory.ingest(files, root=corpus)
            assert report.ok and report.chunks > 4
            assert memory.store.embedding() == (embedder.name, 384)
            hits = await memory.search("how do I remove limescale from the kettle", k=3)
            assert hits[0].source == "kettle-manual.md"
            hits = await memory.search("how long until I get my money back", k=3, mode="vector")
            assert hits[0].source == "refund-policy.md"

    asyncio.run(main())
