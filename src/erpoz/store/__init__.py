"""The run store: append-only, hash-chained events; SQLite (default) and in-memory backends."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError
from ._memory import MemoryStore
from ._model import (
    ENGINE_KINDS,
    GENESIS,
    TERMINAL,
    Event,
    NewRun,
    RunInfo,
    chain_hash,
)
from ._protocol import RunWriter, Store
from ._sqlite import SQLiteStore

__all__ = [
    "DEFAULT_PATH",
    "ENGINE_KINDS",
    "GENESIS",
    "TERMINAL",
    "Event",
    "MemoryStore",
    "NewRun",
    "RunInfo",
    "RunWriter",
    "SQLiteStore",
    "Store",
    "chain_hash",
    "open_store",
]

DEFAULT_PATH = Path(".erpoz") / "erpoz.db"
DURABILITY = ("sync", "batch", "memory")


def open_store(
    url: str | os.PathLike[str] | None = None, *, durability: str = "sync", fsync: bool = False
) -> Store:
    """Open the store named by ``url`` (a path, ``sqlite:///path`` or ``memory``).

    Default: ``$ERPOZ_STORE``, else ``.erpoz/erpoz.db`` under the current directory.
    ``durability`` is ``sync`` (a step's success is committed before dependents start),
    ``batch`` (group commit every 50 ms / 512 events) or ``memory`` (nothing on disk).
    ``fsync=True`` also syncs every commit to the device (survives power loss, slower).
    """
    if durability not in DURABILITY:
        raise StoreError(f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}")
    raw = os.fspath(url) if url is not None else os.environ.get("ERPOZ_STORE", "")
    if durability == "memory" or raw in ("memory", ":memory:", "memory://"):
        return MemoryStore()
    if raw.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "the PostgreSQL store is not implemented yet (it comes with the scale-out work); "
            "use a SQLite path"
        )
    if raw.startswith("sqlite:///"):
        raw = raw[len("sqlite:///") :]
    elif "://" in raw:
        raise StoreError(f"unknown store URL {raw!r}: use a file path, sqlite:///PATH or memory")
    return SQLiteStore(Path(raw) if raw else DEFAULT_PATH, durability=durability, fsync=fsync)
