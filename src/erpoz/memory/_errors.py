"""The errors of the memory package. Each names the file, the database or the argument at fault."""

from __future__ import annotations

from ..errors import ErpozError, StoreError
from ..store import redact_url as redact

__all__ = ["ContextBudgetError", "IngestError", "MemoryStoreError", "QueryError", "redact"]

INSTALL_HINT = "pip install 'erpoz[local]'"


class IngestError(ErpozError):
    """One file could not be ingested (unreadable, encrypted, too large, not what its name says,
    empty …). ``path`` is the file, ``reason`` what was wrong with it. Ingestion of the other
    files goes on: the report lists this error against the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class MemoryStoreError(StoreError):
    """The memory database cannot be used: locked, corrupt, unreachable, or it holds vectors
    of another embedding model than the one given. ``path`` is the file or the URL (its
    password hidden)."""


class QueryError(ErpozError):
    """A search was asked for wrongly (unknown mode, k < 1, a bad filter, an MMR weight outside
    [0, 1], an empty query)."""

    retryable = False


class ContextBudgetError(ErpozError):
    """Nothing sensible fits the context window: the system prompt alone is larger than the
    window less the reserve."""

    retryable = False
