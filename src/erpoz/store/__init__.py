"""The run store: append-only, hash-chained events and the Merkle tree over them; SQLite
(default), PostgreSQL and in-memory backends (``PostgresStore`` is imported on first use: it
needs psycopg)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..lazy import lazy_getattr
from ._ledger import BudgetScope, Hold
from ._limits import LimitState, MemoryRates, RateGrant
from ._memory import MemoryStore
from ._merkle import EMPTY_ROOT, NODE_STRIDE, Leaf, TreeHead, fold_right, leaf_hash, node_hash
from ._model import (
    ENGINE_KINDS,
    EVENT_SET,
    GENESIS,
    MESSAGE_RECEIVED,
    TERMINAL,
    TIMER_SET,
    ChainRow,
    Event,
    NewRun,
    RecordedHead,
    RunInfo,
    chain_hash,
    heads_digest,
)
from ._owner import new_owner
from ._pg_schema import apply_migrations as apply_pg_migrations
from ._pg_schema import schema_version as pg_schema_version
from ._protocol import (
    AuditShards,
    BudgetLedger,
    Claim,
    ConcurrencySlots,
    LimitStates,
    Mailbox,
    MerkleLog,
    RateLimits,
    RunQueue,
    RunWriter,
    ScheduleBook,
    Store,
)
from ._schedules import ScheduleRow, Tick, TickClaim
from ._url import redact as redact_url

if TYPE_CHECKING:  # imported on first use (see __getattr__): a memory store needs neither
    from ._copy import BATCH_EVENTS, MigrationError, MigrationReport, Verify, migrate
    from ._sqlite import SQLiteStore

_LAZY = {
    "PostgresStore": "._postgres",  # psycopg is an optional dependency
    "SQLiteStore": "._sqlite",
    "BATCH_EVENTS": "._copy",
    "MigrationError": "._copy",
    "MigrationReport": "._copy",
    "Verify": "._copy",
    "migrate": "._copy",
}
"""Names imported when first used: SQLite and the migration between stores are not needed by
``--store memory`` (``erpoz run`` of a quick flow, tests), PostgreSQL needs psycopg."""

__all__ = [
    "BATCH_EVENTS",
    "DEFAULT_PATH",
    "EMPTY_ROOT",
    "ENGINE_KINDS",
    "EVENT_SET",
    "GENESIS",
    "MESSAGE_RECEIVED",
    "NODE_STRIDE",
    "TERMINAL",
    "TIMER_SET",
    "AuditShards",
    "BudgetLedger",
    "BudgetScope",
    "ChainRow",
    "Claim",
    "ConcurrencySlots",
    "Event",
    "Hold",
    "Leaf",
    "LimitState",
    "LimitStates",
    "Mailbox",
    "MemoryRates",
    "MemoryStore",
    "MerkleLog",
    "MigrationError",
    "MigrationReport",
    "NewRun",
    "PostgresStore",
    "RateGrant",
    "RateLimits",
    "RecordedHead",
    "RunInfo",
    "RunQueue",
    "RunWriter",
    "SQLiteStore",
    "ScheduleBook",
    "ScheduleRow",
    "Store",
    "Tick",
    "TickClaim",
    "TreeHead",
    "Verify",
    "apply_pg_migrations",
    "chain_hash",
    "fold_right",
    "heads_digest",
    "leaf_hash",
    "migrate",
    "new_owner",
    "node_hash",
    "open_store",
    "pg_schema_version",
    "redact_url",
]

DEFAULT_PATH = Path(".erpoz") / "erpoz.db"
DURABILITY = ("sync", "batch", "effects", "memory")
SCHEMES = ("postgresql://", "postgres://", "sqlite:///", "memory://")
"""The URL schemes :func:`open_store` takes (besides a plain path and ``memory``)."""


def open_store(
    url: str | os.PathLike[str] | None = None, *, durability: str = "sync", fsync: bool = False
) -> Store:
    """Open the store named by ``url`` (a path, ``sqlite:///path``, ``postgresql://…`` or
    ``memory``).

    Default: ``$ERPOZ_STORE``, else ``.erpoz/erpoz.db`` under the current directory.
    ``durability`` is ``sync`` (a step's success is committed before dependents start),
    ``batch`` (group commit every 50 ms / 512 events), ``effects`` (committed before anything
    leaves the process: a side-effecting tool call, a model call, a review pause, the run's
    end) or ``memory`` (nothing on disk).
    ``fsync=True`` also syncs every commit to the device (survives power loss, slower).
    """
    if durability not in DURABILITY:
        raise StoreError(f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}")
    raw = os.fspath(url) if url is not None else os.environ.get("ERPOZ_STORE", "")
    if durability == "memory" or raw in ("memory", ":memory:", "memory://"):
        return MemoryStore()
    if raw.startswith(("postgresql://", "postgres://")):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg 3 ({exc}): "
                "pip install 'erpoz[postgres]' (or 'psycopg[binary]>=3.1')"
            ) from exc
        return PostgresStore(raw, durability=durability, fsync=fsync)
    if raw.startswith("sqlite:///"):
        raw = raw[len("sqlite:///") :]
    elif "://" in raw:
        raise StoreError(
            f"unknown store URL {raw!r}: use a file path, sqlite:///PATH, postgresql://… or memory"
        )
    from ._sqlite import SQLiteStore

    return SQLiteStore(Path(raw) if raw else DEFAULT_PATH, durability=durability, fsync=fsync)


__getattr__: Callable[[str], Any] = lazy_getattr(__name__, _LAZY, globals())
