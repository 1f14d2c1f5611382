"""Retrieval over a real SQLite memory: vector, keyword and hybrid search, filters, MMR, the
in-memory matrix kept up to date, and the errors of bad queries and bad databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from erpoz.memory import (
    Hit,
    Memory,
    MemoryStoreError,
    QueryError,
    SQLiteVectorStore,
    VectorStore,
    demo_corpus,
    open_memory,
    project_memory,
)
from erpoz.memory import _sqlite as sqlite_store
from erpoz.memory._search import fts_query, mmr, query_terms, rrf
from memory.helpers import HashEmbed, make_pdf, write


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    write(
        d / "refunds.md",
        "# Refunds\n\n## Timing\n\nA refund reaches your card within five business days.\n\n"
        "## Gift cards\n\nGift cards cannot be exchanged for cash.\n",
    )
    write(
        d / "shipping.md",
        "# Shipping\n\n## Zones\n\nWe deliver parcels to the UK and the EU.\n\n"
        "## Damage\n\nA parcel that arrived damaged is replaced at once.\n",
    )
    write(d / "kettle.txt", "Descale the kettle with a tablet every four weeks.\n")
    (d / "manual.pdf").write_bytes(
        make_pdf([["The kettle boils water quickly."], ["Error E3 means the kettle is hot."]])
    )
    return d


@pytest.fixture
def mem(tmp_path: Path, corpus: Path) -> Iterator[Memory]:
    with open_memory(tmp_path / "memory.db", embedder=HashEmbed()) as memory:
        memory.ingest_sync(corpus, root=corpus, metadata={"team": "support"})
        yield memory


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def test_the_store_implements_the_protocol(mem: Memory) -> None:
    assert isinstance(mem.store, VectorStore)
    assert mem.store.embedding() == ("hash", 256)
    assert [d.source for d in mem.store.documents()] == [
        "kettle.txt",
        "manual.pdf",
        "refunds.md",
        "shipping.md",
    ]


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_each_mode_finds_the_passage_with_its_position_and_score(mem: Memory, mode: str) -> None:
    hits = mem.search_sync("how many business days until my refund", k=3, mode=mode)  # type: ignore[arg-type]
    top = hits[0]
    assert top.source == "refunds.md" and top.heading == ("Refunds", "Timing")
    assert top.text == "A refund reaches your card within five business days."
    assert top.id == "refunds.md#0" and top.chunk == 0 and top.mode == mode
    assert top.location == "refunds.md › Refunds › Timing"
    source_text = (Path(mem.path).parent / "corpus" / "refunds.md").read_text()
    assert source_text[top.start : top.end] == top.text
    assert top.metadata == {"kind": "markdown", "team": "support", "title": "Refunds"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expected_parts = {"vector": {"vector"}, "keyword": {"keyword"}, "hybrid": {"rrf"}}[mode]
    assert expected_parts <= set(top.scores)
    if mode == "hybrid":
        assert set(top.scores) == {"vector", "keyword", "rrf"}
        assert top.score == pytest.approx(2 / 61)  # first in both rankings
    assert top.to_json()["span"] == [top.start, top.end]


def test_pdf_hits_carry_their_page(mem: Memory) -> None:
    (hit,) = mem.search_sync("E3 error", k=1, mode="keyword")
    assert (hit.source, hit.page) == ("manual.pdf", 2)
    assert hit.location == "manual.pdf, p. 2"


def test_filters_on_source_kind_page_heading_and_metadata(mem: Memory) -> None:
    def sources(**filters: object) -> set[str]:
        return {h.source for h in mem.search_sync("kettle parcel refund", k=20, filters=filters)}

    assert sources() == {"refunds.md", "shipping.md", "kettle.txt", "manual.pdf"}
    assert sources(source="*.md") == {"refunds.md", "shipping.md"}
    assert sources(source=["ship*", "kettle.*"]) == {"shipping.md", "kettle.txt"}
    assert sources(kind="pdf") == {"manual.pdf"}
    assert sources(kind=["text", "pdf"]) == {"kettle.txt", "manual.pdf"}
    assert sources(team="support") == {"refunds.md", "shipping.md", "kettle.txt", "manual.pdf"}
    assert sources(team="sales") == set()
    assert sources(title="Shipping") == {"shipping.md"}
    hits = mem.search_sync("kettle", k=20, filters={"page": 2})
    assert [(h.source, h.page) for h in hits] == [("manual.pdf", 2)]
    hits = mem.search_sync("parcel refund", k=20, filters={"heading": "*Damage"})
    assert ids(hits) == ["shipping.md#1"]
    for mode in ("vector", "keyword"):
        found = mem.search_sync("refund", k=5, mode=mode, filters={"source": "shipping.md"})  # type: ignore[arg-type]
        assert {h.source for h in found} <= {"shipping.md"}


def test_mmr_trades_relevance_for_diversity(tmp_path: Path) -> None:
    d = tmp_path / "dupes"
    for i in range(4):
        write(d / f"copy{i}.txt", f"Refunds are paid within five days. Copy {i}.\n")
    write(d / "other.txt", "Refunds for gift cards are not paid in cash.\n")
    with open_memory("memory", embedder=HashEmbed()) as memory:
        memory.ingest_sync(d, root=d)
        plain = memory.search_sync("refunds paid within five days", k=2, mode="vector")
        assert {h.source for h in plain} <= {f"copy{i}.txt" for i in range(4)}
        diverse = memory.search_sync("refunds paid within five days", k=2, mode="vector", mmr=0.3)
        assert diverse[0].id == plain[0].id  # the most relevant still comes first
        assert diverse[1].source == "other.txt"  # then the one least like it
        same = memory.search_sync("refunds paid within five days", k=2, mode="vector", mmr=1.0)
        assert ids(same) == ids(plain)
        kw = memory.search_sync("refunds paid", k=2, mode="keyword", mmr=0.0)
        assert len({h.source for h in kw}) == 2


def test_bad_queries_are_refused_clearly(mem: Memory) -> None:
    cases = [
        ({"query": "  "}, "the query is empty"),
        ({"query": "x", "mode": "fuzzy"}, "unknown search mode 'fuzzy'"),
        ({"query": "x", "k": 0}, "k must be a whole number of results ≥ 1, not 0"),
        ({"query": "x", "mmr": 1.5}, "between 0 and 1; not 1.5"),
        ({"query": "x", "filters": ["source"]}, "filters must map names to values"),
    ]
    for kwargs, message in cases:
        query = kwargs.pop("query")
        with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            mem.search_sync(query, **kwargs)  # type: ignore[arg-type]
    assert mem.search_sync("zzz qqq", mode="keyword") == []
    assert mem.search_sync("!!! ???", mode="keyword") == []  # no words at all


def test_an_empty_memory_finds_nothing_without_loading_a_model() -> None:
    class Unloadable:
        name = "never"

        def embed_array(self, texts: object) -> object:
            raise AssertionError("an empty memory must not embed the query")

    with open_memory("memory", embedder=Unloadable()) as memory:
        for mode in ("vector", "keyword", "hybrid"):
            assert memory.search_sync("anything", mode=mode) == []  # type: ignore[arg-type]


def test_the_matrix_follows_changes_made_by_another_connection(mem: Memory, tmp_path: Path) -> None:
    store = mem.store
    assert isinstance(store, SQLiteVectorStore)
    first = store.matrix()
    assert store.matrix() is first  # cached while nothing changes
    extra = write(tmp_path / "late" / "late.md", "# Late\n\nA walrus arrived late.\n")
    with open_memory(mem.path, embedder=HashEmbed()) as other:
        other.ingest_sync([extra], root=tmp_path / "late")
    (hit,) = mem.search_sync("walrus", k=1, mode="vector")
    assert hit.source == "late.md"
    assert store.matrix() is not first and len(store.matrix().ids) == len(first.ids) + 1


def test_a_large_store_leaves_common_words_out_of_the_keyword_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteVectorStore(open_memory(tmp_path / "kw.db").db)
    from erpoz.memory import Chunk, DocumentInfo

    texts = [f"common words everywhere number{i}" for i in range(30)]
    texts += ["common rare zebra", "common zebra", "walrus common"]
    chunks = [Chunk(t, (), None, 0, len(t), 3) for t in texts]
    vectors = np.eye(len(chunks), 64, dtype=np.float32)
    info = DocumentInfo("d.txt", "-", "text", 0, 0, 0.0, "-")
    store.replace_document(info, chunks, vectors, embedder="e")
    monkeypatch.setattr(sqlite_store, "KEYWORD_BUDGET", 5)
    assert store._keyword_plan(query_terms("common zebra")) == ['"zebra"']
    hits = store.search("common zebra", None, k=5, mode="keyword")
    assert [h.text for h in hits] == ["common zebra", "common rare zebra"]
    # only common words: all must match; and when nothing has them all, the rarest alone
    assert store._keyword_plan(query_terms("common words")) == [
        '"words" AND "common"',
        '"words"',
    ]
    assert len(store.search("common words everywhere", None, k=50, mode="keyword")) == 30
    store.close()


def test_async_search_runs_off_the_event_loop(mem: Memory) -> None:
    async def main() -> list[Hit]:
        return await mem.search("parcel damaged", k=1)

    (hit,) = asyncio.run(main())
    assert hit.id == "shipping.md#1"


def test_open_memory_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match=r"PostgreSQL .* not implemented yet"):
        open_memory("postgresql://db/erpoz")
    with pytest.raises(MemoryStoreError, match="unknown memory URL 'redis://x'"):
        open_memory("redis://x")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(MemoryStoreError, match="not an erpoz memory database") as info:
        open_memory(junk)
    assert info.value.path == str(junk)
    with open_memory(f"sqlite:///{tmp_path / 'u.db'}") as memory:
        assert memory.path == str(tmp_path / "u.db")


def test_default_location_is_the_project_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPOZ_MEMORY", raising=False)
    with open_memory() as memory:
        assert memory.path == str(Path(".erpoz") / "memory.db")
    assert (tmp_path / ".erpoz" / "memory.db").exists()
    monkeypatch.setenv("ERPOZ_MEMORY", str(tmp_path / "env.db"))
    with open_memory() as memory:
        assert memory.path == str(tmp_path / "env.db")
    shared = project_memory()  # what ctx.memory falls back to: one per process and path
    assert project_memory() is shared and shared.path == str(tmp_path / "env.db")


def test_demo_corpus_ships_with_the_package() -> None:
    names = sorted(p.name for p in demo_corpus().iterdir())
    assert "refund-policy.md" in names and "shipping-faq.html" in names
    assert len(names) >= 5


# --- the arithmetic -----------------------------------------------------------------------------
def test_reciprocal_rank_fusion() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_mmr_picks_relevant_then_different() -> None:
    vectors = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = np.array([1.0, 0.95, 0.5], dtype=np.float32)
    assert mmr(relevance, vectors, 2, 1.0) == [0, 1]
    assert mmr(relevance, vectors, 2, 0.5) == [0, 2]
    assert mmr(relevance, vectors, 5, 0.5) == [0, 2, 1]


def test_query_words_are_quoted_and_stop_words_dropped() -> None:
    assert fts_query('How do I get "a refund" OR NEAR(x)?') == '"get" OR "refund" OR "near"'
    assert fts_query("the and of") == '"the" OR "and" OR "of"'
    assert fts_query("Janet's ducks") == '"janet" OR "ducks"'
    assert fts_query("?!") is None


def test_chunks_newer_than_the_matrix_have_no_row(mem: Memory) -> None:
    store = mem.store
    assert isinstance(store, SQLiteVectorStore)
    m = store.matrix()
    first, last = int(m.ids[0]), int(m.ids[-1])
    rows, known = m.rows_of([last, first, last + 1])
    assert known.tolist() == [True, True, False]
    assert rows[:2].tolist() == [len(m.ids) - 1, 0]
