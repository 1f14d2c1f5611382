"""Copy a run store into another — SQLite ⇄ PostgreSQL, or between two stores of one kind — and
prove the copy. ``erpoz migrate`` is the command; :func:`migrate` does the work.

How the copy stays trustworthy:

* the source's chains are verified first (``erpoz audit verify``'s own :func:`verify`); a
  source that does not verify is refused, naming the first bad event, unless ``force``;
* the source is read in one snapshot (a read transaction), and every event is chained again
  as it is read, so nothing that changed after the check is written;
* a batch holds whole runs: a run's events, their blobs and its runs row commit in one
  destination transaction, so an interrupted migration leaves no half-copied run, and the same
  command continues it;
* nothing in the destination's logs is overwritten or deleted: a run already there with the
  same events is skipped, one that grew in the source gets its new events (and its runs row, a
  projection of the log, is brought up to date), one whose events differ stops the migration
  before anything is written;
* afterwards the chains of the runs written are verified in the destination, and every run in
  both stores must record the same head in both, run by run and as one digest.

Each backend reads and writes with its own SQL (:class:`_SQLiteSide`, :class:`_PostgresSide`),
over connections of its own opened from the store's URL; the stores themselves are opened with
:func:`open_store` first, so that both schemas are migrated to the latest version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import StoreError
from ._merkle import PG_APPEND, TreeHead, leaf_hash, pg_leaves, sqlite_append
from ._model import EVENT_COLUMNS, GENESIS, RecordedHead, chain_hash, heads_digest
from ._owner import owner_is_dead
from ._pieces import Assembler
from ._protocol import Store
from ._schedules import SCHEDULE_COLS, TICK_COLS
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..audit import AuditReport, Problem

if TYPE_CHECKING:
    import psycopg

__all__ = ["ActiveRun", "MigrationError", "MigrationReport", "OnProgress", "migrate"]

BATCH_EVENTS = 10_000
"""A batch (one destination transaction) holds whole runs, up to about this many events (a
longer run is a batch of its own)."""
BATCH_RUNS = 300
"""…and at most this many runs (older SQLite builds bind at most 999 parameters)."""
PAGE_ROWS = 2_000
"""Events are read and written this many at a time inside a batch's transaction."""
CHUNK = 400
"""Keys per ``IN (…)`` list on SQLite."""
CONNECT_TIMEOUT_S = 5
VERIFY_ONE_BY_ONE = 20
"""Up to this many runs written, the destination verifies them one by one; more, all at once."""

Row = tuple[Any, ...]
Segment = tuple[str, int, int]
"""``(run_id, lo, hi)``: a run's events with ``lo < seq <= hi``."""
_E_COLUMNS = ", ".join("e." + c for c in EVENT_COLUMNS.split(", "))
KeyTable = Literal["blobs", "cache"]
_KEY_OF: dict[KeyTable, str] = {"blobs": "sha256", "cache": "key"}

_HEADS = (
    "SELECT r.run_id, r.created, r.status, r.head_seq, r.head_hash, r.owner, r.lease_until, "
    "coalesce((SELECT max(e.seq) FROM events e WHERE e.run_id = r.run_id), 0) FROM runs r"
)
"""Each run's recorded head and its log's last sequence number (the same SQL on both backends)."""
_ORPHAN_BLOBS = "SELECT sha256 FROM blobs EXCEPT SELECT blob FROM events WHERE blob IS NOT NULL"
_UNTREED = (
    "SELECT e.run_id, e.seq, e.hash FROM events e LEFT JOIN merkle_leaves l "
    "ON l.run_id = e.run_id AND l.seq = e.seq WHERE l.pos IS NULL"
)
"""Events without a leaf: copied, not yet in the Merkle tree (the same SQL on both backends)."""
TREE_CHUNK = 50_000
"""Leaves per call of the PostgreSQL append function."""
_CACHE_PAGE = "SELECT key, step, output, created FROM cache WHERE key > {m} ORDER BY key LIMIT {m}"
_MESSAGES_PAGE = (
    "SELECT id, run_id, topic, payload, created FROM messages WHERE id > {m} ORDER BY id LIMIT {m}"
)
_RUN_EVENTS = "SELECT run_id, key, payload, updated FROM run_events ORDER BY run_id, key"
_UPSERT_RUN_EVENT = (
    "INSERT INTO run_events (run_id, key, payload, updated) VALUES ({m}, {m}, {m}, {m}) "
    "ON CONFLICT (run_id, key) DO UPDATE SET payload = excluded.payload, "
    "updated = excluded.updated WHERE excluded.updated > run_events.updated"
)

OnProgress = Callable[[str, int, "int | None"], None]
"""``(phase, done, total)``: what the migration is doing; ``total`` is None when unknown."""


# --- what a migration reports -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ActiveRun:
    """A run left behind because a live process owns it (its lease is in the future)."""

    run_id: str
    owner: str
    lease_until: float
    where: Literal["source", "destination"]

    def __str__(self) -> str:
        until = time.strftime("%H:%M:%S", time.localtime(self.lease_until))
        return f"{self.run_id} (owned by {self.owner} in the {self.where}, lease until {until})"


class Verify(Protocol):
    """How a migration checks chains and heads: ``erpoz.audit.verify``, handed in by the caller
    (the store part does not depend on the audit part, which reads stores)."""

    def __call__(self, store: Store, run_id: str | None = None, /) -> Awaitable[AuditReport]: ...


@dataclass(slots=True)
class MigrationReport:
    """What a migration copied (or, with ``dry_run``, would copy) and what it left alone."""

    source: str
    destination: str
    dry_run: bool = False
    source_runs: int = 0
    source_events: int = 0
    copied: int = 0
    topped_up: list[str] = field(default_factory=list)
    already_there: int = 0
    continued: list[str] = field(default_factory=list)
    active: list[ActiveRun] = field(default_factory=list)
    events: int = 0
    blobs: int = 0
    cache: int = 0
    cache_present: int = 0
    messages: int = 0  # messages to runs (ctx.recv) copied (ids the destination has are kept)
    run_events: int = 0  # events runs published (ctx.set_event)
    state: dict[str, int] = field(default_factory=dict)
    """Rows of schedules, schedule_ticks and limit_grants copied (those the destination
    had already are kept)."""
    seconds: float = 0.0
    copy_seconds: float = 0.0
    runs_verified: int = 0  # runs written, whose chains were verified in the destination
    heads_digest: str = ""  # over every run in both stores (written or already there)
    source_problems: list[Problem] = field(default_factory=list)
    columns_left_out: list[str] = field(default_factory=list)
    tree: TreeCopy | None = None

    @property
    def events_per_second(self) -> float | None:
        """Events copied per second of the whole migration (verifications included)."""
        return self.events / self.seconds if self.seconds > 0 else None

    @property
    def complete(self) -> bool:
        """Whether every run of the source is now in the destination (none left behind as
        active); runs that continued in the destination count as there."""
        return not self.active

    def to_json(self) -> dict[str, Any]:
        rate = self.events_per_second
        return {
            "ok": True,
            "dry_run": self.dry_run,
            "complete": self.complete,
            "source": self.source,
            "destination": self.destination,
            "source_verified": {"runs": self.source_runs, "events": self.source_events},
            "runs": {
                "copied": self.copied,
                "topped_up": len(self.topped_up),
                "already_there": self.already_there,
                "continued_in_destination": len(self.continued),
                "skipped_active": len(self.active),
            },
            "events": self.events,
            "blobs": self.blobs,
            "cache": {"copied": self.cache, "already_there": self.cache_present},
            "messages": self.messages,
            "run_events": self.run_events,
            "state": dict(self.state),
            "seconds": round(self.seconds, 3),
            "copy_seconds": round(self.copy_seconds, 3),
            "events_per_second": None if rate is None else round(rate),
            "runs_verified": self.runs_verified,
            "heads_digest": self.heads_digest,
            "topped_up": self.topped_up,
            "continued_in_destination": self.continued,
            "skipped_active": [
                {
                    "run_id": a.run_id,
                    "owner": a.owner,
                    "lease_until": a.lease_until,
                    "where": a.where,
                }
                for a in self.active
            ],
            "source_problems": [_problem_json(p) for p in self.source_problems],
            "columns_left_out": self.columns_left_out,
            "merkle_tree": None if self.tree is None else self.tree.to_json(),
        }


@dataclass(slots=True)
class TreeCopy:
    """What became of the Merkle tree: ``mirrors`` when the destination's tree is the source's
    (same origin, same leaves in the same order, so checkpoints signed for the source verify
    against the destination); else the copied events were added to the destination's own."""

    mirrors: bool
    appended: int
    size: int = 0
    root: str = ""
    origin: str = ""
    why_not: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "mirrors_source": self.mirrors,
            "appended": self.appended,
            "size": self.size,
            "root": self.root,
            "origin": self.origin,
            "why_not": self.why_not or None,
        }


class MigrationError(StoreError):
    """A migration stopped. ``kind`` says why:

    * ``source`` — the source does not verify; nothing was written (``--force`` copies it as
      it is);
    * ``conflict`` — runs in the destination hold other events than the source's; nothing was
      written (or, when another process wrote to the destination meanwhile, not that batch);
    * ``changed`` — a source event stopped checking out while it was copied; that run was not
      written;
    * ``mismatch`` — after copying, the destination does not match the source.

    ``runs`` names the runs concerned; ``report`` is what was done before it stopped.
    """

    def __init__(
        self,
        kind: Literal["source", "conflict", "changed", "mismatch"],
        message: str,
        *,
        runs: Sequence[str] = (),
        problems: Sequence[Problem] = (),
        report: MigrationReport | None = None,
    ) -> None:
        self.kind = kind
        self.runs = list(runs)
        self.problems = list(problems)
        self.report = report
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": False,
            "error": self.kind,
            "message": str(self),
            "runs": self.runs,
            "problems": [_problem_json(p) for p in self.problems],
            "report": None if self.report is None else self.report.to_json(),
        }


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"run_id": p.run_id, "seq": p.seq, "what": p.what, "detail": p.detail}


# --- one end of a migration -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _RunState:
    """A run as one side holds it: the head its runs row recorded, who owns it, its log's end."""

    run_id: str
    created: float
    status: str
    head_seq: int
    head_hash: str
    owner: str | None
    lease_until: float | None
    last_seq: int

    def recorded(self) -> RecordedHead:
        return (self.run_id, self.created, self.head_seq, self.head_hash, self.status)

    def owned_live(self, now: float) -> bool:
        return (
            self.owner is not None
            and (self.lease_until or 0.0) > now
            and not owner_is_dead(self.owner)
        )


def _run_state(r: Row) -> _RunState:
    return _RunState(str(r[0]), float(r[1]), str(r[2]), int(r[3]), str(r[4]), r[5], r[6], int(r[7]))


@dataclass(frozen=True, slots=True)
class _Task:
    """A run to write: the source's events ``after < seq <= upto`` chained onto ``head``."""

    run_id: str
    after: int
    head: str
    upto: int
    new: bool  # insert its runs row (else update it)
    check: bool  # chain every event again (off for a run copied with its problems, --force)


class _Side(Protocol):
    """One end of a migration, read and written with its backend's SQL."""

    url: str

    async def identity(self) -> str:
        """What names the database itself (two URLs may name the same one)."""
        ...

    async def holds_store(self) -> bool:
        """Whether it holds an erpoz store (migrated at least once)."""
        ...

    async def columns(self) -> dict[str, str]:
        """The runs table's columns and their declared types, in table order."""
        ...

    async def heads(self) -> dict[str, _RunState]: ...

    async def hashes_at(self, at: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The hash of each ``(run_id, seq)`` event there is."""
        ...

    async def events(self, segments: Sequence[Segment]) -> list[Row]:
        """The events ``lo < seq <= hi`` of each segment's run, in ``(run_id, seq)`` order."""
        ...

    async def blobs(self, keys: Sequence[str]) -> dict[str, str]: ...

    async def present(self, table: KeyTable, keys: Sequence[str]) -> set[str]: ...

    async def orphan_blobs(self) -> list[str]:
        """Blobs no event refers to (left by a commit the store refused)."""
        ...

    async def run_rows(self, run_ids: Sequence[str], columns: Sequence[str]) -> list[Row]: ...

    async def cache(self, after: str, limit: int) -> list[Row]: ...

    async def messages(self, after: int, limit: int) -> list[Row]: ...

    async def run_events(self) -> list[Row]: ...

    async def insert_mail(self, messages: Sequence[Row], run_events: Sequence[Row]) -> None:
        """Messages whose id the store lacks, and run events newer than its own."""
        ...

    async def has_table(self, name: str) -> bool: ...

    async def select(self, query: str) -> list[Row]:
        """Rows of a query that takes no parameters (the same SQL on both backends)."""
        ...

    async def insert_ignore(self, table: str, columns: str, rows: Sequence[Row]) -> None:
        """Insert ``rows``; a row whose key the table holds already is left as it is."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def insert_blobs(self, blobs: dict[str, str]) -> None: ...

    async def insert_events(self, rows: Sequence[Row]) -> None: ...

    async def insert_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None: ...

    async def update_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Set ``columns[1:]`` of each run named by ``columns[0]`` (``run_id``)."""
        ...

    async def insert_cache(self, rows: Sequence[Row]) -> None: ...

    async def tree_state(self) -> tuple[str, int, bytes]:
        """The Merkle tree's origin, size and root."""
        ...

    async def tree_leaves(self) -> list[Row]:
        """``(run_id, seq, pos, leaf)`` of every leaf, in the order of the tree."""
        ...

    async def untreed(self) -> list[Row]:
        """``(run_id, seq, hash)`` of the events that have no leaf (copied, not yet in the
        tree)."""
        ...

    async def append_tree(self, events: Sequence[Row], origin: str | None) -> None:
        """Put ``(run_id, seq, hash)`` events into the tree in this order (inside a
        transaction); with ``origin``, the empty tree takes that name first."""
        ...

    async def close(self) -> None: ...


def _as_event_row(event: Row) -> Row:
    """``(run_id, seq, hash)`` where the tree's append wants an event row (EVENT_COLUMNS)."""
    run_id, seq, digest = event
    return (run_id, seq, None, None, None, None, None, None, None, None, digest)


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# --- SQLite ---------------------------------------------------------------------------------------
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _SQLiteSide:
    """A SQLite store file, through a connection of its own (``readonly``: ``query_only``;
    ``snapshot``: every read in one read transaction)."""

    def __init__(self, path: Path, url: str, *, readonly: bool, snapshot: bool) -> None:
        self.path = path
        self.url = url
        self._types: dict[str, str] = {}
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
            if readonly:
                self._db.execute("PRAGMA query_only=ON")
            if snapshot:
                self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot open the store") from exc

    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        msg = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            return MigrationError(
                "conflict",
                f"{doing}: the destination {self.url} already holds some of these rows ({msg}): "
                "another process wrote to it during the migration; this batch was not written, "
                "the batches before it were; run the same command again to continue",
            )
        if "locked" in msg or "busy" in msg:
            return StoreError(
                f"{doing}: {self.url} is locked by another process for more than 5 s; try again",
                path=str(self.path),
            )
        return StoreError(f"{doing}: {msg}", path=str(self.path))

    def _all(self, query: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            rows: list[Row] = self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, f"cannot read {self.url}") from exc
        return rows

    def _many(self, query: str, rows: Sequence[Row]) -> None:
        try:
            self._db.executemany(query, rows)
        except sqlite3.Error as exc:
            raise self._error(exc, f"cannot write {self.url}") from exc

    async def identity(self) -> str:
        return f"sqlite:{os.path.realpath(self.path)}"

    async def holds_store(self) -> bool:
        """Whether the file holds an erpoz store (migrated at least once)."""
        return bool(self._all("PRAGMA user_version")[0][0])

    async def columns(self) -> dict[str, str]:
        self._types = {str(r[1]): str(r[2]).lower() for r in self._all("PRAGMA table_info(runs)")}
        return dict(self._types)

    async def heads(self) -> dict[str, _RunState]:
        return {str(r[0]): _run_state(r) for r in self._all(_HEADS)}

    async def hashes_at(self, at: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        out: dict[tuple[str, int], str] = {}
        for part in _chunks(at, CHUNK):
            marks = ",".join(["(?,?)"] * len(part))
            for r in self._all(
                f"WITH w(run_id, seq) AS (VALUES {marks}) SELECT e.run_id, e.seq, e.hash "
                "FROM w JOIN events e ON e.run_id = w.run_id AND e.seq = w.seq",
                [v for pair in part for v in pair],
            ):
                out[(r[0], r[1])] = r[2]
        return out

    async def events(self, segments: Sequence[Segment]) -> list[Row]:
        marks = ",".join(["(?,?,?)"] * len(segments))
        return self._all(
            f"WITH w(run_id, lo, hi) AS (VALUES {marks}) SELECT {_E_COLUMNS} "
            "FROM w JOIN events e ON e.run_id = w.run_id AND e.seq > w.lo AND e.seq <= w.hi "
            "ORDER BY e.run_id, e.seq",
            [v for segment in segments for v in segment],
        )

    async def blobs(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(keys, CHUNK):
            marks = ",".join("?" * len(part))
            out.update(self._all(f"SELECT sha256, data FROM blobs WHERE sha256 IN ({marks})", part))
        return out

    async def present(self, table: KeyTable, keys: Sequence[str]) -> set[str]:
        key = _KEY_OF[table]
        out: set[str] = set()
        for part in _chunks(keys, CHUNK):
            marks = ",".join("?" * len(part))
            out.update(
                r[0] for r in self._all(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", part)
            )
        return out

    async def orphan_blobs(self) -> list[str]:
        return [r[0] for r in self._all(_ORPHAN_BLOBS)]

    async def run_rows(self, run_ids: Sequence[str], columns: Sequence[str]) -> list[Row]:
        names = ", ".join(_quote(c) for c in columns)
        out: list[Row] = []
        for part in _chunks(run_ids, CHUNK):
            marks = ",".join("?" * len(part))
            out += self._all(f"SELECT {names} FROM runs WHERE run_id IN ({marks})", part)
        return out

    async def cache(self, after: str, limit: int) -> list[Row]:
        return self._all(_CACHE_PAGE.format(m="?"), (after, limit))

    async def messages(self, after: int, limit: int) -> list[Row]:
        return self._all(_MESSAGES_PAGE.format(m="?"), (after, limit))

    async def run_events(self) -> list[Row]:
        return self._all(_RUN_EVENTS)

    async def insert_mail(self, messages: Sequence[Row], run_events: Sequence[Row]) -> None:
        self._many(
            "INSERT OR IGNORE INTO messages (id, run_id, topic, payload, created) "
            "VALUES (?,?,?,?,?)",
            messages,
        )
        self._many(_UPSERT_RUN_EVENT.format(m="?"), run_events)

    async def has_table(self, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self._all(sql, (name,)))

    async def select(self, query: str) -> list[Row]:
        return self._all(query)

    async def insert_ignore(self, table: str, columns: str, rows: Sequence[Row]) -> None:
        marks = ",".join("?" * len(columns.split(",")))
        self._many(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})", rows)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, f"cannot write {self.url}") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise self._error(exc, f"cannot commit to {self.url}") from exc

    def _adapt(self, row: Row) -> Row:
        # PostgreSQL's booleans are SQLite's 0 and 1
        return tuple(int(v) if isinstance(v, bool) else v for v in row)

    async def insert_blobs(self, blobs: dict[str, str]) -> None:
        self._many("INSERT OR IGNORE INTO blobs (sha256, data) VALUES (?, ?)", list(blobs.items()))

    async def insert_events(self, rows: Sequence[Row]) -> None:
        marks = ",".join("?" * (EVENT_COLUMNS.count(",") + 1))
        self._many(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({marks})", rows)

    async def insert_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None:
        names = ", ".join(_quote(c) for c in columns)
        marks = ",".join("?" * len(columns))
        self._many(f"INSERT INTO runs ({names}) VALUES ({marks})", [self._adapt(r) for r in rows])

    async def update_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None:
        sets = ", ".join(f"{_quote(c)}=?" for c in columns[1:])
        self._many(
            f"UPDATE runs SET {sets} WHERE run_id=?",
            [self._adapt((*r[1:], r[0])) for r in rows],
        )

    async def insert_cache(self, rows: Sequence[Row]) -> None:
        self._many(
            "INSERT OR IGNORE INTO cache (key, step, output, created) VALUES (?,?,?,?)", rows
        )

    async def tree_state(self) -> tuple[str, int, bytes]:
        (row,) = self._all("SELECT origin, size, frontier FROM merkle_state")
        return str(row[0]), int(row[1]), TreeHead(row[0], row[1], bytes(row[2])).root

    async def tree_leaves(self) -> list[Row]:
        return self._all("SELECT run_id, seq, pos, leaf FROM merkle_leaves ORDER BY pos")

    async def untreed(self) -> list[Row]:
        return self._all(_UNTREED)

    async def append_tree(self, events: Sequence[Row], origin: str | None) -> None:
        try:
            if origin is not None:
                self._db.execute("UPDATE merkle_state SET origin = ? WHERE size = 0", (origin,))
            sqlite_append(self._db, [_as_event_row(e) for e in events])
        except sqlite3.Error as exc:
            raise self._error(exc, f"cannot write the Merkle tree of {self.url}") from exc

    async def close(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()


# --- PostgreSQL -----------------------------------------------------------------------------------
class _PostgresSide:
    """A PostgreSQL store (the schema its URL selects), through a connection of its own
    (``readonly``: read-only transactions; ``snapshot``: every read in one REPEATABLE READ
    transaction)."""

    def __init__(self, conn: psycopg.AsyncConnection[Row], url: str) -> None:
        self._conn = conn
        self.url = url
        self._types: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str, *, readonly: bool, snapshot: bool) -> _PostgresSide:
        import psycopg

        from ._url import redact

        shown = redact(url)
        try:
            conn: psycopg.AsyncConnection[Row] = await psycopg.AsyncConnection.connect(
                url, autocommit=not snapshot, connect_timeout=CONNECT_TIMEOUT_S
            )
            if snapshot:
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                await conn.set_read_only(readonly)
            elif readonly:
                await conn.execute("SET default_transaction_read_only TO on")
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot reach PostgreSQL at {shown} ({str(exc).strip() or type(exc).__name__}); "
                "is the server running and the URL right?",
                path=shown,
            ) from exc
        return cls(conn, shown)

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[None]:
        import psycopg

        try:
            yield
        except psycopg.errors.IntegrityError as exc:
            raise MigrationError(
                "conflict",
                f"{doing}: the destination {self.url} already holds some of these rows "
                f"({_first_line(exc)}): another process wrote to it during the migration; this "
                "batch was not written, the batches before it were; run the same command again "
                "to continue",
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"{doing}: cannot reach PostgreSQL at {self.url} ({_first_line(exc)}); is the "
                "server running?",
                path=self.url,
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{doing}: {_first_line(exc)}", path=self.url) from exc

    async def _all(self, query: Any, args: Sequence[Any] = ()) -> list[Row]:
        async with self._translated(f"cannot read {self.url}"):
            cur = await self._conn.execute(query, args)
            rows: list[Row] = await cur.fetchall()
        return rows

    async def _many(self, query: Any, rows: Sequence[Row]) -> None:
        async with self._translated(f"cannot write {self.url}"), self._conn.cursor() as cur:
            await cur.executemany(query, rows)

    async def identity(self) -> str:
        (row,) = await self._all(
            "SELECT coalesce(inet_server_addr()::text, ''), coalesce(inet_server_port(), 0), "
            "current_database(), current_schema(), pg_postmaster_start_time()::text"
        )
        return "postgresql:" + "/".join(str(v) for v in row)

    async def holds_store(self) -> bool:
        """Whether the schema holds an erpoz store (migrated at least once)."""
        rows = await self._all("SELECT to_regclass('events') IS NOT NULL")
        return bool(rows[0][0])

    async def columns(self) -> dict[str, str]:
        rows = await self._all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'runs' "
            "ORDER BY ordinal_position"
        )
        self._types = {str(r[0]): str(r[1]) for r in rows}
        return dict(self._types)

    async def heads(self) -> dict[str, _RunState]:
        return {str(r[0]): _run_state(r) for r in await self._all(_HEADS)}

    async def hashes_at(self, at: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        rows = await self._all(
            "SELECT e.run_id, e.seq, e.hash FROM unnest(%s::text[], %s::bigint[]) "
            "AS w(run_id, seq) JOIN events e ON e.run_id = w.run_id AND e.seq = w.seq",
            ([a[0] for a in at], [a[1] for a in at]),
        )
        return {(r[0], int(r[1])): r[2] for r in rows}

    async def events(self, segments: Sequence[Segment]) -> list[Row]:
        return await self._all(
            f"SELECT {_E_COLUMNS} FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
            "AS w(run_id, lo, hi) JOIN events e ON e.run_id = w.run_id AND e.seq > w.lo "
            "AND e.seq <= w.hi ORDER BY e.run_id, e.seq",
            ([g[0] for g in segments], [g[1] for g in segments], [g[2] for g in segments]),
        )

    async def blobs(self, keys: Sequence[str]) -> dict[str, str]:
        rows = await self._all(
            "SELECT sha256, data FROM blobs WHERE sha256 = ANY(%s)", (list(keys),)
        )
        return {r[0]: r[1] for r in rows}

    async def present(self, table: KeyTable, keys: Sequence[str]) -> set[str]:
        from psycopg import sql

        key = sql.Identifier(_KEY_OF[table])
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
            key, sql.Identifier(table), key
        )
        return {r[0] for r in await self._all(query, (list(keys),))}

    async def orphan_blobs(self) -> list[str]:
        return [r[0] for r in await self._all(_ORPHAN_BLOBS)]

    async def run_rows(self, run_ids: Sequence[str], columns: Sequence[str]) -> list[Row]:
        from psycopg import sql

        query = sql.SQL("SELECT {} FROM runs WHERE run_id = ANY(%s)").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        return await self._all(query, (list(run_ids),))

    async def cache(self, after: str, limit: int) -> list[Row]:
        return await self._all(_CACHE_PAGE.format(m="%s"), (after, limit))

    async def messages(self, after: int, limit: int) -> list[Row]:
        return await self._all(_MESSAGES_PAGE.format(m="%s"), (after, limit))

    async def run_events(self) -> list[Row]:
        return await self._all(_RUN_EVENTS)

    async def insert_mail(self, messages: Sequence[Row], run_events: Sequence[Row]) -> None:
        if messages:
            await self._many(
                "INSERT INTO messages (id, run_id, topic, payload, created) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                messages,
            )
            # ids given here: the next message sent in this store gets a higher one
            await self._all(
                "SELECT setval(pg_get_serial_sequence('messages', 'id'), "
                "(SELECT max(id) FROM messages))"
            )
        if run_events:
            await self._many(_UPSERT_RUN_EVENT.format(m="%s"), run_events)

    async def has_table(self, name: str) -> bool:
        rows = await self._all("SELECT to_regclass(%s) IS NOT NULL", (name,))
        return bool(rows[0][0])

    async def select(self, query: str) -> list[Row]:
        return await self._all(query)

    async def insert_ignore(self, table: str, columns: str, rows: Sequence[Row]) -> None:
        if rows:
            marks = ",".join(["%s"] * len(columns.split(",")))
            await self._many(
                f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows
            )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._translated(f"cannot write {self.url}"), self._conn.transaction():
            yield

    def _adapt(self, columns: Sequence[str], row: Row) -> Row:
        # SQLite's 0 and 1 are PostgreSQL's booleans where the column is boolean
        return tuple(
            bool(v) if v is not None and self._types.get(c) == "boolean" else v
            for c, v in zip(columns, row, strict=True)
        )

    async def insert_blobs(self, blobs: dict[str, str]) -> None:
        await self._many(
            "INSERT INTO blobs (sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            list(blobs.items()),
        )

    async def insert_events(self, rows: Sequence[Row]) -> None:
        # COPY: the fastest way in; floats travel as their shortest exact text (repr)
        async with (
            self._translated(f"cannot write {self.url}"),
            self._conn.cursor() as cur,
            cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in rows:
                await copy.write_row(row)

    async def insert_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None:
        from psycopg import sql

        query = sql.SQL("INSERT INTO runs ({}) VALUES ({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
        await self._many(query, [self._adapt(columns, r) for r in rows])

    async def update_runs(self, columns: Sequence[str], rows: Sequence[Row]) -> None:
        from psycopg import sql

        query = sql.SQL("UPDATE runs SET {} WHERE run_id = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns[1:])
        )
        order = [*columns[1:], columns[0]]
        await self._many(query, [self._adapt(order, (*r[1:], r[0])) for r in rows])

    async def insert_cache(self, rows: Sequence[Row]) -> None:
        await self._many(
            "INSERT INTO cache (key, step, output, created) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING",
            rows,
        )

    async def tree_state(self) -> tuple[str, int, bytes]:
        (row,) = await self._all("SELECT origin, size, frontier FROM merkle_state")
        return str(row[0]), int(row[1]), TreeHead(row[0], row[1], bytes(row[2])).root

    async def tree_leaves(self) -> list[Row]:
        rows = await self._all("SELECT run_id, seq, pos, leaf FROM merkle_leaves ORDER BY pos")
        return [(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    async def untreed(self) -> list[Row]:
        return [(r[0], int(r[1]), r[2]) for r in await self._all(_UNTREED)]

    async def append_tree(self, events: Sequence[Row], origin: str | None) -> None:
        async with self._translated(f"cannot write the Merkle tree of {self.url}"):
            if origin is not None:
                await self._conn.execute(
                    "UPDATE merkle_state SET origin = %s WHERE size = 0", (origin,)
                )
            for part in _chunks(events, TREE_CHUNK):
                await self._conn.execute(PG_APPEND, pg_leaves([_as_event_row(e) for e in part]))

    async def close(self) -> None:
        await self._conn.close()  # an open snapshot transaction is rolled back


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- opening both ends ----------------------------------------------------------------------------
def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///") :] if url.startswith("sqlite:///") else url)


def _refuse_memory(url: str, role: str) -> None:
    if url in ("memory", ":memory:", "memory://"):
        raise StoreError(
            f"the {role} {url!r} is an in-memory store: there is nothing to copy to or from; "
            "name a SQLite file or a postgresql:// URL"
        )


def _open_store(url: str, role: str) -> Store:
    _refuse_memory(url, role)
    from . import open_store  # the package's, which imports this module

    return open_store(url)


async def _require_store(url: str) -> None:
    """The source must hold an erpoz store already: a mistyped path or schema must not become a
    new, empty store that "copies" nothing."""
    _refuse_memory(url, "source")
    if _is_postgres(url):
        side: _Side = await _PostgresSide.open(url, readonly=True, snapshot=False)
        what = "its schema holds no erpoz run store (check the database and search_path)"
    else:
        path = _sqlite_path(url)
        if not path.is_file():
            raise StoreError(f"the source {url} does not exist; check the path")
        side = _SQLiteSide(path, f"sqlite:///{path}", readonly=True, snapshot=False)
        what = "the file is not an erpoz run store"
    try:
        if not await side.holds_store():
            raise StoreError(f"the source {side.url} cannot be copied: {what}")
    finally:
        await side.close()


async def _open_side(url: str, store: Store, *, readonly: bool, snapshot: bool) -> _Side:
    if isinstance(store, SQLiteStore):
        return _SQLiteSide(store.path, store.url, readonly=readonly, snapshot=snapshot)
    return await _PostgresSide.open(url, readonly=readonly, snapshot=snapshot)


async def _dry_run_destination(url: str, stack: contextlib.AsyncExitStack) -> _Side:
    """The destination as it is, read only; one that does not exist yet (or was never migrated)
    is read as an empty store of the current schema, so that a dry run creates nothing."""
    _refuse_memory(url, "destination")
    if _is_postgres(url):
        pg = await _PostgresSide.open(url, readonly=True, snapshot=False)
        stack.push_async_callback(pg.close)
        if await pg.holds_store():
            return pg
        shown = pg.url
    else:
        path = _sqlite_path(url)
        shown = f"sqlite:///{path}"
        if path.exists() and path.stat().st_size > 0:
            lite = _SQLiteSide(path, shown, readonly=True, snapshot=False)
            stack.push_async_callback(lite.close)
            if await lite.holds_store():
                return lite
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="erpoz-migrate-"))
    empty = SQLiteStore(Path(folder) / "empty.db")
    stack.push_async_callback(empty.close)
    stand_in = _SQLiteSide(empty.path, shown, readonly=True, snapshot=False)
    stack.push_async_callback(stand_in.close)
    return stand_in


# --- the migration --------------------------------------------------------------------------------
def _quiet(phase: str, done: int, total: int | None) -> None:
    """No progress to show."""


@dataclass(slots=True)
class _Plan:
    tasks: list[_Task]
    source: dict[str, _RunState]
    same: list[str]


async def migrate(
    source: str,
    destination: str,
    *,
    verify: Verify,
    force: bool = False,
    include_active: bool = False,
    dry_run: bool = False,
    batch_events: int = BATCH_EVENTS,
    on_progress: OnProgress | None = None,
) -> MigrationReport:
    """Copy every run (events, blobs, runs row) and the output cache from the store at
    ``source`` into the store at ``destination`` (paths, ``sqlite:///…`` or ``postgresql://…``
    URLs; the destination is created and migrated when needed) and verify the copy with
    ``verify`` (``erpoz.audit.verify``).

    ``force`` copies a source that does not verify, as it is (the destination then reports the
    same problems); ``include_active`` also copies runs a live process owns, as they are now;
    ``dry_run`` reads everything and writes nothing. Raises :class:`MigrationError` when the
    migration stops, :class:`StoreError` when a store cannot be used.
    """
    if batch_events < 1:
        raise StoreError(f"batch_events must be at least 1, got {batch_events}")
    note = on_progress or _quiet
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        await _require_store(source)
        src_store = _open_store(source, "source")
        stack.push_async_callback(src_store.close)
        note("verifying the source", 0, None)
        checked = await verify(src_store)
        broken = {p.run_id: p for p in checked.problems}
        if broken and not force:
            raise MigrationError(
                "source",
                f"the source {src_store.url} does not verify, so nothing was copied: "
                f"{checked.problems[0]}"
                + (f" (and {len(broken) - 1} more runs)" if len(broken) > 1 else "")
                + "; see `erpoz audit verify --all --store SOURCE`, or pass --force to copy it "
                "as it is (the destination will then report the same problems)",
                runs=sorted(broken),
                problems=checked.problems,
            )
        src = await _open_side(source, src_store, readonly=True, snapshot=True)
        stack.push_async_callback(src.close)
        dst_store: Store | None = None
        if dry_run:
            dst = await _dry_run_destination(destination, stack)
        else:
            dst_store = _open_store(destination, "destination")
            stack.push_async_callback(dst_store.close)
            dst = await _open_side(destination, dst_store, readonly=False, snapshot=False)
            stack.push_async_callback(dst.close)
        report = MigrationReport(
            src.url,
            dst.url,
            dry_run=dry_run,
            source_runs=checked.runs,
            source_events=checked.events,
            source_problems=list(checked.problems),
        )
        if await src.identity() == await dst.identity():
            raise StoreError(
                f"the source {src.url} and the destination {dst.url} are the same store; "
                "name another destination"
            )

        note("planning", 0, None)
        plan = await _plan(src, dst, broken, include_active, report)
        src_cols = await src.columns()
        dst_cols = await dst.columns()
        columns = ["run_id", *(c for c in src_cols if c in dst_cols and c != "run_id")]
        report.columns_left_out = [c for c in src_cols if c not in dst_cols]

        t_copy = time.perf_counter()
        try:
            await _copy_all(src, dst, plan, columns, report, batch_events, note)
        except MigrationError as exc:
            exc.report = exc.report or report  # what was written before it stopped
            raise
        finally:
            report.copy_seconds = time.perf_counter() - t_copy
            report.seconds = time.perf_counter() - t0
        if dst_store is not None:
            note("verifying the destination", 0, None)
            await _check_copy(plan, broken, dst, dst_store, report, verify)
    report.seconds = time.perf_counter() - t0
    return report


async def _copy_all(
    src: _Side,
    dst: _Side,
    plan: _Plan,
    columns: list[str],
    report: MigrationReport,
    batch_events: int,
    note: OnProgress,
) -> None:
    """The runs (in batches of whole runs), the cache and orphan blobs, then the tree."""
    try:
        await _copy_runs(src, dst, plan.tasks, columns, report, batch_events, note)
        await _copy_rest(src, dst, report, note)
    except MigrationError:
        if report.events and not report.dry_run:
            # what was written goes into the destination's tree (then its own, not the
            # source's): no event of it is left outside the tree
            with contextlib.suppress(StoreError):
                await _copy_tree(src, dst, report, note)
        raise
    await _copy_tree(src, dst, report, note)


async def _plan(
    src: _Side,
    dst: _Side,
    broken: dict[str, Problem],
    include_active: bool,
    report: MigrationReport,
) -> _Plan:
    """Sort the source's runs: new, grown (topped up), already there, continued in the
    destination, owned by a live process, or in conflict (which stops everything)."""
    ours, theirs = await src.heads(), await dst.heads()
    shared = [
        (rid, n)
        for rid, s in ours.items()
        if (d := theirs.get(rid)) is not None and (n := min(s.last_seq, d.last_seq)) > 0
    ]
    ours_at, theirs_at = await src.hashes_at(shared), await dst.hashes_at(shared)
    now = time.time()
    tasks: list[_Task] = []
    same: list[str] = []
    conflicts: list[tuple[str, str]] = []
    for s in sorted(ours.values(), key=lambda r: (r.created, r.run_id)):
        rid = s.run_id
        d = theirs.get(rid)
        check = rid not in broken
        if d is None:
            task = _Task(rid, 0, GENESIS, s.last_seq, new=True, check=check)
        else:
            n = min(s.last_seq, d.last_seq)
            mine, other = ours_at.get((rid, n)), theirs_at.get((rid, n))
            if n and (mine is None or mine != other):
                conflicts.append(
                    (
                        rid,
                        f"run {rid}: its event {n} differs (source {str(mine)[:12]}…, "
                        f"destination {str(other)[:12]}…)",
                    )
                )
                continue
            if d.last_seq > s.last_seq:
                report.continued.append(rid)
                continue
            if d.last_seq == s.last_seq and (d.head_seq, d.head_hash) == (s.head_seq, s.head_hash):
                report.already_there += 1
                same.append(rid)
                continue
            if d.owned_live(now):
                report.active.append(
                    ActiveRun(rid, str(d.owner), float(d.lease_until or 0), "destination")
                )
                continue
            task = _Task(rid, d.last_seq, other or GENESIS, s.last_seq, new=False, check=check)
        if s.owned_live(now) and not include_active:
            report.active.append(ActiveRun(rid, str(s.owner), float(s.lease_until or 0), "source"))
            continue
        tasks.append(task)
    if conflicts:
        more = f" (and {len(conflicts) - 3} more runs)" if len(conflicts) > 3 else ""
        raise MigrationError(
            "conflict",
            f"the destination {dst.url} holds other events than the source for runs that are "
            f"in both, so nothing was written: {'; '.join(c[1] for c in conflicts[:3])}{more}. "
            "Their histories diverged (each store went on with the run); migrate into another "
            "store, or compare them with `erpoz events RUN --store …`",
            runs=[c[0] for c in conflicts],
            report=report,
        )
    return _Plan(tasks, ours, same)


def _batches(tasks: Sequence[_Task], batch_events: int) -> Iterator[list[_Task]]:
    batch: list[_Task] = []
    size = 0
    for t in tasks:
        n = t.upto - t.after
        if batch and (size + n > batch_events or len(batch) >= BATCH_RUNS):
            yield batch
            batch, size = [], 0
        batch.append(t)
        size += n
    if batch:
        yield batch


async def _copy_runs(
    src: _Side,
    dst: _Side,
    tasks: list[_Task],
    columns: list[str],
    report: MigrationReport,
    batch_events: int,
    note: OnProgress,
) -> None:
    total = sum(t.upto - t.after for t in tasks)
    note("copying events", 0, total)
    seen_blobs: set[str] = set()
    writing = not report.dry_run
    for batch in _batches(tasks, batch_events):
        by_id = {t.run_id: t for t in batch}
        chain = {t.run_id: (t.after + 1, t.head) for t in batch}
        events = 0
        async with dst.transaction() if writing else contextlib.nullcontext():
            for page in _pages(batch):
                rows = await src.events(page)
                refs = sorted({r[8] for r in rows if r[8] is not None})
                blobs = await src.blobs(refs) if refs else {}
                asm = await _pieces_of(src, rows)
                if asm.pieces:  # the pieces of split payloads live in the blobs table too
                    blobs.update(asm.pieces)
                    refs = sorted({*refs, *asm.pieces})
                for row in rows:
                    if by_id[row[0]].check:
                        chain[row[0]] = _rechain(row, chain[row[0]], blobs, asm)
                fresh = [k for k in refs if k in blobs and k not in seen_blobs]
                seen_blobs.update(refs)
                have = await dst.present("blobs", fresh) if fresh else set()
                missing = {k: blobs[k] for k in fresh if k not in have}
                if writing:
                    if missing:
                        await dst.insert_blobs(missing)
                    await dst.insert_events(rows)
                report.blobs += len(missing)
                events += len(rows)
                note("copying events", report.events + events, total)
            for t in batch:
                if t.check and chain[t.run_id][0] != t.upto + 1:
                    raise _changed(t.run_id, chain[t.run_id][0], "it is missing from the source")
            rows = await src.run_rows(list(by_id), columns)
            if writing:
                await dst.insert_runs(columns, [r for r in rows if by_id[r[0]].new])
                await dst.update_runs(columns, [r for r in rows if not by_id[r[0]].new])
        report.events += events
        report.copied += sum(1 for t in batch if t.new)
        report.topped_up += [t.run_id for t in batch if not t.new]


def _pages(batch: Sequence[_Task]) -> Iterator[list[Segment]]:
    """The batch's events in pages of about ``PAGE_ROWS``, as sequence ranges of its runs (each
    read with an index range scan, wherever the runs are in the table)."""
    page: list[Segment] = []
    size = 0
    for t in batch:
        lo = t.after
        while lo < t.upto:
            hi = min(t.upto, lo + PAGE_ROWS - size)
            page.append((t.run_id, lo, hi))
            size += hi - lo
            lo = hi
            if size >= PAGE_ROWS:
                yield page
                page, size = [], 0
    if page:
        yield page


async def _pieces_of(src: _Side, rows: list[Row]) -> Assembler:
    """The pieces the split payloads of ``rows`` refer to, fetched from the source."""
    asm = Assembler(src.url)
    need = asm.wanted(r[7] for r in rows)
    while need:
        need = asm.add(need, await src.blobs(sorted(need)))
    return asm


def _rechain(
    row: Row, state: tuple[int, str], blobs: dict[str, str], asm: Assembler
) -> tuple[int, str]:
    """Check one event against its predecessor, as the audit does; the next expected state."""
    run_id, seq, ts, kind, step, attempt, data, payload, blob, prev_hash, digest = row
    expected, prev = state
    if payload is None and blob is not None:
        payload = blobs.get(blob)
    payload = asm.expand(payload)
    if seq != expected or prev_hash != prev:
        raise _changed(run_id, expected, "the events no longer follow each other")
    if chain_hash(prev, run_id, seq, ts, kind, step, attempt, data, payload) != digest:
        raise _changed(run_id, seq, f"{kind} no longer matches its hash")
    return seq + 1, digest


def _changed(run_id: str, seq: int, why: str) -> MigrationError:
    return MigrationError(
        "changed",
        f"run {run_id}, event {seq} of the source does not check out while copying ({why}): it "
        "changed after the source was verified. Neither this run nor the others of its batch "
        "were written; earlier batches were (whole runs, every event chained again as it was "
        "read). Check the source with `erpoz audit verify --all --store SOURCE`",
        runs=[run_id],
    )


async def _copy_rest(src: _Side, dst: _Side, report: MigrationReport, note: OnProgress) -> None:
    """The output cache (keys the destination lacks) and blobs no event refers to."""
    writing = not report.dry_run
    note("copying the cache", 0, None)
    after = ""
    while rows := await src.cache(after, PAGE_ROWS):
        after = rows[-1][0]
        have = await dst.present("cache", [r[0] for r in rows])
        new = [r for r in rows if r[0] not in have]
        if writing and new:
            async with dst.transaction():
                await dst.insert_cache(new)
        report.cache += len(new)
        report.cache_present += len(rows) - len(new)
    orphans = await src.orphan_blobs()
    for part in _chunks(orphans, CHUNK):
        have = await dst.present("blobs", part)
        blobs = await src.blobs([k for k in part if k not in have])
        if writing and blobs:
            async with dst.transaction():
                await dst.insert_blobs(blobs)
        report.blobs += len(blobs)
    await _copy_mail(src, dst, report, note)
    await _copy_state(src, dst, report, note)


_STATE: tuple[tuple[str, str, str, str], ...] = (
    ("schedules", SCHEDULE_COLS, "name", "schedules"),
    ("schedule_ticks", TICK_COLS, "schedule, tick", "schedule_ticks"),
    (
        "limit_grants",
        "grant_id, key, at, amount, owner, lim, window_s",
        "grant_id",
        "limit_grants",
    ),
)
"""What :func:`_copy_state` copies: table, columns, key, and the report's count."""


async def _copy_state(src: _Side, dst: _Side, report: MigrationReport, note: OnProgress) -> None:
    """Schedules (where each stands, its counts and its pause), the ticks they claimed, and the
    grants of the rate limits' windows (a limit's window goes on counting in the destination).
    A row the destination has already (by key) is kept as it is there. Concurrency slots are
    not copied: they are leases of processes working on the source, which come free there."""
    for table, columns, key, name in _STATE:
        if not (await src.has_table(table) and await dst.has_table(table)):
            continue
        note(f"copying {table}", 0, None)
        have = {tuple(r) for r in await dst.select(f"SELECT {key} FROM {table}")}
        width = len(key.split(","))
        rows = [
            _state_row(table, r)
            for r in await src.select(f"SELECT {columns} FROM {table}")
            if tuple(r[:width]) not in have
        ]
        if rows and not report.dry_run:
            async with dst.transaction():
                await dst.insert_ignore(table, columns, rows)
        report.state[name] = len(rows)


def _state_row(table: str, row: Row) -> Row:
    if table == "schedules":  # paused: an integer on SQLite, a boolean on PostgreSQL
        return (*row[:7], bool(row[7]), *row[8:])
    return tuple(row)


async def _copy_mail(src: _Side, dst: _Side, report: MigrationReport, note: OnProgress) -> None:
    """Messages sent to runs and the events runs published (stores with durable waits)."""
    # stores with the schema of durable waits keep messages (and run events)
    if not (await src.has_table("messages") and await dst.has_table("messages")):
        return
    note("copying messages", 0, None)
    after = 0
    while rows := await src.messages(after, PAGE_ROWS):
        after = int(rows[-1][0])
        if not report.dry_run:
            async with dst.transaction():
                await dst.insert_mail(rows, [])
        report.messages += len(rows)
    published = await src.run_events()
    if published and not report.dry_run:
        async with dst.transaction():
            await dst.insert_mail([], published)
    report.run_events = len(published)


async def _copy_tree(src: _Side, dst: _Side, report: MigrationReport, note: OnProgress) -> None:
    """Put the copied events into the destination's Merkle tree, in the source's order.

    When the destination's tree is empty, or holds exactly the source's first leaves (an
    earlier migration), and every source event after them was copied, the destination's tree
    becomes the source's: same origin, same leaves, same roots, so checkpoints signed for the
    source go on verifying. Otherwise the copied events are appended to the destination's own
    tree (in the source's order) and the report says why it is not the source's.
    """
    note("copying the Merkle tree", 0, None)
    origin, src_size, src_root = await src.tree_state()
    theirs, size, _ = await dst.tree_state()
    leaves = await src.tree_leaves()
    waiting = {(r[0], int(r[1])): r[2] for r in await dst.untreed()}
    order = [(r[0], int(r[1])) for r in leaves]
    prefix = [(r[0], int(r[1]), bytes(r[3])) for r in await dst.tree_leaves()]
    why_not = ""
    if prefix != [(r[0], int(r[1]), bytes(r[3])) for r in leaves[: len(prefix)]]:
        why_not = "the destination's tree holds leaves the source's does not (events of its own)"
    elif size and theirs != origin:
        why_not = f"the destination's tree is another log's ({theirs})"
    else:
        missing = next((k for k in order[size:] if k not in waiting), None)
        if missing is not None:
            why_not = (
                f"not every event of the source was copied (the first left out: run "
                f"{missing[0]}, event {missing[1]}); migrate again when it can be"
            )
    events = [(k[0], k[1], waiting.pop(k)) for k in order if k in waiting]
    events += [(k[0], k[1], h) for k, h in sorted(waiting.items())]  # not from this source
    mirrors = not why_not
    if mirrors and any(
        leaf_hash(e[0], e[1], e[2]) != bytes(leaves[size + i][3]) for i, e in enumerate(events)
    ):
        why_not, mirrors = "copied events hash to other leaves than the source's", False
    tree = report.tree = TreeCopy(mirrors, len(events), why_not=why_not)
    if report.dry_run:
        tree.size, tree.origin = size + len(events), origin if mirrors else theirs
        return
    if events:
        async with dst.transaction():
            await dst.append_tree(events, origin if mirrors and size == 0 else None)
    tree.origin, tree.size, root = await dst.tree_state()
    tree.root = root.hex()
    if mirrors and (tree.origin, tree.size, root) != (origin, src_size, src_root):
        raise MigrationError(
            "mismatch",
            f"the destination's Merkle tree ({tree.size} events, log {tree.origin}, root "
            f"{tree.root[:12]}…) is not the source's ({src_size} events, log {origin}, root "
            f"{src_root.hex()[:12]}…) after copying",
            report=report,
        )
    note("copying the Merkle tree", len(events), len(events))


async def _check_copy(
    plan: _Plan,
    broken: dict[str, Problem],
    dst: _Side,
    dst_store: Store,
    report: MigrationReport,
    verify: Verify,
) -> None:
    """The chains of the runs written verify in the destination (or fail exactly as in the
    source, with ``force``), and every run in both stores records the same head in both."""
    written = [t.run_id for t in plan.tasks]
    covered = [*written, *plan.same]
    theirs = await dst.heads()
    found = await _problems(dst_store, written, verify)
    bad: list[tuple[str, str]] = []
    if "" in found:  # the log as a whole: its Merkle tree
        bad.append(("", str(found[""])))
    for rid in covered:
        s, d = plan.source[rid], theirs.get(rid)
        if d is None or (d.head_seq, d.head_hash) != (s.head_seq, s.head_hash):
            got = "nothing" if d is None else f"event {d.head_seq} {d.head_hash[:12]}…"
            bad.append(
                (
                    rid,
                    f"run {rid}: the destination records head {got}, the source event "
                    f"{s.head_seq} {s.head_hash[:12]}…",
                )
            )
            continue
        want, got_p = broken.get(rid), found.get(rid)
        if (want and (want.seq, want.what)) != (got_p and (got_p.seq, got_p.what)):
            bad.append((rid, str(got_p) if got_p else f"run {rid} verifies, unlike in the source"))
    mine = heads_digest(sorted((plan.source[r].recorded() for r in covered), key=_order))
    other = heads_digest(sorted((theirs[r].recorded() for r in covered if r in theirs), key=_order))
    if bad or mine != other:
        raise MigrationError(
            "mismatch",
            f"the destination {dst.url} does not match the source after copying: "
            + "; ".join(b[1] for b in bad[:3])
            + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
            + ". Compare with `erpoz audit verify --all` on both stores; the destination's "
            "logs were only appended to",
            runs=[b[0] for b in bad],
            report=report,
        )
    report.runs_verified = len(written)
    report.heads_digest = mine


async def _problems(store: Store, run_ids: list[str], verify: Verify) -> dict[str, Problem]:
    """``verify`` of these runs: one by one when they are few (each call also reads every run's
    head), else the whole store at once."""
    if len(run_ids) > VERIFY_ONE_BY_ONE:
        return {p.run_id: p for p in (await verify(store)).problems}
    found: dict[str, Problem] = {}
    for rid in run_ids:
        found.update((p.run_id, p) for p in (await verify(store, rid)).problems)
    return found


def _order(head: RecordedHead) -> tuple[float, str]:
    return head[1], head[0]
