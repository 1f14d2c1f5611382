"""Memory: documents to search, conversations to keep, and context budgeting.

``open_memory()`` gives a :class:`Memory` over one SQLite database (``.erpoz/memory.db`` by
default): ``ingest`` files (text, Markdown, HTML, PDF, images through OCR) into chunks that
follow their structure, embedded with the local MiniLM by default; ``search`` them by vector,
keyword (FTS5 BM25) or both (reciprocal-rank fusion), with filters and MMR diversity;
``conversation(session)`` keeps a session's turns durably, with windows and summaries;
``fit_context`` fits a system prompt, turns and passages into a model's context window.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ._budget import ContextFit, Dropped, fit_context
from ._chunking import DEFAULT_OVERLAP, DEFAULT_TARGET, chunk_document
from ._conversation import Conversation, Summarizer, Turn
from ._db import MemoryDB
from ._errors import ContextBudgetError, IngestError, MemoryStoreError, QueryError
from ._facade import (
    DEFAULT_MEMORY_PATH,
    Memory,
    SessionMemory,
    open_memory,
    project_memory,
    resolve_memory_url,
)
from ._ingest import DEFAULT_MAX_BYTES, FileResult, Ingestor, IngestReport, ingest
from ._loaders import EXTENSIONS
from ._models import embed_texts, token_counter
from ._protocol import VectorStore
from ._sqlite import SQLiteVectorStore
from ._types import Chunk, DocumentInfo, Hit, SearchMode

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MEMORY_PATH",
    "DEFAULT_OVERLAP",
    "DEFAULT_TARGET",
    "EXTENSIONS",
    "Chunk",
    "ContextBudgetError",
    "ContextFit",
    "Conversation",
    "DocumentInfo",
    "Dropped",
    "FileResult",
    "Hit",
    "IngestError",
    "IngestReport",
    "Ingestor",
    "Memory",
    "MemoryDB",
    "MemoryStoreError",
    "QueryError",
    "SQLiteVectorStore",
    "SearchMode",
    "SessionMemory",
    "Summarizer",
    "Turn",
    "VectorStore",
    "chunk_document",
    "demo_corpus",
    "embed_texts",
    "fit_context",
    "ingest",
    "open_memory",
    "project_memory",
    "resolve_memory_url",
    "token_counter",
]


def demo_corpus() -> Path:
    """The folder of the demo corpus that ships with erpoz: a few short documents of a
    fictional company (policies, FAQ, a manual), written for the project."""
    return Path(str(resources.files(__package__) / "demo_corpus"))
