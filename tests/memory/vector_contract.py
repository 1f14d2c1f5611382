"""The contract every vector store of memory must pass (SQLite, PostgreSQL, and any that plugs
in later), through the public ``open_memory`` / ``Memory`` / ``VectorStore`` surface.

A backend's test module subclasses :class:`VectorStoreContract` and gives the ``url`` fixture
(what ``open_memory`` opens: a fresh, empty memory per test), ``rows_module`` (the module whose
``_chunk_rows`` yields the rows of a document's chunks as they are written) and the two ways
to look at its tables directly (:meth:`chunk_texts`, :meth:`side_rows`). Import as
``memory.vector_contract``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from erpoz.memory import (
    Chunk,
    DocumentInfo,
    Hit,
    Memory,
    MemoryStoreError,
    QueryError,
    TurnStore,
    VectorStore,
    open_memory,
)
from memory.helpers import HashEmbed, make_pdf, write
from models.local_fixtures import WordsEmbed


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def corpus_at(d: Path) -> Path:
    """Two Markdown files, a text file and a two-page PDF."""
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


class VectorStoreContract:
    """What ``open_memory(url)`` must do with documents, whatever database ``url`` names."""

    rows_module: ModuleType

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError("a backend's test class gives the url of an empty memory")

    def chunk_texts(self, memory: Memory) -> list[tuple[str, str]]:
        """(source, text) of every stored chunk, by source and position, read from the tables."""
        raise NotImplementedError

    def side_rows(self, memory: Memory) -> int:
        """How many rows the store keeps beside the chunks, one per chunk (SQLite: the FTS5
        index; PostgreSQL: the vectors), read from the tables."""
        raise NotImplementedError

    @pytest.fixture
    def corpus(self, tmp_path: Path) -> Path:
        return corpus_at(tmp_path / "corpus")

    @pytest.fixture
    def mem(self, url: str, corpus: Path) -> Iterator[Memory]:
        with open_memory(url, embedder=HashEmbed()) as memory:
            memory.ingest_sync(corpus, root=corpus, metadata={"team": "support"})
            yield memory

    @pytest.fixture
    def empty(self, url: str) -> Iterator[Memory]:
        with open_memory(url, embedder=HashEmbed()) as memory:
            yield memory

    def crash_after_two_rows(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the next writes fail after two of a document's chunk rows were written."""
        real = self.rows_module._chunk_rows

        def two_rows_then_crash(*args: Any) -> Iterator[tuple[Any, ...]]:
            rows = real(*args)
            yield next(rows)
            yield next(rows)
            raise OSError("disk pulled out mid-file")

        monkeypatch.setattr(self.rows_module, "_chunk_rows", two_rows_then_crash)

    # --- the protocol and the documents -----------------------------------------------------
    def test_the_store_implements_the_protocols(self, mem: Memory) -> None:
        assert isinstance(mem.store, VectorStore)
        assert isinstance(mem.turns, TurnStore)
        assert mem.store.embedding() == ("hash", 256)
        assert [d.source for d in mem.store.documents()] == [
            "kettle.txt",
            "manual.pdf",
            "refunds.md",
            "shipping.md",
        ]
        info = mem.store.get_document("refunds.md")
        assert info is not None and (info.kind, info.chunks) == ("markdown", 2)
        assert info.metadata == {"team": "support", "title": "Refunds"}
        assert mem.store.get_document("nope.md") is None

    # --- searching --------------------------------------------------------------------------
    @pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
    def test_each_mode_finds_the_passage_with_its_position_and_score(
        self, mem: Memory, corpus: Path, mode: str
    ) -> None:
        hits = mem.search_sync("how many business days until my refund", k=3, mode=mode)  # type: ignore[arg-type]
        top = hits[0]
        assert top.source == "refunds.md" and top.heading == ("Refunds", "Timing")
        assert top.text == "A refund reaches your card within five business days."
        assert top.id == "refunds.md#0" and top.chunk == 0 and top.mode == mode
        assert top.location == "refunds.md › Refunds › Timing"
        assert (corpus / "refunds.md").read_text()[top.start : top.end] == top.text
        assert top.metadata == {"kind": "markdown", "team": "support", "title": "Refunds"}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        expected_parts = {"vector": {"vector"}, "keyword": {"keyword"}, "hybrid": {"rrf"}}[mode]
        assert expected_parts <= set(top.scores)
        if mode == "hybrid":
            assert set(top.scores) == {"vector", "keyword", "rrf"}
            assert top.score == pytest.approx(2 / 61)  # first in both rankings
        assert top.to_json()["span"] == [top.start, top.end]

    def test_pdf_hits_carry_their_page(self, mem: Memory) -> None:
        (hit,) = mem.search_sync("E3 error", k=1, mode="keyword")
        assert (hit.source, hit.page) == ("manual.pdf", 2)
        assert hit.location == "manual.pdf, p. 2"

    def test_filters_on_source_kind_page_heading_and_metadata(self, mem: Memory) -> None:
        def sources(**filters: object) -> set[str]:
            found = mem.search_sync("kettle parcel refund", k=20, filters=filters)
            return {h.source for h in found}

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

    def test_mmr_trades_relevance_for_diversity(self, empty: Memory, tmp_path: Path) -> None:
        d = tmp_path / "dupes"
        for i in range(4):
            write(d / f"copy{i}.txt", f"Refunds are paid within five days. Copy {i}.\n")
        write(d / "other.txt", "Refunds for gift cards are not paid in cash.\n")
        empty.ingest_sync(d, root=d)
        query = "refunds paid within five days"
        plain = empty.search_sync(query, k=2, mode="vector")
        assert {h.source for h in plain} <= {f"copy{i}.txt" for i in range(4)}
        diverse = empty.search_sync(query, k=2, mode="vector", mmr=0.3)
        assert diverse[0].id == plain[0].id  # the most relevant still comes first
        assert diverse[1].source == "other.txt"  # then the one least like it
        assert ids(empty.search_sync(query, k=2, mode="vector", mmr=1.0)) == ids(plain)
        kw = empty.search_sync("refunds paid", k=2, mode="keyword", mmr=0.0)
        assert len({h.source for h in kw}) == 2

    def test_bad_queries_are_refused_clearly(self, mem: Memory) -> None:
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
        with pytest.raises(QueryError, match="a vector search needs the query's vector"):
            mem.store.search("kettle", None, mode="vector")
        assert mem.search_sync("zzz qqq", mode="keyword") == []
        assert mem.search_sync("!!! ???", mode="keyword") == []  # no words at all

    def test_a_query_vector_of_another_dimension_is_refused(self, mem: Memory) -> None:
        with pytest.raises(MemoryStoreError, match="the query vector has 3 dimensions"):
            mem.store.search("kettle", np.ones(3, dtype=np.float32), mode="vector")

    def test_an_empty_memory_finds_nothing_without_loading_a_model(self, url: str) -> None:
        class Unloadable:
            name = "never"

            def embed_array(self, texts: object) -> object:
                raise AssertionError("an empty memory must not embed the query")

        with open_memory(url, embedder=Unloadable()) as memory:
            for mode in ("vector", "keyword", "hybrid"):
                assert memory.search_sync("anything", mode=mode) == []  # type: ignore[arg-type]

    def test_the_matrix_follows_changes_made_by_another_connection(
        self, mem: Memory, url: str, tmp_path: Path
    ) -> None:
        store = mem.store
        first = store.matrix()  # type: ignore[attr-defined]
        assert store.matrix() is first  # type: ignore[attr-defined]  # cached while unchanged
        extra = write(tmp_path / "late" / "late.md", "# Late\n\nA walrus arrived late.\n")
        with open_memory(url, embedder=HashEmbed()) as other:
            other.ingest_sync([extra], root=tmp_path / "late")
        (hit,) = mem.search_sync("walrus", k=1, mode="vector")
        assert hit.source == "late.md"
        now = store.matrix()  # type: ignore[attr-defined]
        assert now is not first and len(now.ids) == len(first.ids) + 1
        with open_memory(url, embedder=HashEmbed()) as other:
            assert other.forget_sync("late.md")
        assert [h.source for h in mem.search_sync("walrus", k=1, mode="vector")] != ["late.md"]
        assert len(store.matrix().ids) == len(first.ids)  # type: ignore[attr-defined]

    def test_chunks_newer_than_the_matrix_have_no_row(self, mem: Memory) -> None:
        m = mem.store.matrix()  # type: ignore[attr-defined]
        first, last = int(m.ids[0]), int(m.ids[-1])
        rows, known = m.rows_of([last, first, last + 1])
        assert known.tolist() == [True, True, False]
        assert rows[:2].tolist() == [len(m.ids) - 1, 0]
        assert np.allclose(np.linalg.norm(m.vectors, axis=1), 1.0)  # read back as written

    def test_a_large_store_leaves_common_words_out_of_the_keyword_match(
        self, empty: Memory
    ) -> None:
        texts = [f"common words everywhere number{i}" for i in range(30)]
        texts += ["common rare zebra", "common zebra", "walrus common"]
        chunks = [Chunk(t, (), None, 0, len(t), 3) for t in texts]
        vectors = np.eye(len(chunks), 64, dtype=np.float32)
        info = DocumentInfo("d.txt", "-", "text", 0, 0, 0.0, "-")
        store = empty.store
        store.replace_document(info, chunks, vectors, embedder="e")
        store.keyword_budget = 5  # type: ignore[attr-defined]  # as if the store were large
        hits = store.search("common zebra", None, k=5, mode="keyword")
        assert [h.text for h in hits] == ["common zebra", "common rare zebra"]
        # only common words: all must match; and when nothing has them all, the rarest alone
        assert len(store.search("common words everywhere", None, k=50, mode="keyword")) == 30
        assert [h.text for h in store.search("walrus everywhere", None, mode="keyword")] == [
            "walrus common"
        ]

    def test_a_keyword_filter_that_keeps_few_of_many_matches_still_finds_them(
        self, empty: Memory
    ) -> None:
        store = empty.store
        many = [Chunk(f"common alpha {i}", (), None, 0, 10, 3) for i in range(250)]
        rng = np.random.default_rng(5)
        for source, chunks in (
            ("a.txt", many),
            ("b.txt", [Chunk("common beta gamma delta epsilon zeta", (), None, 0, 30, 6)]),
        ):
            vectors = rng.standard_normal((len(chunks), 16)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            info = DocumentInfo(source, "-", "text", 0, 0, 0.0, "-")
            store.replace_document(info, chunks, vectors, embedder="e")
        top = store.search("common", None, k=200, mode="keyword")
        assert "b.txt" not in {h.source for h in top}  # the longer chunk ranks below the rest
        found = store.search("common", None, k=3, mode="keyword", filters={"source": "b.txt"})
        assert [h.source for h in found] == ["b.txt"]

    def test_async_search_runs_off_the_event_loop(self, mem: Memory) -> None:
        async def main() -> list[Hit]:
            return await mem.search("parcel damaged", k=1)

        (hit,) = asyncio.run(main())
        assert hit.id == "shipping.md#1"

    # --- ingesting --------------------------------------------------------------------------
    def test_ingest_stores_chunks_and_skips_unchanged_files(
        self, empty: Memory, tmp_path: Path
    ) -> None:
        docs = tmp_path / "docs"
        write(docs / "a.md", "# Refunds\n\nRefunds take five business days.\n")
        write(docs / "b.txt", "Shipping takes two days.\n")
        write(docs / "notes.json", "{}")
        write(docs / ".hidden.md", "# secret\n\nnot ingested")
        report = empty.ingest_sync(docs, root=docs)
        assert [(f.source, f.status) for f in report.files] == [
            ("a.md", "ingested"),
            ("b.txt", "ingested"),
            ("notes.json", "ignored"),
        ]
        assert report.ok and report.chunks == 2 and report.chunks_per_s > 0
        assert self.chunk_texts(empty) == [
            ("a.md", "Refunds take five business days."),
            ("b.txt", "Shipping takes two days."),
        ]
        assert self.side_rows(empty) == 2
        info = empty.store.get_document("a.md")
        assert info is not None and info.kind == "markdown" and info.metadata["title"] == "Refunds"
        embedder = empty.embedder
        embedded = len(embedder.texts)
        again = empty.ingest_sync(docs, root=docs)
        assert [f.status for f in again.files] == ["unchanged", "unchanged", "ignored"]
        assert again.chunks == 0 and len(embedder.texts) == embedded  # nothing embedded again

    def test_a_changed_file_replaces_its_chunks(self, empty: Memory, tmp_path: Path) -> None:
        path = write(tmp_path / "policy.md", "# Policy\n\nRefunds take five days.\n")
        empty.ingest_sync([path], root=tmp_path)
        write(path, "# Policy\n\nRefunds take ten days.\n\n## New\n\nGift cards are final.\n")
        report = empty.ingest_sync([path], root=tmp_path)
        assert [(f.status, f.chunks) for f in report.files] == [("ingested", 2)]
        assert self.chunk_texts(empty) == [
            ("policy.md", "Refunds take ten days."),
            ("policy.md", "Gift cards are final."),
        ]
        assert self.side_rows(empty) == 2
        assert not empty.search_sync("five", mode="keyword")
        ten = empty.search_sync("ten", mode="keyword")
        assert [h.text for h in ten] == ["Refunds take ten days."]

    def test_a_failure_while_writing_a_file_leaves_its_old_chunks_whole(
        self, empty: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        old = "# Policy\n\n" + "\n\n".join(f"Old paragraph {i}." for i in range(5)) + "\n"
        path = write(tmp_path / "policy.md", old)
        other = write(tmp_path / "other.md", "# Other\n\nOther text.\n")
        small = {"target_tokens": 8, "overlap_tokens": 0}
        empty.ingest_sync([path], root=tmp_path)
        before = self.chunk_texts(empty)
        version = empty.store.version()  # type: ignore[attr-defined]
        write(path, "# Policy\n\n" + "\n\n".join(f"New paragraph {i}." for i in range(5)) + "\n")
        self.crash_after_two_rows(monkeypatch)
        report = empty.ingest_sync([path, other], root=tmp_path, **small)
        monkeypatch.undo()
        assert [(f.source, f.status) for f in report.files] == [
            ("policy.md", "failed"),
            ("other.md", "failed"),
        ]
        assert report.files[0].reason == "disk pulled out mid-file"
        assert self.chunk_texts(empty) == before  # the old chunks, all; nothing of the new
        assert self.side_rows(empty) == len(before)
        assert empty.store.version() == version  # type: ignore[attr-defined]
        info = empty.store.get_document("policy.md")
        assert info is not None and info.chunks == len(before)
        assert empty.store.get_document("other.md") is None
        # and with the disk back, the same ingestion goes through
        report = empty.ingest_sync([path, other], root=tmp_path, **small)
        assert [f.status for f in report.files] == ["ingested", "ingested"]
        assert all("New" in t for s, t in self.chunk_texts(empty) if s == "policy.md")

    def test_prune_and_forget_remove_documents_of_deleted_files(
        self, empty: Memory, tmp_path: Path
    ) -> None:
        docs = tmp_path / "docs"
        keep = write(docs / "keep.md", "# Keep\n\nStays.\n")
        gone = write(docs / "gone.md", "# Gone\n\nWill be deleted.\n")
        empty.ingest_sync(docs, root=docs)
        gone.unlink()
        report = empty.ingest_sync(docs, root=docs, prune=True)
        assert [(f.source, f.status) for f in report.files] == [
            ("keep.md", "unchanged"),
            ("gone.md", "forgotten"),
        ]
        assert [s for s, _ in self.chunk_texts(empty)] == ["keep.md"]
        assert empty.forget_sync("keep.md") is True
        assert empty.forget_sync("keep.md") is False
        assert self.chunk_texts(empty) == [] and self.side_rows(empty) == 0
        assert empty.store.embedding() is None  # an empty memory takes any embedder again
        assert keep.exists()

    def test_an_async_only_embed_model_works_and_another_embedder_is_refused(
        self, url: str, tmp_path: Path
    ) -> None:
        path = write(tmp_path / "a.md", "# Cats\n\nCats purr and sleep.\n")
        with open_memory(url, embedder=WordsEmbed()) as memory:  # only `async embed`
            assert memory.ingest_sync([path], root=tmp_path).ok
            (hit,) = memory.search_sync("cats sleep", k=1, mode="vector")
            assert hit.source == "a.md" and hit.score > 0.5
        write(tmp_path / "b.md", "# Dogs\n\nDogs bark.\n")
        with open_memory(url, embedder=HashEmbed()) as memory:
            report = memory.ingest_sync([tmp_path / "b.md"], root=tmp_path)
            (failed,) = report.failed
            assert "holds 256-d vectors from 'words'" in (failed.reason or "")
            with pytest.raises(MemoryStoreError, match="embedded with 'words'"):
                memory.search_sync("dogs", mode="vector")
            assert memory.search_sync("purr", mode="keyword")[0].source == "a.md"
            # replacing the only document's chunks may change the embedder
            assert memory.ingest_sync([path], root=tmp_path).failed == []
            assert memory.store.embedding() == ("hash", 256)

    def test_writers_in_several_threads_each_keep_their_documents(
        self, url: str, tmp_path: Path
    ) -> None:
        """Four memories on one database (as four processes would be), ingesting at once."""
        errors: list[BaseException] = []

        def work(i: int) -> None:
            d = tmp_path / f"w{i}"
            for n in range(5):
                write(d / f"w{i}-{n}.md", f"# Doc {n}\n\nWriter {i} wrote note {n}.\n")
            try:
                with open_memory(url, embedder=HashEmbed()) as memory:
                    report = memory.ingest_sync(d, root=tmp_path)
                    assert report.ok, report.summary()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with open_memory(url, embedder=HashEmbed()) as memory:
            assert len(memory.documents_sync()) == 20
            assert len(self.chunk_texts(memory)) == 20 == self.side_rows(memory)
            (hit,) = memory.search_sync("writer 3 note 4", k=1, mode="keyword")
            assert hit.source == "w3/w3-4.md"
