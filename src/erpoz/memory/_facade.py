"""``Memory``: what a step reaches through ``ctx.memory``: documents to search, conversations
to keep, and context budgeting, over one memory database (SQLite, or PostgreSQL to share it
between processes and machines).

Every method has an async form for steps (the blocking work runs on a worker thread; MiniLM
runs on its own model thread) and a ``*_sync`` form for scripts and the CLI.

A step's ``ctx.memory`` is bound to the step's effects journal: the async writes (turns,
summaries, ingestion, forgetting, deleting a session) are recorded in the run's log as
``memory_written`` events, and turns and summaries are written under the step's idempotency
key for them, so that a step that runs again (retried, resumed after a crash) does not write
them twice.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._budget import ContextFit, fit_context
from ._conversation import Conversation, Turn
from ._db import MemoryDB
from ._errors import MemoryStoreError, redact
from ._ingest import FileResult, Ingestor, IngestReport
from ._models import default_embedder, embed_texts, estimate_tokens, model_name, token_counter
from ._protocol import MemoryDatabase, TurnStore, VectorStore
from ._search import check_filters, check_search
from ._types import DocumentInfo, Hit, SearchMode

if TYPE_CHECKING:
    from ..flow import Journal

__all__ = [
    "DEFAULT_MEMORY_PATH",
    "Memory",
    "SessionMemory",
    "open_database",
    "open_memory",
    "project_memory",
    "resolve_memory_url",
]

DEFAULT_MEMORY_PATH = Path(".erpoz") / "memory.db"

AnySummarizer = Callable[[Sequence[Turn]], str | Awaitable[str]]


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def resolve_memory_url(url: str | os.PathLike[str] | None) -> str:
    """What ``url`` names: a SQLite path (a path, ``sqlite:///PATH``), ``:memory:`` (for
    ``memory``) or a PostgreSQL URL (``postgresql://…``, as given); default
    ``$ERPOZ_MEMORY``, else ``.erpoz/memory.db``."""
    raw = os.fspath(url) if url is not None else os.environ.get("ERPOZ_MEMORY", "")
    if raw in ("memory", ":memory:", "memory://"):
        return ":memory:"
    if raw.startswith(POSTGRES_SCHEMES):
        return raw
    if raw.startswith("sqlite:///"):
        return raw[len("sqlite:///") :]
    if "://" in raw:
        raise MemoryStoreError(
            f"unknown memory URL {redact(raw)!r}: use a file path, sqlite:///PATH, "
            "postgresql://… or memory"
        )
    return raw or str(DEFAULT_MEMORY_PATH)


def open_database(url: str | os.PathLike[str] | None = None) -> MemoryDatabase:
    """The memory database ``url`` names (as :func:`resolve_memory_url` reads it), opened and
    brought to the current schema."""
    target = resolve_memory_url(url)
    if not target.startswith(POSTGRES_SCHEMES):
        return MemoryDB(target)
    try:
        from ._postgres_db import PostgresMemoryDB
    except ImportError as exc:
        raise MemoryStoreError(
            f"a PostgreSQL memory needs psycopg 3 ({exc}): pip install 'erpoz[postgres]' "
            "(or 'psycopg[binary]>=3.1')",
            path=redact(target),
        ) from exc
    return PostgresMemoryDB(target)


class SessionMemory:
    """One session's conversation, for async code. ``sync`` is the blocking
    :class:`Conversation` underneath.

    With a ``summarizer`` and ``summarize_after`` (tokens), :meth:`append` folds the older
    turns into a summary once the active conversation grows past ``summarize_after`` tokens,
    keeping the last ``keep_last`` turns as they are.
    """

    def __init__(
        self,
        conversation: Conversation,
        *,
        summarizer: AnySummarizer | None = None,
        summarize_after: int | None = None,
        keep_last: int = 4,
        journal: Journal | None = None,
    ) -> None:
        self.sync = conversation
        self.session = conversation.session
        self.summarizer = summarizer
        self.summarize_after = summarize_after
        self.keep_last = keep_last
        self._journal = journal

    async def append(self, role: str, text: str, metadata: Mapping[str, Any] | None = None) -> Turn:
        """Add a turn; summarise first if the conversation has grown past its limit. From a
        step: once per step execution, however often the step runs (see the module)."""
        journal = self._journal
        if journal is None:
            turn = await asyncio.to_thread(self.sync.append, role, text, metadata)
        else:
            key = journal.key(f"memory:turn/{self.session}/{role}/{_digest(text)}")
            write = functools.partial(self.sync.append, role, text, metadata, key=key)
            await journal.settle()  # others may read the memory: its causes first on record
            turn = await asyncio.to_thread(write)
            await _wrote(journal, key, "turn", self.session, seq=turn.seq, role=role)
        limit = self.summarize_after
        if self.summarizer is not None and limit is not None and await self._over(limit):
            await self.summarize()
        return turn

    async def _over(self, limit: int) -> bool:
        return await asyncio.to_thread(self.sync.tokens) > limit

    async def window(self, last: int | None = None, max_tokens: int | None = None) -> list[Turn]:
        return await asyncio.to_thread(self.sync.window, last, max_tokens)

    async def messages(self, last: int | None = None, max_tokens: int | None = None) -> list[Any]:
        return await asyncio.to_thread(self.sync.messages, last, max_tokens)

    async def turns(self) -> list[Turn]:
        return await asyncio.to_thread(self.sync.turns)

    async def summarize(
        self, fold: AnySummarizer | None = None, keep_last: int | None = None
    ) -> Turn | None:
        """Fold the older turns into a summary turn with ``fold`` (sync or async; default the
        session's summarizer). ``None`` when there was nothing to fold."""
        fold = fold or self.summarizer
        if fold is None:
            raise ValueError("no summarizer: pass fold= or give one to memory.conversation()")
        keep = self.keep_last if keep_last is None else keep_last
        older = await asyncio.to_thread(self.sync.to_fold, keep)
        if not older:
            return None
        text = fold(older)
        if inspect.isawaitable(text):
            text = await text
        journal = self._journal
        if journal is None:
            return await asyncio.to_thread(self.sync.add_summary, str(text), older)
        covers = [t.seq for t in older if t.kind == "turn"][-1]
        key = journal.key(f"memory:summary/{self.session}/{covers}")
        write = functools.partial(self.sync.add_summary, str(text), older, key=key)
        await journal.settle()
        summary = await asyncio.to_thread(write)
        await _wrote(journal, key, "summary", self.session, seq=summary.seq, covers=covers)
        return summary

    async def delete(self) -> int:
        if self._journal is not None:
            await self._journal.settle()
        deleted = await asyncio.to_thread(self.sync.delete)
        if self._journal is not None:
            key = self._journal.key(f"memory:delete/{self.session}")
            await _wrote(self._journal, key, "delete", self.session, turns=deleted)
        return deleted


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def _wrote(journal: Journal, key: str, op: str, session: str, **detail: Any) -> None:
    """Record a memory write in the run's log (once per key: a write the log holds already is
    not recorded again). Names and numbers only: the text stays in the memory database, where
    a deletion can reach it."""
    if journal.result(key) is not None:
        return
    data = {"op": op, "session": session, **detail, "idempotency_key": key}
    await journal.finish("memory_written", key, data, f'{{"op":"{op}"}}', commit=False)


class Memory:
    """Documents, conversations and context budgeting over one memory database (a
    :class:`MemoryDB` or a PostgreSQL one: see :func:`open_memory`).

    ``embedder`` embeds documents and queries (default: the local MiniLM, loaded on first
    use); ``ocr`` reads images (default: the local RapidOCR); ``count_tokens`` counts the
    tokens of conversation turns and budgets (default: erpoz's estimate). ``store`` replaces
    the database's own vector store.
    """

    def __init__(
        self,
        db: MemoryDatabase,
        *,
        embedder: Any = None,
        ocr: Any = None,
        count_tokens: Callable[[str], int] | None = None,
        store: VectorStore | None = None,
    ) -> None:
        self.db = db
        self.path = db.path
        self.store: VectorStore = store if store is not None else db.vector_store()
        self.turns: TurnStore = db.turn_store()
        self._embedder = embedder
        self.ocr = ocr
        self.count_tokens = count_tokens or estimate_tokens
        self._journal: Journal | None = None
        self._on_read: Callable[[str, str], None] | None = None
        self._base = self  # the memory a step's view shares its lazily loaded models with

    @property
    def embedder(self) -> Any:
        base = self._base
        if base._embedder is None:
            base._embedder = default_embedder()
        return base._embedder

    def bound(self, journal: Journal, on_read: Callable[[str, str], None] | None = None) -> Memory:
        """This memory as a step sees it (``ctx.memory``): the same database and models, its
        writes recorded in the run's log and keyed by the step's ``journal``; ``on_read`` is
        told each text a search returns and its source (untrusted content, for provenance)."""
        view = copy.copy(self)
        view._journal = journal
        view._on_read = on_read
        return view

    # --- documents --------------------------------------------------------------------------
    def ingestor(self, **options: Any) -> Ingestor:
        """An :class:`Ingestor` into this memory (options as for it)."""
        options.setdefault("ocr", self.ocr)
        return Ingestor(self.store, self.embedder, **options)

    def ingest_sync(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        prune: bool = False,
        on_file: Callable[[FileResult], None] | None = None,
        **options: Any,
    ) -> IngestReport:
        """Ingest files and folders (see :class:`Ingestor` for ``options``)."""
        return self.ingestor(**options).ingest(paths, prune=prune, on_file=on_file)

    async def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        prune: bool = False,
        **options: Any,
    ) -> IngestReport:
        report = await asyncio.to_thread(self.ingest_sync, paths, prune=prune, **options)
        journal = self._journal
        if journal is not None:  # ingestion is idempotent by content: recorded, not keyed
            files = [
                {"source": f.source, "status": f.status, "chunks": f.chunks} for f in report.files
            ]
            key = journal.key(f"memory:ingest/{_digest(repr(files))}")
            await _wrote(journal, key, "ingest", "", files=files)
        return report

    def search_sync(
        self,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        """The ``k`` chunks that best match ``query``, best first (see
        :class:`VectorStore.search` for ``filters`` and ``mmr``). An empty memory finds
        nothing."""
        check_search(query, k, mode, mmr)
        check_filters(filters)
        vector = None
        if mode != "keyword":
            stored = self.store.embedding()
            if stored is None:
                return []
            name = model_name(self.embedder)
            if stored[0] != name:
                raise MemoryStoreError(
                    f"the documents in this memory were embedded with '{stored[0]}', and "
                    f"queries would be embedded with '{name}'; use the same embedder, or a "
                    "keyword search",
                    path=self.path,
                )
            vector = embed_texts(self.embedder, [query])[0]
        return self.store.search(query, vector, k=k, mode=mode, filters=filters, mmr=mmr)

    async def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        hits = await asyncio.to_thread(
            self.search_sync, query, k=k, mode=mode, filters=filters, mmr=mmr
        )
        if self._on_read is not None:
            for h in hits:
                self._on_read(h.text, f"memory:{h.source}")
        return hits

    def forget_sync(self, source: str) -> bool:
        """Forget a document (by its source name) and its chunks; whether there was one."""
        return self.store.delete_document(source)

    async def forget(self, source: str) -> bool:
        found = await asyncio.to_thread(self.forget_sync, source)
        if self._journal is not None:
            key = self._journal.key(f"memory:forget/{source}")
            await _wrote(self._journal, key, "forget", "", source=source, found=found)
        return found

    def documents_sync(self) -> list[DocumentInfo]:
        return self.store.documents()

    async def documents(self) -> list[DocumentInfo]:
        return await asyncio.to_thread(self.documents_sync)

    # --- conversations ----------------------------------------------------------------------
    def conversation(
        self,
        session: str,
        *,
        summarizer: AnySummarizer | None = None,
        summarize_after: int | None = None,
        keep_last: int = 4,
    ) -> SessionMemory:
        """The conversation of ``session`` (created by its first turn)."""
        return SessionMemory(
            Conversation(self.turns, session, self.count_tokens),
            summarizer=summarizer,
            summarize_after=summarize_after,
            keep_last=keep_last,
            journal=self._journal,
        )

    # --- budgeting --------------------------------------------------------------------------
    def fit_context(
        self,
        system: str | None,
        memory_messages: Sequence[Any],
        passages: Sequence[Any],
        window: int | None = None,
        reserve: int = 0,
        count_tokens: Callable[[str], int] | None = None,
        *,
        model: object | None = None,
    ) -> ContextFit:
        """:func:`fit_context`, counting with ``model``'s tokenizer when a model is given
        (its ``context_window`` is the default ``window`` for a configured model)."""
        if window is None:
            spec = getattr(model, "spec", None)
            window = getattr(spec, "context_window", None)
            if window is None:
                raise ValueError("give window= (or a configured model that has one)")
        if count_tokens is None:
            count_tokens = token_counter(model) if model is not None else self.count_tokens
        return fit_context(system, memory_messages, passages, window, reserve, count_tokens)

    # --- life -------------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()
        self.db.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Memory:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_memory(
    path_or_url: str | os.PathLike[str] | None = None,
    *,
    embedder: Any = None,
    ocr: Any = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Memory:
    """Open (creating if missing) the memory database ``path_or_url``: a SQLite path,
    ``sqlite:///PATH``, ``memory`` (nothing kept) or ``postgresql://…`` (shared by every
    process that opens it; needs ``erpoz[postgres]``); default ``$ERPOZ_MEMORY``, else
    ``.erpoz/memory.db``."""
    return Memory(
        open_database(path_or_url),
        embedder=embedder,
        ocr=ocr,
        count_tokens=count_tokens,
    )


_project: dict[str, Memory] = {}
_project_lock = threading.Lock()


def project_memory() -> Memory:
    """The project's memory (``$ERPOZ_MEMORY``, else ``.erpoz/memory.db`` under the current
    directory) with the default models, opened once per process and per path or URL: what the
    assembly of ``erpoz run``, ``erpoz serve`` and ``erpoz.run``
    (:func:`erpoz.project.project_services`) gives a step's ``ctx.memory`` when no memory was
    named. The engine never calls it: an engine given no :class:`Memory` service has none."""
    path = resolve_memory_url(None)
    same = path == ":memory:" or path.startswith(POSTGRES_SCHEMES)
    key = path if same else os.path.abspath(path)
    with _project_lock:
        memory = _project.get(key)
        if memory is None:
            memory = _project[key] = open_memory(path)
        return memory
