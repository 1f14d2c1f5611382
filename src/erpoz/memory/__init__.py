"""Memory: documents to search, conversations to keep, and context budgeting.

``open_memory()`` gives a :class:`Memory` over one database: a SQLite file
(``.erpoz/memory.db`` by default) or PostgreSQL (``postgresql://…``, shared by many workers).
``ingest`` files (text, Markdown, HTML, PDF, images through OCR) into chunks that follow their
structure, embedded with the local MiniLM by default; ``search`` them by vector (exact), keyword
(full-text) or both (reciprocal-rank fusion), with filters and MMR diversity;
``conversation(session)`` keeps a session's turns durably, with windows and summaries;
``fit_context`` fits a system prompt, turns and passages into a model's context window.
``PostgresMemoryDB`` and ``PostgresVectorStore`` are imported on first use (they need psycopg).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ..lazy import lazy_getattr
from ._budget import ContextFit, Dropped, fit_context
from ._chunking import DEFAULT_OVERLAP, DEFAULT_TARGET, chunk_document
from ._conversation import Conversation, SQLiteTurns, Summarizer, Turn
from ._db import MemoryDB
from ._errors import ContextBudgetError, IngestError, MemoryStoreError, QueryError
from ._facade import (
    DEFAULT_MEMORY_PATH,
    Memory,
    SessionMemory,
    open_database,
    open_memory,
    project_memory,
    resolve_memory_url,
)
from ._ingest import DEFAULT_MAX_BYTES, FileResult, Ingestor, IngestReport, ingest
from ._loaders import EXTENSIONS
from ._models import embed_texts, token_counter
from ._protocol import MemoryDatabase, TurnStore, VectorStore
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
    "MemoryDatabase",
    "MemoryStoreError",
    "PostgresMemoryDB",
    "PostgresVectorStore",
    "QueryError",
    "SQLiteTurns",
    "SQLiteVectorStore",
    "SearchMode",
    "SessionMemory",
    "Summarizer",
    "Turn",
    "TurnStore",
    "VectorStore",
    "chunk_document",
    "demo_corpus",
    "embed_texts",
    "fit_context",
    "ingest",
    "open_database",
    "open_memory",
    "project_memory",
    "resolve_memory_url",
    "token_counter",
]


def demo_corpus() -> Path:
    """The folder of the demo corpus that ships with erpoz: a few short documents of a
    fictional company (policies, FAQ, a manual), written for the project."""
    return Path(str(resources.files(__package__) / "demo_corpus"))


_LAZY = {"PostgresMemoryDB": "._postgres_db", "PostgresVectorStore": "._postgres"}
"""Imported when first used: they need psycopg, an optional dependency."""
__getattr__: Callable[[str], Any] = lazy_getattr(__name__, _LAZY, globals())
