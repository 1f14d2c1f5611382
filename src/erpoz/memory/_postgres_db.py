"""The memory database on PostgreSQL, through psycopg 3 (blocking: memory's work runs on worker
threads), shared by every process that opens the same URL.

Its tables are named ``memory_*`` and its schema version lives in ``memory_schema_version``,
so they sit beside the run store's tables in one database and schema without clashing.
Numbered migrations (``migrations/postgres/NNNN_*.sql``, shipped with erpoz) run when it is
opened, under a session-level advisory lock (per schema), so that two processes opening a blank
database migrate it once.

Connections: each thread takes one for an operation and gives it back; up to
:data:`IDLE_CONNECTIONS` are kept open between operations. A connection found broken (the
server restarted, an idle connection was cut) is dropped with the other idle ones, and the
operation runs once more on a fresh connection, unless it may have committed already.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import pq

from ..store import apply_pg_migrations, pg_schema_version
from ._errors import MemoryStoreError, redact
from ._postgres import PostgresVectorStore
from ._postgres_conversation import PostgresTurns

__all__ = [
    "CONNECT_TIMEOUT_S",
    "IDLE_CONNECTIONS",
    "PostgresMemoryDB",
    "migrations",
    "read_version",
]

CONNECT_TIMEOUT_S = 5
IDLE_CONNECTIONS = 4

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")
Mode = Literal["read", "snapshot", "write"]

_MIGRATION_KEY = "hashtext('erpoz.memory.migrate.' || coalesce(current_schema(), ''))"


def migrations() -> list[tuple[int, str]]:
    """The numbered SQL migrations of the memory on PostgreSQL, in order."""
    folder = resources.files("erpoz.memory").joinpath("migrations/postgres")
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def read_version(db: Conn) -> int:
    """The memory's schema version in the connection's schema (0: none yet)."""
    return pg_schema_version(db, "memory_schema_version")


class PostgresMemoryDB:
    """The shared :class:`~erpoz.memory.MemoryDatabase`: the memory in a PostgreSQL database.

    ``url`` is a libpq URL (``postgresql://user@host:5432/db``; ``?options=-csearch_path=s``
    picks a schema). ``path`` is the URL with its password hidden.
    """

    def __init__(self, url: str) -> None:
        self._conninfo = url
        self.path = redact(url)
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        self._migrate()

    def translate(self, exc: psycopg.Error, doing: str) -> MemoryStoreError:
        """A driver error as a MemoryStoreError that says what was being done, where, and what
        to do about it."""
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            return MemoryStoreError(
                f"{doing}: cannot reach PostgreSQL ({msg}); is the server running and the URL "
                "right? Then try again",
                path=self.path,
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return MemoryStoreError(
                f"{doing}: {msg}; the role of the URL needs CREATE on its schema (for the "
                "memory_* tables) and SELECT, INSERT, UPDATE, DELETE on those tables",
                path=self.path,
            )
        if isinstance(exc, psycopg.errors.InvalidSchemaName):
            return MemoryStoreError(
                f"{doing}: no schema of the URL's search_path exists ({msg}); create it "
                "(CREATE SCHEMA …) or name another in ?options=-csearch_path%3D…",
                path=self.path,
            )
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return MemoryStoreError(
                f"{doing}: {msg}; the memory's tables are gone from the schema (dropped while "
                "erpoz ran?): open the memory again to create them",
                path=self.path,
            )
        return MemoryStoreError(f"{doing}: PostgreSQL refused it ({msg})", path=self.path)

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> Conn:
        return psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="erpoz-memory",
        )

    def _take(self) -> tuple[Conn, bool]:
        """A connection, and whether it was idle in the pool (it may have broken since)."""
        with self._lock:
            if self._closed:
                raise MemoryStoreError("the memory database is closed", path=self.path)
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, conn: Conn) -> None:
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
            stale = [] if healthy else self._idle[:]  # a broken one: the others likely too
            if not healthy:
                self._idle.clear()
        for c in [conn, *stale]:
            c.close()

    def run(self, doing: str, fn: Callable[[Conn], T], mode: Mode = "read") -> T:
        """``fn(connection)``: as it is (``read``), in a read-only snapshot of the database
        (``snapshot``: every statement of ``fn`` sees the same data) or in one transaction
        (``write``: all or nothing). Driver errors come out as :class:`MemoryStoreError`
        saying what was being ``doing``."""
        try:
            return self._run(fn, mode, retry=True)
        except psycopg.Error as exc:
            raise self.translate(exc, doing) from exc

    def _run(self, fn: Callable[[Conn], T], mode: Mode, *, retry: bool) -> T:
        conn, reused = self._take()
        committing = False
        try:
            if mode == "read":
                return fn(conn)
            with conn.transaction():
                if mode == "snapshot":
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                result = fn(conn)
                committing = True
            return result
        except psycopg.OperationalError:
            if not (retry and reused and conn.broken) or committing:
                raise
        finally:
            self._give_back(conn)
        return self._run(fn, mode, retry=False)  # the idle connection had broken: once more

    # --- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        known = migrations()
        latest = known[-1][0]
        try:
            db = self._connect()
        except psycopg.Error as exc:
            raise self.translate(exc, "cannot open the memory database") from exc
        try:
            if read_version(db) != latest:
                # One process migrates; others wait, then see it. A session lock taken before
                # the transaction: the transaction then starts with a fresh view of the catalog.
                db.execute(f"SELECT pg_advisory_lock({_MIGRATION_KEY})")
                try:
                    with db.transaction():
                        self._apply(db, known)
                finally:
                    db.execute(f"SELECT pg_advisory_unlock({_MIGRATION_KEY})")
        except psycopg.Error as exc:
            db.close()
            raise self.translate(exc, "cannot create the memory's tables") from exc
        except BaseException:
            db.close()
            raise
        self._give_back(db)

    def _apply(self, db: Conn, known: list[tuple[int, str]]) -> None:
        apply_pg_migrations(
            db,
            known,
            "memory_schema_version",
            too_new=lambda current, latest: MemoryStoreError(
                f"the memory database has schema version {current}, newer than this erpoz "
                f"knows ({latest}); upgrade erpoz",
                path=self.path,
            ),
        )

    @property
    def schema_version(self) -> int:
        return self.run("cannot read the schema version", read_version)

    # --- what lives in it -------------------------------------------------------------------
    def vector_store(self) -> PostgresVectorStore:
        return PostgresVectorStore(self)

    def turn_store(self) -> PostgresTurns:
        return PostgresTurns(self)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()
