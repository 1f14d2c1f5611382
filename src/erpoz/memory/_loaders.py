"""Reading files into text with their structure: headings, paragraphs, pages.

Text and Markdown keep the file's own characters (positions point into the file); HTML is
reduced to the text a reader sees (scripts, styles and the head left out, headings kept); PDF
gives the text layer of each page (pypdf); an image gives what OCR reads in it. Each parser
raises :class:`IngestError` naming the file and what was wrong with it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from ._errors import IngestError
from ._types import Block, Kind, Parsed, Unit

__all__ = [
    "EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "decode_text",
    "kind_of",
    "parse_html",
    "parse_markdown",
    "parse_pdf",
    "parse_text",
    "sniff_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
EXTENSIONS: dict[str, Kind] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    **dict.fromkeys(IMAGE_EXTENSIONS, "image"),
}


def kind_of(path: Path) -> Kind | None:
    """The kind of file its extension says, or ``None`` for one that is not supported."""
    return EXTENSIONS.get(path.suffix.lower())


def decode_text(data: bytes, path: str) -> str:
    """UTF-8 text (a byte-order mark is dropped), or IngestError saying why not."""
    if b"\x00" in data[:8192]:
        raise IngestError(path, "a binary file, not text (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            path,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it to UTF-8",
        ) from None


# --- plain text -------------------------------------------------------------------------------
_BLANK = re.compile(r"\n[ \t]*\n")


def _paragraphs(text: str, start: int = 0, end: int | None = None) -> Iterator[Block]:
    """The paragraphs (runs of non-blank lines) of ``text[start:end]``."""
    end = len(text) if end is None else end
    pos = start
    for m in _BLANK.finditer(text, start, end):
        yield from _trimmed(text, pos, m.start())
        pos = m.end()
    yield from _trimmed(text, pos, end)


def _trimmed(text: str, start: int, end: int) -> Iterator[Block]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        yield Block("para", start, end)


def parse_text(text: str, kind: Kind = "text", page: int | None = None) -> Parsed:
    """Plain text: paragraphs separated by blank lines, no headings."""
    return Parsed(kind, (Unit(text, tuple(_paragraphs(text)), page),))


# --- Markdown ---------------------------------------------------------------------------------
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(.+?)\1")


def plain_title(text: str) -> str:
    """A heading's text without inline Markdown (links, emphasis, code marks)."""
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    return " ".join(text.split())


def _lines(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, line) of every line, ``end`` before its line break."""
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        yield pos, pos + len(body), body
        pos += len(line)


def parse_markdown(text: str) -> Parsed:
    """Markdown: ATX (``#``) and setext (underlined) headings, paragraphs, fenced code kept
    whole (a ``#`` inside code is not a heading); YAML front matter is left out."""
    blocks: list[Block] = []
    para: list[tuple[int, int]] = []  # (start, end) of the lines of the open paragraph
    fence: str | None = None
    title = ""

    def close() -> None:
        if para:
            blocks.extend(_trimmed(text, para[0][0], para[-1][1]))
            para.clear()

    lines = list(_lines(text))
    first = 0
    if lines and lines[0][2].strip() == "---":  # front matter: skipped up to its closing ---
        for i, (_, _, body) in enumerate(lines[1:60], start=1):
            if body.strip() in ("---", "..."):
                first = i + 1
                break
    for start, end, body in lines[first:]:
        if fence is not None:
            para.append((start, end))
            if body.lstrip().startswith(fence):
                fence = None
                close()
            continue
        m = _FENCE.match(body)
        if m:
            close()
            fence = m.group(1)[0] * 3
            para.append((start, end))
            continue
        m = _ATX.match(body)
        if m:
            close()
            heading = plain_title(m.group(2) or "")
            if heading:
                blocks.append(Block("heading", start, end, len(m.group(1)), heading))
                title = title or heading
            continue
        m = _SETEXT.match(body)
        if m and len(para) == 1:
            heading = plain_title(text[para[0][0] : para[0][1]])
            level = 1 if m.group(1)[0] == "=" else 2
            blocks.append(Block("heading", para[0][0], end, level, heading))
            title = title or heading
            para.clear()
            continue
        if _RULE.match(body):
            close()
            continue
        if not body.strip():
            close()
            continue
        para.append((start, end))
    close()
    return Parsed("markdown", (Unit(text, tuple(blocks)),), title)


# --- HTML -------------------------------------------------------------------------------------
_SKIP = frozenset(
    {"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "nav"}
)
# fmt: off
_BLOCK = frozenset({
    "p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "ul", "ol",
    "li", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "blockquote", "pre", "figure",
    "figcaption", "form", "fieldset", "address", "details", "summary", "hr", "body", "html",
})
# fmt: on
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BR = "\u2028"  # a <br>, told apart from the newlines of the source
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col"})


class _HTMLText(HTMLParser):
    """Collects headings and paragraphs of the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[str, int, str]] = []  # (kind, level, text)
        self.buf: list[str] = []
        self.skip = 0  # depth inside elements whose content is not shown
        self.pre = 0
        self.heading: int | None = None
        self.title: list[str] = []
        self.in_title = False

    def flush(self) -> None:
        raw = "".join(self.buf)
        self.buf.clear()
        if self.heading is not None:
            text = " ".join(raw.replace(_BR, " ").split())
            if text:
                self.items.append(("heading", self.heading, text))
            return
        if self.pre:
            text = raw.replace(_BR, "\n").strip("\n")
        else:
            lines = (" ".join(segment.split()) for segment in raw.split(_BR))
            text = "\n".join(line for line in lines if line)
        if text.strip():
            self.items.append(("para", 0, text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
            return
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip += 1
            return
        if self.skip:
            return
        if tag in _HEADINGS:
            self.flush()
            self.heading = _HEADINGS[tag]
        elif tag in _BLOCK:
            self.flush()
            if tag == "pre":
                self.pre += 1
        elif tag == "br":
            self.buf.append(_BR)
        elif tag in ("td", "th"):
            self.buf.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and not self.skip:
            self.buf.append(_BR)
        elif tag in _BLOCK and not self.skip:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag in _HEADINGS and self.heading is not None:
            self.flush()
            self.heading = None
        elif tag in _BLOCK:
            self.flush()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.buf.append(data)


def parse_html(html: str) -> Parsed:
    """HTML: the visible text as headings (``h1``-``h6``) and paragraphs (block elements);
    ``script``, ``style``, ``head`` and the like are left out. Positions refer to the
    extracted text: the blocks joined by blank lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    parser.flush()
    pieces: list[str] = []
    blocks: list[Block] = []
    pos = 0
    for kind, level, text in parser.items:
        if pieces:
            pieces.append("\n\n")
            pos += 2
        pieces.append(text)
        if kind == "heading":
            blocks.append(Block("heading", pos, pos + len(text), level, text))
        else:
            blocks.append(Block("para", pos, pos + len(text)))
        pos += len(text)
    title = " ".join("".join(parser.title).split())
    return Parsed("html", (Unit("".join(pieces), tuple(blocks)),), title)


# --- PDF --------------------------------------------------------------------------------------
def parse_pdf(data: bytes, path: str) -> Parsed:
    """The text layer of each page (pypdf), page numbers kept (1-based). An encrypted PDF is
    read when it opens with an empty password; pages without text are noted and left out."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is a dependency
        raise IngestError(path, "reading PDF needs pypdf: pip install pypdf") from None
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise IngestError(path, f"not a PDF (it starts with {data[:8]!r}, not %PDF)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # pypdf raises several kinds here (missing crypto deps …)
                raise IngestError(path, f"an encrypted PDF that cannot be opened: {exc}") from None
            if not opened:
                raise IngestError(
                    path, "an encrypted PDF (it needs a password); decrypt it first"
                ) from None
        units: list[Unit] = []
        empty: list[int] = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\x00", "")
            if text.strip():
                units.append(Unit(text, tuple(_paragraphs(text)), number))
            else:
                empty.append(number)
        count = len(reader.pages)
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise IngestError(path, f"an unreadable PDF: {type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise IngestError(path, "an unreadable PDF (its structure nests too deeply)") from None
    if count == 0:
        raise IngestError(path, "a PDF without pages")
    if not units:
        raise IngestError(
            path,
            f"no text layer on any of its {count} page(s) (a scan?); OCR the page images "
            "and ingest those",
        )
    notes: tuple[str, ...] = ()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" …" if len(empty) > 10 else "")
        notes = (f"page(s) {shown} have no text layer and were left out",)
    return Parsed("pdf", tuple(units), notes=notes)


# --- images -----------------------------------------------------------------------------------
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_image(data: bytes) -> str | None:
    """The image format the bytes start with (PNG, JPEG, GIF, BMP, TIFF, WebP), or ``None``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None
