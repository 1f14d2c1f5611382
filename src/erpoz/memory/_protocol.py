"""The narrow protocols of memory's storage: a vector store (documents' chunks and their
vectors), a turn store (conversations) and the database that holds both. SQLite (embedded) and
PostgreSQL (shared) implement them; vectors are unit-length float32 rows, and no store ever
embeds anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._types import Chunk, DocumentInfo, Hit, SearchMode

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._conversation import Turn

__all__ = ["MemoryDatabase", "TurnStore", "VectorStore"]


@runtime_checkable
class VectorStore(Protocol):
    """Documents' chunks with their vectors: replaced a document at a time, searched by
    vector, keyword or both.

    ``filters`` maps ``source`` (shell patterns), ``kind``, ``page``, ``heading`` (patterns on
    the heading path joined by ``" > "``) or any key of a document's metadata to the value
    wanted (a list means any of them). ``mmr`` (0..1) re-ranks the best candidates for
    diversity: 1 is relevance only, 0 diversity only.
    """

    def replace_document(
        self,
        info: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        *,
        embedder: str,
    ) -> None:
        """Make ``chunks`` (row ``i`` of ``vectors`` is chunk ``i``'s) the document's only
        chunks, all or nothing: on any failure the store holds what it held before."""
        ...

    def delete_document(self, source: str) -> bool:
        """Forget a document and its chunks; whether there was one."""
        ...

    def get_document(self, source: str) -> DocumentInfo | None: ...

    def documents(self) -> list[DocumentInfo]: ...

    def embedding(self) -> tuple[str, int] | None:
        """The name of the embedder the stored vectors come from, and their dimension
        (``None`` while the store is empty)."""
        ...

    def search(
        self,
        query: str,
        vector: npt.NDArray[np.float32] | None,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        filters: Mapping[str, Any] | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        """The best ``k`` chunks for ``query`` (``vector`` is its embedding, needed by the
        ``vector`` and ``hybrid`` modes), best first."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TurnStore(Protocol):
    """The turns of every session, append-only. Windows and summaries are worked out above it
    (:class:`~erpoz.memory.Conversation`), so every store gives them alike."""

    def append(self, turn: Turn, key: str | None = None) -> Turn:
        """Store ``turn`` as its session's next one; it comes back with its ``seq``
        (1, 2, … per session, never two alike, even with writers in several processes).

        With a ``key`` (a step's idempotency key for this write), a turn stored under the same
        key in the session before is returned as it was stored, and nothing is added: a step
        that runs again after a crash or a retry does not write the turn twice."""
        ...

    def turns(self, session: str) -> list[Turn]:
        """Every turn and summary of the session, oldest first."""
        ...

    def active(self, session: str) -> tuple[Turn | None, list[Turn]]:
        """The session's latest summary, and the turns (not summaries) after those it covers,
        oldest first, read at one moment."""
        ...

    def delete(self, session: str) -> int:
        """Erase the session's turns; how many there were."""
        ...


class MemoryDatabase(Protocol):
    """The one database a :class:`~erpoz.memory.Memory` keeps documents and conversations in.
    ``path`` says where, in messages (a PostgreSQL URL without its password)."""

    path: str

    def vector_store(self) -> VectorStore: ...

    def turn_store(self) -> TurnStore: ...

    def close(self) -> None:
        """Release the connections; closing twice is harmless."""
        ...
