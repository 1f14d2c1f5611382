"""Reading files, chunking that follows their structure, and what ingestion reports about bad
files and images (in a SQLite memory). How a store keeps what is ingested (replaced atomically,
unchanged files skipped, pruned) is checked for every store by ``memory.vector_contract``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from erpoz.memory import (
    Chunk,
    IngestReport,
    Memory,
    chunk_document,
    open_memory,
)
from erpoz.memory._loaders import parse_html, parse_markdown, parse_pdf, parse_text
from erpoz.models import OCRLine, OCRResult
from memory.helpers import HashEmbed, encrypt_pdf, make_pdf, make_png, words_count, write


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    with open_memory(tmp_path / "memory.db", embedder=HashEmbed()) as memory:
        yield memory


def texts(memory: Memory) -> list[tuple[str, str]]:
    """(source, text) of every stored chunk, straight from SQLite."""
    return list(
        memory.db.conn.execute(
            "SELECT d.source, c.text FROM mem_chunks c JOIN mem_documents d ON d.id = c.doc "
            "ORDER BY d.source, c.ord"
        )
    )


# --- parsing and chunking -----------------------------------------------------------------------
MARKDOWN = """---
title: front matter is not content
---
# Guide

Intro paragraph.

## Install
Run the installer.

```sh
# not a heading: inside code
make install
```

Setext heading
--------------

Under the setext heading.

### Deep *emphasis* [link](http://x)
Deep text.

## Use
Use it.
"""


def test_markdown_sections_follow_headings_and_spans_point_into_the_file() -> None:
    parsed = parse_markdown(MARKDOWN)
    chunks = chunk_document(parsed, words_count, target=50, overlap=5)
    got = [(c.heading, c.text) for c in chunks]
    assert got == [
        (("Guide",), "Intro paragraph."),
        (
            ("Guide", "Install"),
            "Run the installer.\n\n```sh\n# not a heading: inside code\nmake install\n```",
        ),
        (("Guide", "Setext heading"), "Under the setext heading."),
        (("Guide", "Setext heading", "Deep emphasis link"), "Deep text."),
        (("Guide", "Use"), "Use it."),
    ]
    assert parsed.title == "Guide"
    for c in chunks:
        assert MARKDOWN[c.start : c.end] == c.text
        assert c.page is None
    assert "front matter" not in " ".join(c.text for c in chunks)
    assert chunks[0].indexed_text() == "Guide\nIntro paragraph."


def test_a_long_section_splits_at_sentences_with_a_small_overlap() -> None:
    sentences = [f"Sentence number {i} says something about topic {i}." for i in range(30)]
    text = "# Long\n\n" + " ".join(sentences[:12]) + "\n\n" + " ".join(sentences[12:])
    chunks = chunk_document(parse_markdown(text), words_count, target=40, overlap=10)
    assert len(chunks) > 3
    for c in chunks:
        assert c.tokens <= 40
        assert c.heading == ("Long",)
        assert text[c.start : c.end] == c.text
        assert c.text.endswith(".")  # cut at sentence ends, never inside one
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # each chunk starts with the end of the one before
        assert before.text.endswith(text[after.start : before.end])
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_paragraphs_are_packed_whole_and_a_giant_sentence_is_cut_at_words() -> None:
    giant = " ".join(f"w{i}" for i in range(120))
    text = f"First short paragraph.\n\nSecond short one.\n\n{giant}"
    chunks = chunk_document(parse_text(text), words_count, target=50, overlap=0)
    assert chunks[0].text == "First short paragraph.\n\nSecond short one."
    assert [c.tokens for c in chunks[1:]] == [50, 50, 20]
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_html_keeps_headings_and_visible_text_only() -> None:
    html = """<html><head><title>T &amp; C</title><style>p{color:red}</style>
    <script>var secret = "do not index";</script></head>
    <body><nav>Home · About</nav><h1>Terms</h1><p>First   para<br>second line</p>
    <h2>Refunds</h2><ul><li>Item one</li><li>Item &lt;two&gt;</li></ul>
    <pre>  keep   spacing</pre><script>alert(1)</script></body></html>"""
    parsed = parse_html(html)
    unit = parsed.units[0]
    assert parsed.title == "T & C"
    assert "secret" not in unit.text and "alert" not in unit.text and "color" not in unit.text
    assert "Home" not in unit.text
    chunks = chunk_document(parsed, words_count, target=50, overlap=0)
    assert [(c.heading, c.text) for c in chunks] == [
        (("Terms",), "First para\nsecond line"),
        (("Terms", "Refunds"), "Item one\n\nItem <two>\n\n  keep   spacing"),
    ]
    assert all(unit.text[c.start : c.end] == c.text for c in chunks)


def test_pdf_pages_are_kept_and_pages_without_text_noted() -> None:
    pdf = make_pdf([["Page one talks about refunds."], [], ["Page three is about shipping."]])
    parsed = parse_pdf(pdf, "doc.pdf")
    chunks = chunk_document(parsed, words_count)
    assert [(c.page, c.text.strip()) for c in chunks] == [
        (1, "Page one talks about refunds."),
        (3, "Page three is about shipping."),
    ]
    assert parsed.notes == ("page(s) 2 have no text layer and were left out",)


# --- ingestion ----------------------------------------------------------------------------------
def test_bad_inputs_each_get_a_clear_reason_and_the_rest_is_ingested(
    mem: Memory, tmp_path: Path
) -> None:
    d = tmp_path / "in"
    write(d / "good.md", "# Good\n\nThis one is fine.\n")
    (d / "empty.txt").write_bytes(b"")
    write(d / "blank.md", "# Only a heading\n\n   \n")
    (d / "huge.txt").write_text("x" * 5000)
    (d / "garbage.pdf").write_bytes(b"this is not a pdf at all")
    (d / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer<<>>")
    (d / "locked.pdf").write_bytes(encrypt_pdf(make_pdf([["secret"]]), "pw"))
    (d / "scan.pdf").write_bytes(make_pdf([[], []]))
    (d / "fake.png").write_bytes(b"GIF? no: plain text pretending")
    (d / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (d / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    write(d / "data.xyz", "unknown type")
    paths = [*sorted(d.iterdir()), d / "missing.md"]
    report = mem.ingest_sync(paths, root=d, max_bytes=4096)
    reasons = {f.source: f.reason for f in report.failed}
    assert [f.source for f in report.ingested] == ["good.md"]
    expected = {
        "empty.txt": "an empty file (0 bytes)",
        "blank.md": "no text to index",
        "huge.txt": "too large: 5,000 bytes, over the limit of 4,096 bytes",
        "garbage.pdf": "not a PDF (it starts with b'this is ', not %PDF)",
        "broken.pdf": "an unreadable PDF",
        "locked.pdf": "an encrypted PDF (it needs a password)",
        "scan.pdf": "no text layer on any of its 2 page(s) (a scan?)",
        "fake.png": "not an image (it starts with b'GIF? no:')",
        "latin1.txt": "not UTF-8 text (byte 0xe9 at offset 3)",
        "binary.txt": "a binary file, not text",
        "data.xyz": "unsupported file type '.xyz'",
        "missing.md": "no such file or folder",
    }
    assert set(reasons) == set(expected)
    for source, start in expected.items():
        assert (reasons[source] or "").startswith(start), (source, reasons[source])
    assert not report.ok
    assert [s for s, _ in texts(mem)] == ["good.md"]
    assert "12 failed" in report.summary()


def test_images_are_read_through_the_ocr_given(tmp_path: Path) -> None:
    png = tmp_path / "notice.png"
    png.write_bytes(make_png())
    seen: list[bytes] = []

    def ocr(image: bytes) -> str:
        seen.append(image)
        return "NOTICE\nThe office is closed on Friday."

    with open_memory("memory", embedder=HashEmbed(), ocr=ocr) as memory:
        report = memory.ingest_sync([png], root=tmp_path)
        assert [(f.status, f.chunks) for f in report.files] == [("ingested", 1)]
        (hit,) = memory.search_sync("office closed", k=1, mode="keyword")
        assert hit.text == "NOTICE\nThe office is closed on Friday."
        assert hit.metadata["kind"] == "image" and seen == [png.read_bytes()]

    class Reader:  # an OCRModel with a blocking read, like RapidOCRReader
        name = "reader"

        def read_sync(self, image: bytes) -> OCRResult:
            return OCRResult((OCRLine("Invoice 1042", ((0, 0),), 0.9),), self.name)

    class AsyncReader:  # an OCRModel with only the protocol's async read
        name = "async-reader"

        async def read(self, image: bytes) -> OCRResult:
            return OCRResult((OCRLine("Receipt 77", ((0, 0),), 0.9),), self.name)

    for reader, text in ((Reader(), "Invoice 1042"), (AsyncReader(), "Receipt 77")):
        with open_memory("memory", embedder=HashEmbed(), ocr=reader) as memory:
            assert memory.ingest_sync([png]).ok
            assert memory.search_sync(text, mode="keyword")[0].text == text

    blank = tmp_path / "blank.png"
    blank.write_bytes(make_png(2, 2))
    with open_memory("memory", embedder=HashEmbed(), ocr=lambda image: "  ") as memory:
        (result,) = memory.ingest_sync([blank]).files
        assert result.reason == "OCR found no text in the image"


def test_chunks_are_plain_values() -> None:
    c = Chunk("text", ("A", "B"), 3, 0, 4, 1)
    assert c.indexed_text() == "A > B\ntext"
    assert isinstance(IngestReport().summary(), str)
