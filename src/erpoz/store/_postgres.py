"""The shared store: PostgreSQL through psycopg 3 (async), numbered migrations.

The same tables, chain and guarantees as the SQLite store, for many processes at once:

* every run has one writer at a time — the process holding its lease (``owner`` and
  ``lease_until`` on the runs row, taken with ``SELECT … FOR UPDATE`` and renewed by a
  heartbeat); the writer assigns ``seq`` and the chain hash (:func:`chain_hash`, exactly as
  SQLite does, so ``erpoz audit verify`` reads both alike);
* the database itself refuses what must never happen: a second event with the same
  ``(run_id, seq)`` (primary key), a second ``step_succeeded`` of a step of a run (partial
  UNIQUE index) and any UPDATE, DELETE or TRUNCATE of events (triggers);
* events of every run this process owns share one buffer, so one transaction carries all that
  is pending (group commit). When the database refuses one run's events, the transaction is
  redone run by run (savepoints) so that the other runs' events are not lost.

Connections, per event loop, each behind an ``asyncio.Lock`` and opened on first use: one for
commits (and the heartbeat), one for reads, one for claims (so that a worker's claims never
wait behind its commits) and, in workers, one that LISTENs for submissions. They are reopened
when the loop changes (``asyncio.run`` per call) or broke; operations retry while the server
cannot be reached (``reconnect_s``).
Migrations run when the store is opened, on a short-lived connection, under a session-level
advisory lock (per schema) so that two processes opening a blank database do not race.

``fsync=False`` (the default, like SQLite's ``synchronous=NORMAL``) sets
``synchronous_commit=off`` on the store's sessions: a commit survives the erpoz process being
killed, and the server restarting cleanly, but a crash of the PostgreSQL server itself may lose
the last fraction of a second of commits (the database stays consistent; lost steps run again).
``fsync=True`` keeps ``synchronous_commit=on``: each commit is flushed to disk first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from ..errors import RunClaimed, StoreError
from . import _postgres_ledger as ledger
from . import _postgres_limits as pg_limits
from . import _postgres_schedules as pg_sched
from ._buffer import BATCH_SECONDS, DURABILITIES, EFFECTS_SECONDS, StoreWriter, buffer_event
from ._ledger import BudgetScope, Hold, limits_of
from ._limits import LimitState, RateGrant
from ._merkle import (
    PG_APPEND,
    PG_WITH_APPEND,
    Leaf,
    TreeHead,
    as_of_tree,
    check_level,
    pg_leaves,
    run_range,
    split_runs,
)
from ._model import (
    EVENT_COLUMNS,
    GENESIS,
    RUN_QUEUED,
    RUN_ROW_COLUMNS,
    RUN_STARTED,
    ChainRow,
    Event,
    NewRun,
    RecordedHead,
    RunInfo,
)
from ._owner import HOST, new_owner, owner_is_dead
from ._pg_schema import apply_migrations, schema_version
from ._pieces import aexpand_rows
from ._protocol import Claim
from ._schedules import ScheduleRow, Tick, TickClaim
from ._url import redact

T = TypeVar("T")

LEASE_S = 30.0
RECONNECT_S = 30.0
"""How long an operation keeps trying to reach a server that went away (a restart) before it
fails with a ``StoreError``."""
NOTIFY_CHANNEL = "erpoz_runs"
CANCEL_POLL_S = 1.0
CONNECT_TIMEOUT_S = 5

# a woken run of a queue is claimable at once: the workers waiting for runs hear of it
_WAKE_ON = (
    "WITH w AS (UPDATE runs SET wake_at=%s WHERE run_id=%s AND status='waiting' AND wake_on=%s "
    "AND wake_at > %s RETURNING queue) "
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM w WHERE queue IS NOT NULL"
)
_WAKE_WAITERS = (
    "WITH w AS (UPDATE runs SET wake_at=%s WHERE status='waiting' AND wake_on=%s "
    "AND wake_at > %s RETURNING queue) "
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM w WHERE queue IS NOT NULL"
)
_WAKE = (
    "WITH w AS (UPDATE runs SET wake_at=%s WHERE run_id=%s AND status='waiting' "
    "AND wake_at > %s RETURNING queue) "
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM w WHERE queue IS NOT NULL"
)
_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES "
_ROW_MARKS = "(" + ",".join(["%s"] * 11) + ")"
_ONE_STATEMENT_ROWS = 16
"""Up to this many rows go in one multi-row INSERT; more (batch commits) in a pipeline."""


_FENCED_INSERT = (
    f"INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM (VALUES {{rows}}) AS v "
    "WHERE (SELECT erpoz_fence(%s::text[], %s::text[]))"
)
_FENCE = "SELECT erpoz_fence(%s::text[], %s::text[])"
FENCED = "EZ001"
"""The SQLSTATE ``erpoz_fence`` raises when another owner holds a run (DETAIL names them)."""

Fence = tuple[list[str], list[str]]
"""Run ids and the owner this process writes them as."""


async def _insert_events(conn: Conn, rows: list[tuple[Any, ...]], fence: Fence | None) -> None:
    """A few rows (a step's events) in one multi-row INSERT: one round trip, atomic on its own,
    faster on the server than ``executemany`` or ``unnest``. Many rows (``batch`` durability)
    through ``executemany``, which pipelines them — callers hold a transaction then. With a
    ``fence``, nothing is inserted unless this process still holds every run named. Their
    leaves join the Merkle tree in the same statement or transaction."""
    tree = pg_leaves(rows)  # the events' leaves go into the Merkle tree in the same statement
    if len(rows) <= _ONE_STATEMENT_ROWS:
        params = [v for row in rows for v in row]
        marks = ",".join([_ROW_MARKS] * len(rows))
        if fence is None:
            insert, args = _INSERT_EVENT + marks, [*params, *tree]
        else:
            insert, args = _FENCED_INSERT.format(rows=marks), [*params, *fence, *tree]
        await conn.execute(PG_WITH_APPEND.format(insert=insert), args)
    else:
        async with conn.cursor() as cur:
            if fence is not None:
                await cur.execute(_FENCE, fence)
            await cur.executemany(_INSERT_EVENT + _ROW_MARKS, rows)
            await cur.execute(PG_APPEND, tree)


def _run_cols(head_seq: str, head_hash: str) -> str:
    """The columns of a :class:`RunInfo`, the head given as SQL expressions."""
    return (
        "r.run_id, r.flow, r.source, r.fingerprint, r.status, r.created, r.updated, "
        "r.parent_run_id, r.replay_from, r.inputs, r.output, r.error, r.waiting_step, "
        f"{head_seq}, {head_hash}, r.owner, r.cancel_requested, r.tenant, r.queue, r.claims, "
        "r.wake_at, r.wake_on"
    )


_RUN_COLS = _run_cols("coalesce(h.seq, 0)", "coalesce(h.hash, r.head_hash)")
_RUN_FROM = (
    "runs r LEFT JOIN LATERAL (SELECT e.seq, e.hash FROM events e WHERE e.run_id = r.run_id "
    "ORDER BY e.seq DESC LIMIT 1) h ON true"
)
"""The runs row is refreshed on status changes; the head always comes from the log itself."""
_LAST = "(SELECT e.{} FROM events e WHERE e.run_id = r.run_id ORDER BY e.seq DESC LIMIT 1)"
_CLAIMED_COLS = _run_cols(
    f"coalesce({_LAST.format('seq')}, 0)", f"coalesce({_LAST.format('hash')}, r.head_hash)"
)
"""``_RUN_COLS`` for ``UPDATE … RETURNING`` (no lateral join there)."""
_INSERT_BLOBS = "INSERT INTO blobs (sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_INSERT_RUN = f"INSERT INTO runs ({RUN_ROW_COLUMNS}) VALUES ({','.join(['%s'] * 16)})"

_MIGRATION_KEY = "hashtext('erpoz.migrate.' || coalesce(current_schema(), ''))"
_MIGRATION_LOCK = f"SELECT pg_advisory_lock({_MIGRATION_KEY})"
_MIGRATION_UNLOCK = f"SELECT pg_advisory_unlock({_MIGRATION_KEY})"

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_Snapshot = tuple[
    str, int, str, "str | None", "str | None", "str | None", "float | None", "str | None"
]
"""``(status, seq, head, output, error, waiting_step, wake_at, wake_on)`` of a writer when its
run row is due."""


def migrations() -> list[tuple[int, str]]:
    """The numbered SQL migrations shipped with erpoz for PostgreSQL, in order."""
    folder = resources.files("erpoz.store").joinpath("migrations/postgres")
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), entry.read_text()))
    return sorted(out)


class _PostgresWriter(StoreWriter):
    """The run's row is refreshed from a snapshot of the writer taken when its status moved;
    a run's commit is the store's commit."""

    __slots__ = ()
    _store: PostgresStore

    def _projection(self) -> _Snapshot:
        return (
            self.status,
            self.seq,
            self.head,
            self.output,
            self.error,
            self.waiting_step,
            self.wake_at,
            self.wake_on,
        )

    async def _commit_run(self) -> None:
        await self._store._commit()

    async def _commit_batch(self) -> None:
        await self._store._commit()


class _Rows:
    """A private buffer for rows that are written outside the store's shared one."""

    __slots__ = ("_pending", "_pending_blobs")

    def __init__(self) -> None:
        self._pending: list[tuple[Any, ...]] = []
        self._pending_blobs: dict[str, str] = {}


async def _not_yet_recorded(conn: Conn, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` without those already in the table with the same hash: after a connection
    broke during a commit, whether that commit went through is unknown until asked."""
    cur = await conn.execute(
        "SELECT e.run_id, e.seq, e.hash FROM events e JOIN unnest(%s::text[], %s::bigint[]) "
        "AS k(run_id, seq) ON e.run_id = k.run_id AND e.seq = k.seq",
        ([r[0] for r in rows], [r[1] for r in rows]),
    )
    there = {(r[0], int(r[1])): r[2] for r in await cur.fetchall()}
    return [r for r in rows if there.get((r[0], r[1])) != r[10]]


class PostgresStore:
    """Run store in a PostgreSQL database (``durability``: ``sync``, ``batch`` or ``effects``).

    ``url`` is a libpq URL (``postgresql://user@host:5432/db``; ``?options=-csearch_path=s``
    picks a schema). ``schema`` is another way to name the schema (created if missing).
    """

    def __init__(
        self,
        url: str,
        *,
        durability: str = "sync",
        fsync: bool = False,
        schema: str | None = None,
    ) -> None:
        if durability not in DURABILITIES:
            raise StoreError(
                f"durability must be one of {', '.join(DURABILITIES)} for PostgreSQL, "
                f"got {durability!r}"
            )
        self._conninfo = url
        self.url = redact(url)
        self.durability = durability
        self.lease_s = LEASE_S
        self.reconnect_s = RECONNECT_S
        self.fsync = fsync
        self.schema = schema
        self._pending: list[tuple[Any, ...]] = []
        self._pending_blobs: dict[str, str] = {}
        self._seen_pieces: set[str] = set()  # piece keys buffered once (see _buffer._split)
        self._dirty: dict[str, _Snapshot] = {}
        self._owned: dict[str, _PostgresWriter] = {}
        self._releasing: list[tuple[str, str]] = []
        self._refused: dict[str, str] = {}
        self._fence: dict[str, str] = {}  # run id -> the owner this process writes it as
        self._last_commit = time.monotonic()
        self._heartbeat: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write: Conn | None = None
        self._read: Conn | None = None
        self._listen: Conn | None = None
        self._claim: Conn | None = None  # claims do not queue behind commits
        self._claim_lock = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._listener: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._starts: list[tuple[tuple[Any, ...], _Rows, asyncio.Future[None]]] = []
        self._starter: asyncio.Task[None] | None = None  # inserts the runs started together
        self._read_lock = asyncio.Lock()
        self._closed = False
        self._budget_owner = new_owner()  # who holds budget reservations made here
        self._migrate()

    # --- set-up -----------------------------------------------------------------------------
    def _translate(self, exc: psycopg.Error, doing: str) -> StoreError:
        msg = str(exc).strip() or type(exc).__name__
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(
                f"{doing}: cannot reach PostgreSQL at {self.url} ({msg}); is the server "
                "running and the URL right?",
                path=self.url,
            )
        return StoreError(f"{doing}: {msg}", path=self.url)

    def _session_sql(self) -> list[sql.SQL | sql.Composed]:
        out: list[sql.SQL | sql.Composed] = [
            sql.SQL("SET synchronous_commit TO {}").format(sql.SQL("on" if self.fsync else "off")),
            sql.SQL("SET application_name TO 'erpoz'"),
        ]
        if self.schema:
            out.append(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return out

    def _migrate(self) -> None:
        known = migrations()
        latest = known[-1][0]
        try:
            with psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as db:
                if self.schema:
                    with contextlib.suppress(psycopg.errors.UniqueViolation):
                        db.execute(
                            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                                sql.Identifier(self.schema)
                            )
                        )
                for stmt in self._session_sql():
                    db.execute(stmt)
                if self._version(db) == latest:
                    return
                # One process migrates; others wait, then see it. A session lock taken before
                # the transaction: the transaction then starts with a fresh view of the catalog.
                db.execute(_MIGRATION_LOCK)
                try:
                    with db.transaction():
                        apply_migrations(
                            db,
                            known,
                            "erpoz_schema_version",
                            too_new=lambda current, latest: StoreError(
                                f"the run store has schema version {current}, newer than this "
                                f"erpoz knows ({latest}); upgrade erpoz",
                                path=self.url,
                            ),
                        )
                finally:
                    db.execute(_MIGRATION_UNLOCK)
        except psycopg.Error as exc:
            raise self._translate(exc, "cannot open the run store") from exc

    @staticmethod
    def _version(db: psycopg.Connection[tuple[Any, ...]]) -> int:
        return schema_version(db, "erpoz_schema_version")

    @property
    def schema_version(self) -> int:
        try:
            with psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as db:
                for stmt in self._session_sql():
                    db.execute(stmt)
                return self._version(db)
        except psycopg.Error as exc:
            raise self._translate(exc, "cannot read the schema version") from exc

    # --- connections ------------------------------------------------------------------------
    async def _connect(self) -> Conn:
        conn: Conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        for stmt in self._session_sql():
            await conn.execute(stmt)
        return conn

    async def _same_loop(self) -> None:
        """Connections and locks belong to one event loop: start afresh in a new one."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        old = [c for c in (self._write, self._read, self._listen, self._claim) if c is not None]
        self._write = self._read = self._listen = self._claim = None
        self._listener = None
        self._wake = None
        for c in old:
            await c.close()  # closing only ends the socket: safe from another loop
        self._write_lock, self._read_lock = asyncio.Lock(), asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._loop = loop

    async def _writer_conn(self) -> Conn:
        if self._write is None or self._write.closed or self._write.broken:
            self._write = await self._connect()
        return self._write

    async def _claimer_conn(self) -> Conn:
        if self._claim is None or self._claim.closed or self._claim.broken:
            self._claim = await self._connect()
        return self._claim

    async def _reader_conn(self) -> Conn:
        if self._read is None or self._read.closed or self._read.broken:
            self._read = await self._connect()
        return self._read

    async def _retrying(
        self,
        doing: str,
        get_conn: Callable[[], Awaitable[Conn]],
        op: Callable[[Conn], Awaitable[T]],
    ) -> T:
        """Run ``op`` on a connection; while the server cannot be reached (it restarts, the
        network drops) reconnect and try again, for up to ``reconnect_s`` seconds. Errors the
        server answers with are not retried. Callers hold the connection's lock."""
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.05
        while True:
            conn: Conn | None = None
            try:
                conn = await get_conn()
                return await op(conn)
            except psycopg.Error as exc:
                lost = isinstance(exc, psycopg.OperationalError) and (
                    conn is None or conn.broken or conn.closed
                )
                if not lost or time.monotonic() + delay > deadline:
                    raise self._translate(exc, doing) from exc
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- writing ----------------------------------------------------------------------------
    async def _commit(self) -> None:
        await self._same_loop()
        async with self._write_lock:
            await self._commit_locked()

    async def _commit_locked(self) -> None:
        if not (self._pending or self._dirty or self._pending_blobs or self._releasing):
            return
        rows, blobs, dirty = self._pending, self._pending_blobs, self._dirty
        releasing = self._releasing
        self._pending, self._pending_blobs, self._dirty, self._releasing = [], {}, {}, []
        tries = 0
        fenced_out: dict[str, str] = {}

        async def write(conn: Conn) -> dict[str, str]:
            nonlocal rows, dirty, releasing, tries
            tries += 1
            if tries > 1 and rows:
                # the connection broke: the last try may have committed before it did
                rows = await _not_yet_recorded(conn, rows)
            while True:
                try:
                    if 0 < len(rows) <= _ONE_STATEMENT_ROWS and not (blobs or dirty or releasing):
                        # the common case (a step's events): one statement, one round trip
                        await _insert_events(conn, rows, self._fence_of(r[0] for r in rows))
                        return {}
                    return await self._write_all(conn, rows, blobs, dirty, releasing, per_run=False)
                except psycopg.errors.IntegrityError:
                    # nothing was written: redo it run by run, keeping the runs accepted
                    return await self._write_all(conn, rows, blobs, dirty, releasing, per_run=True)
                except psycopg.Error as exc:
                    if exc.sqlstate != FENCED:
                        raise
                    # nothing was written: leave out the runs another owner holds now
                    lost = set((exc.diag.message_detail or "").split(","))
                    for run_id in lost:
                        fenced_out[run_id] = "another owner holds the run now"
                    rows = [r for r in rows if r[0] not in lost]
                    dirty = {k: v for k, v in dirty.items() if k not in lost}
                    releasing = [r for r in releasing if r[0] not in lost]

        try:
            refused = await self._retrying("cannot record events", self._writer_conn, write)
            refused.update(fenced_out)
        except StoreError:
            # nothing was written; keep the buffer so a later commit can still record it
            self._pending = rows + self._pending
            self._pending_blobs = {**blobs, **self._pending_blobs}
            self._dirty = {**dirty, **self._dirty}
            self._releasing = releasing + self._releasing
            raise
        self._last_commit = time.monotonic()
        for run_id, owner in releasing:
            if self._fence.get(run_id) == owner:
                del self._fence[run_id]
        for run_id, why in refused.items():
            self._refused[run_id] = why
            self._fence.pop(run_id, None)
            w = self._owned.pop(run_id, None)
            if w is not None and run_id in fenced_out:
                w.lost = True

    def _fence_of(self, run_ids: Iterable[str]) -> Fence | None:
        """The runs named (once each) that this process writes, with the owner it holds each
        as; ``None`` when there is none."""
        ids = [r for r in dict.fromkeys(run_ids) if r in self._fence]
        return (ids, [self._fence[r] for r in ids]) if ids else None

    async def _write_all(
        self,
        conn: Conn,
        rows: list[tuple[Any, ...]],
        blobs: dict[str, str],
        dirty: dict[str, _Snapshot],
        releasing: list[tuple[str, str]],
        *,
        per_run: bool,
    ) -> dict[str, str]:
        refused: dict[str, str] = {}
        now = time.time()
        # Not run by run: one round trip for BEGIN … COMMIT (statements are sent without
        # waiting; an error surfaces when the pipeline syncs at the commit, and then nothing
        # is written). Run by run, each run's savepoint must answer before the next.
        pipeline = conn.pipeline() if not per_run else contextlib.nullcontext()
        async with pipeline, conn.transaction(), conn.cursor() as cur:
            if blobs:
                await cur.executemany(_INSERT_BLOBS, list(blobs.items()))
            if not per_run:
                # the runs written, or (a release alone) the runs let go
                fence = self._fence_of(r[0] for r in (rows or releasing))
                if rows:
                    await _insert_events(conn, rows, fence)
                elif fence is not None:
                    await cur.execute(_FENCE, fence)
            else:
                by_run: dict[str, list[tuple[Any, ...]]] = {}
                for row in rows:
                    by_run.setdefault(row[0], []).append(row)
                for run_id, run_rows in by_run.items():
                    try:
                        async with conn.transaction():  # a savepoint
                            await _insert_events(conn, run_rows, self._fence_of([run_id]))
                    except psycopg.errors.IntegrityError as exc:
                        refused[run_id] = str(exc).strip().splitlines()[0]
                    except psycopg.Error as exc:
                        if exc.sqlstate != FENCED:
                            raise
                        refused[run_id] = "another owner holds the run now"
            updates = [
                (s[0], now, s[1], s[2], s[3], s[4], s[5], s[6], s[7], run_id)
                for run_id, s in dirty.items()
                if run_id not in refused
            ]
            if updates:
                await cur.executemany(
                    "UPDATE runs SET status=%s, updated=%s, head_seq=%s, head_hash=%s, "
                    "output=coalesce(%s, output), error=%s, waiting_step=%s, wake_at=%s, "
                    "wake_on=%s WHERE run_id=%s",
                    updates,
                )
            if releasing:
                # a queued run handed back unfinished wakes the workers waiting for runs
                await cur.execute(
                    "WITH freed AS (UPDATE runs SET owner=NULL, lease_until=NULL FROM "
                    "unnest(%s::text[], %s::text[]) AS o(run_id, owner) "
                    "WHERE runs.run_id = o.run_id AND runs.owner = o.owner "
                    "RETURNING runs.queue, runs.status) "
                    f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM freed "
                    "WHERE queue IS NOT NULL AND status IN ('queued', 'running')",
                    ([r for r, _ in releasing], [o for _, o in releasing]),
                )
        return refused

    def _lost_error(self, run_id: str) -> StoreError:
        return StoreError(
            f"run {run_id} was taken over by another process (this one held it past its "
            f"{self.lease_s:g} s lease); what this process did since is not recorded",
            path=self.url,
        )

    def _check_refused(self, run_id: str) -> None:
        why = self._refused.pop(run_id, None)
        if why is not None:
            raise StoreError(
                f"refused to record events of run {run_id} ({why}): another process recorded "
                "the same step or sequence number; the run is owned elsewhere",
                path=self.url,
            )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            with contextlib.suppress(RuntimeError):
                self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """While this process owns runs: commit what ``batch`` mode holds back (every 50 ms),
        notice cancel requests (every second) and renew the leases (every third of a lease);
        a run whose lease another process took over is marked lost."""
        hold = EFFECTS_SECONDS if self.durability == "effects" else BATCH_SECONDS
        tick = BATCH_SECONDS if self.durability == "batch" else CANCEL_POLL_S
        tick = min(tick, self.lease_s / 6)
        last_poll = last_lease = time.monotonic()
        while self._owned:
            await asyncio.sleep(tick)
            now = time.monotonic()
            try:
                if self._pending and now - self._last_commit >= hold:
                    await self._commit()
                owned = list(self._owned.values())
                if not owned or now - last_poll < min(CANCEL_POLL_S, self.lease_s / 3):
                    continue
                last_poll = now
                ids = [w.run_id for w in owned]
                async with self._write_lock:
                    conn = await self._writer_conn()
                    if now - last_lease >= self.lease_s / 3:
                        last_lease = now
                        cur = await conn.execute(
                            "UPDATE runs SET lease_until=%s FROM "
                            "unnest(%s::text[], %s::text[]) AS o(run_id, owner) "
                            "WHERE runs.run_id = o.run_id AND runs.owner = o.owner "
                            "RETURNING runs.run_id",
                            (time.time() + self.lease_s, ids, [w.owner for w in owned]),
                        )
                        held = {r[0] for r in await cur.fetchall()}
                        for w in owned:
                            if w.run_id not in held and self._owned.get(w.run_id) is w:
                                w.lost = True
                                self._owned.pop(w.run_id, None)
                    cur = await conn.execute(
                        "SELECT run_id FROM runs WHERE cancel_requested AND run_id = ANY(%s)",
                        (ids,),
                    )
                    cancelled = [r[0] for r in await cur.fetchall()]
                for run_id in cancelled:
                    writer = self._owned.get(run_id)
                    if writer is not None:
                        writer.cancel_requested = True
            except (psycopg.Error, StoreError):
                continue  # an unreachable server delays a beat; the lease is long enough

    async def _start(self, row: tuple[Any, ...], buf: _Rows) -> None:
        """Insert a new run (its row and the events of ``buf``) in one transaction with the
        runs created in the same turn of the event loop; returns when it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starts.append((row, buf, fut))
        if len(self._starts) == 1:  # the first of this turn: the others join until it runs
            self._starter = asyncio.get_running_loop().create_task(self._insert_starts())
        await fut

    async def _insert_starts(self) -> None:
        starts, self._starts = self._starts, []
        maybe_there = False  # whether the transaction of them all may have committed
        if len(starts) > 1:
            try:
                async with self._write_lock:
                    await self._insert_together(await self._writer_conn(), starts)
            except psycopg.IntegrityError:
                pass  # a taken id (nothing was written): run by run below, to tell which
            except (psycopg.Error, StoreError):
                maybe_there = True  # the link broke: run by run below, retrying
            else:
                for _, _, fut in starts:
                    if not fut.done():
                        fut.set_result(None)
                return
        for row, buf, fut in starts:
            try:
                await self._insert_run(row, buf, "cannot create the run", maybe_there=maybe_there)
            except BaseException as exc:  # the creator gets it
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)

    @staticmethod
    async def _insert_together(
        conn: Conn, starts: list[tuple[tuple[Any, ...], _Rows, asyncio.Future[None]]]
    ) -> None:
        """Runs' rows and their events in one pipelined transaction, once (no retry)."""
        blobs = {k: v for _, buf, _ in starts for k, v in buf._pending_blobs.items()}
        rows = [r for _, buf, _ in starts for r in buf._pending]
        async with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            if blobs:
                await cur.executemany(_INSERT_BLOBS, list(blobs.items()))
            await cur.executemany(_INSERT_RUN, [row for row, _, _ in starts])
            if rows:
                await _insert_events(conn, rows, None)

    async def _insert_run(
        self,
        row: tuple[Any, ...],
        buf: _Rows,
        doing: str,
        *,
        notify: bool = False,
        maybe_there: bool = False,
    ) -> None:
        """A new run's row and the events of ``buf`` in one pipelined transaction (one round
        trip); with ``notify``, idle workers of its queue are woken when it commits. With
        ``maybe_there``, an earlier try may have committed it already (then it is left)."""
        tries = 1 if maybe_there else 0

        async def insert(conn: Conn) -> None:
            nonlocal tries
            tries += 1
            try:
                async with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
                    if buf._pending_blobs:
                        await cur.executemany(_INSERT_BLOBS, list(buf._pending_blobs.items()))
                    await cur.execute(_INSERT_RUN, row)
                    if buf._pending:
                        await _insert_events(conn, buf._pending, None)
                    if notify:
                        queue = row[15]  # the row is in the order of RUN_ROW_COLUMNS
                        await cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, queue))
            except psycopg.errors.UniqueViolation as exc:
                # after a reconnect the first try may have gone through: then it is this row
                cur = await conn.execute(
                    "SELECT owner, queue, inputs FROM runs WHERE run_id=%s", (row[0],)
                )
                found = await cur.fetchone()
                if tries == 1 or found != (row[12], row[15], row[9]):  # owner, queue, inputs
                    raise StoreError(f"run id {row[0]!r} already exists", path=self.url) from exc

        async with self._write_lock:
            await self._retrying(doing, self._writer_conn, insert)

    async def create_run(self, run: NewRun, owner: str) -> _PostgresWriter:
        await self._same_loop()
        now = time.time()
        w = _PostgresWriter(self, run.run_id, owner, 0, GENESIS, "running")
        buf = _Rows()
        if self.durability != "batch":  # a run that dies in its first step is on record
            buffer_event(w, buf, RUN_STARTED, None, 0, run.started_data(), run.inputs)
        row = run.row(
            "running", now, owner=owner, lease_until=now + self.lease_s, head=(w.seq, w.head)
        )
        await self._start(row, buf)
        self._fence[run.run_id] = owner
        if self.durability == "batch":  # run_started goes with the next group commit
            w.append(RUN_STARTED, data=run.started_data(), payload=run.inputs)
        self._owned[run.run_id] = w
        self._start_heartbeat()
        return w

    async def claim_run(self, run_id: str, owner: str) -> _PostgresWriter:
        await self._same_loop()

        async def claim(conn: Conn) -> tuple[int, str, str]:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT owner, lease_until, status FROM runs WHERE run_id=%s FOR UPDATE",
                    (run_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise StoreError(f"no run {run_id!r} in this store", path=self.url)
                prev_owner, lease_until, status = row
                if (
                    prev_owner is not None
                    and prev_owner != owner
                    and (lease_until or 0) > time.time()
                    and not owner_is_dead(prev_owner)
                ):
                    until = time.strftime("%H:%M:%S", time.localtime(lease_until))
                    raise RunClaimed(
                        f"run {run_id} is being run by {prev_owner} (lease until {until}); "
                        "wait for it, or cancel it with `erpoz runs cancel`",
                        run_id=run_id,
                        owner=prev_owner,
                        path=self.url,
                    )
                cur = await conn.execute(
                    "SELECT seq, hash FROM events WHERE run_id=%s ORDER BY seq DESC LIMIT 1",
                    (run_id,),
                )
                last = await cur.fetchone()
                await conn.execute(
                    "UPDATE runs SET owner=%s, lease_until=%s WHERE run_id=%s",
                    (owner, time.time() + self.lease_s, run_id),
                )
            seq, head = (int(last[0]), str(last[1])) if last else (0, GENESIS)
            return seq, head, str(status)

        async with self._write_lock:
            await self._commit_locked()
            seq, head, status = await self._retrying(
                f"cannot claim run {run_id}", self._writer_conn, claim
            )
        w = _PostgresWriter(self, run_id, owner, seq, head, status)
        self._fence[run_id] = owner
        self._owned[run_id] = w
        self._start_heartbeat()
        return w

    # --- the queue of submitted runs ------------------------------------------------------
    async def submit_run(self, run: NewRun, queue: str) -> None:
        await self._same_loop()
        w = _PostgresWriter(self, run.run_id, "", 0, GENESIS, "running")
        buf = _Rows()  # chained like any run's events, written in the submit's transaction
        buffer_event(w, buf, RUN_STARTED, None, 0, run.started_data(), run.inputs)
        buffer_event(w, buf, RUN_QUEUED, None, 0, {"queue": queue}, None)
        row = run.row("queued", time.time(), queue=queue, head=(w.seq, w.head))
        await self._insert_run(row, buf, "cannot submit the run", notify=True)

    async def claim_next(self, owner: str, queues: Sequence[str]) -> Claim | None:
        if not queues:
            return None
        await self._same_loop()
        qs = list(queues)

        async def claim(conn: Conn) -> tuple[Any, ...] | None:
            # one statement, one round trip: take the oldest claimable row no other worker has
            # locked, and return it as the run's info (its head read from the log)
            cur = await conn.execute(
                "WITH c AS (SELECT run_id, owner FROM runs WHERE queue = ANY(%s) "
                "AND status IN ('queued', 'running') AND (owner IS NULL OR lease_until < %s) "
                "ORDER BY created LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "UPDATE runs r SET owner=%s, lease_until=%s, claims=r.claims+1 FROM c "
                f"WHERE r.run_id = c.run_id RETURNING {_CLAIMED_COLS}, c.owner",
                (qs, time.time(), owner, time.time() + self.lease_s),
            )
            row = await cur.fetchone()
            if row is not None:
                return row
            # a waiting run whose timer is due (or whose message came)
            cur = await conn.execute(
                "WITH c AS (SELECT run_id, owner FROM runs WHERE wake_at <= %s "
                "AND status = 'waiting' AND owner IS NULL AND queue = ANY(%s) "
                "ORDER BY wake_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "UPDATE runs r SET owner=%s, lease_until=%s, claims=r.claims+1 FROM c "
                f"WHERE r.run_id = c.run_id RETURNING {_CLAIMED_COLS}, c.owner",
                (time.time(), qs, owner, time.time() + self.lease_s),
            )
            row = await cur.fetchone()
            if row is not None:
                return row
            dead = await self._take_dead_owned(conn, qs, owner)
            if dead is None:
                return None
            cur = await conn.execute(
                f"SELECT {_RUN_COLS}, %s FROM {_RUN_FROM} WHERE r.run_id=%s", (dead[1], dead[0])
            )
            return await cur.fetchone()

        async with self._claim_lock:
            row = await self._retrying("cannot claim a queued run", self._claimer_conn, claim)
        if row is None:
            return None
        info, prev_owner = _run_info(row), row[-1]
        run_id = info.run_id
        w = _PostgresWriter(self, run_id, owner, info.head_seq, info.head_hash, info.status)
        self._fence[run_id] = owner
        self._owned[run_id] = w
        self._start_heartbeat()
        return Claim(info, w, prev_owner)

    async def _take_dead_owned(
        self, conn: Conn, queues: list[str], owner: str
    ) -> tuple[Any, ...] | None:
        """A run of the queues held by a process of this host that no longer exists (killed
        before its lease lapsed): taken at once instead of after the lease."""
        cur = await conn.execute(
            "SELECT run_id, owner FROM runs WHERE queue = ANY(%s) AND status IN "
            "('queued', 'running') AND owner IS NOT NULL AND lease_until >= %s "
            "AND starts_with(owner, %s) ORDER BY created LIMIT 64",
            (queues, time.time(), HOST + ":"),
        )
        for run_id, prev in await cur.fetchall():
            if not owner_is_dead(prev):
                continue
            cur = await conn.execute(
                "UPDATE runs SET owner=%s, lease_until=%s, claims=claims+1 "
                "WHERE run_id=%s AND owner=%s RETURNING run_id",
                (owner, time.time() + self.lease_s, run_id, prev),
            )
            if await cur.fetchone() is not None:
                return run_id, prev
        return None

    async def wait_for_runs(self, queues: Sequence[str], timeout: float) -> None:
        """Woken by ``NOTIFY`` when a run is submitted or handed back (LISTEN on a connection
        of its own); polling after ``timeout`` covers lapsed leases and a lost listener."""
        await self._same_loop()
        if self._listener is None or self._listener.done():
            self._wake = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop())
        wake = self._wake
        assert wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
        wake.clear()

    async def _listen_loop(self) -> None:
        while not self._closed:
            try:
                conn = self._listen = await self._connect()
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                async for _ in conn.notifies():
                    if self._wake is not None:
                        self._wake.set()
            except psycopg.Error:
                await asyncio.sleep(0.5)  # the server went away: listen again when it is back

    # --- reading ----------------------------------------------------------------------------
    async def _query(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        await self._same_loop()

        async def read(conn: Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, args)
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

        async with self._read_lock:
            return await self._retrying("cannot read the run store", self._reader_conn, read)

    async def _execute(self, doing: str, query: str, args: Sequence[Any]) -> None:
        """One statement on the reading connection (what needs no ordering with the log)."""
        await self._same_loop()

        async def run(conn: Conn) -> None:
            await conn.execute(query, args)

        async with self._read_lock:
            await self._retrying(doing, self._reader_conn, run)

    async def _pieces(self, keys: list[str]) -> dict[str, str]:
        """The pieces (of split payloads) with these keys."""
        rows = await self._query("SELECT sha256, data FROM blobs WHERE sha256 = ANY(%s)", (keys,))
        return dict(rows)

    async def _whole(self, rows: list[Any], col: int = 7, *, strict: bool = True) -> list[Any]:
        """Rows with the split payloads in column ``col`` put back together (the audit's reads
        are not ``strict``: see :func:`erpoz.store._pieces.expand_rows`)."""
        return await aexpand_rows(rows, self._pieces, self.url, col, strict=strict)

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = await self._query(
            f"SELECT {_RUN_COLS} FROM {_RUN_FROM} WHERE r.run_id=%s", (run_id,)
        )
        if not rows:
            rows = (
                await self._query(
                    f"SELECT {_RUN_COLS} FROM {_RUN_FROM} WHERE starts_with(r.run_id, %s) LIMIT 2",
                    (run_id,),
                )
                if len(run_id) >= 6
                else []
            )
            if len(rows) != 1:
                return None
        return _run_info((await self._whole(rows, _OUTPUT))[0])

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[RunInfo]:
        where: list[str] = []
        args: list[Any] = []
        if tenant is not None:
            where.append("r.tenant=%s")
            args.append(tenant)
        if status:
            where.append("r.status=%s")
            args.append(status)
        if flow:
            where.append("r.flow=%s")
            args.append(flow)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._query(
            f"SELECT {_RUN_COLS} FROM {_RUN_FROM} {clause} ORDER BY r.created DESC LIMIT %s",
            [*args, limit],
        )
        return [_run_info(r) for r in await self._whole(rows, _OUTPUT)]

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        rows = await self._query(
            "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
            "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
            "LEFT JOIN blobs b ON b.sha256 = e.blob WHERE e.run_id=%s AND e.seq>%s "
            "ORDER BY e.seq",
            (run_id, after),
        )
        rows = await self._whole(rows)
        return [
            Event(r[0], r[1], r[2], r[3], r[4], r[5], _data(r[6]), r[7], r[8], r[9]) for r in rows
        ]

    async def chain_rows(self, run_id: str | None = None) -> list[ChainRow]:
        where, args = ("WHERE e.run_id = %s", (run_id,)) if run_id is not None else ("", ())
        rows = await self._query(
            "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
            "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
            f"LEFT JOIN blobs b ON b.sha256 = e.blob {where} ORDER BY e.run_id, e.seq",
            args,
        )
        return await self._whole(rows, strict=False)

    async def recorded_heads(self) -> list[RecordedHead]:
        rows = await self._query(
            "SELECT run_id, created, head_seq, head_hash, status FROM runs ORDER BY created, run_id"
        )
        return rows

    async def _in_snapshot(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """``op``'s reads in one REPEATABLE READ transaction: one snapshot of the database."""
        await self._same_loop()

        async def read(conn: Conn) -> T:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return await op(conn)

        async with self._read_lock:
            return await self._retrying("cannot read the run store", self._reader_conn, read)

    async def chain_and_heads(
        self, run_id: str | None = None
    ) -> tuple[list[ChainRow], list[RecordedHead]]:
        where, args = ("WHERE e.run_id = %s", (run_id,)) if run_id is not None else ("", ())

        async def both(conn: Conn) -> tuple[list[ChainRow], list[RecordedHead]]:
            cur = await conn.execute(
                "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                f"LEFT JOIN blobs b ON b.sha256 = e.blob {where} ORDER BY e.run_id, e.seq",
                args,
            )
            rows: list[ChainRow] = await _whole_on(
                conn, await cur.fetchall(), self.url, strict=False
            )
            cur = await conn.execute(
                "SELECT run_id, created, head_seq, head_hash, status FROM runs "
                "ORDER BY created, run_id"
            )
            heads: list[RecordedHead] = await cur.fetchall()
            return rows, heads

        return await self._in_snapshot(both)

    async def run_with_events(self, run_id: str) -> tuple[RunInfo | None, list[Event]]:
        async def both(conn: Conn) -> tuple[RunInfo | None, list[Event]]:
            cur = await conn.execute(
                f"SELECT {_RUN_COLS} FROM {_RUN_FROM} WHERE r.run_id=%s OR "
                "(length(%s) >= 6 AND starts_with(r.run_id, %s)) "
                "ORDER BY r.run_id = %s DESC LIMIT 2",
                (run_id, run_id, run_id, run_id),
            )
            rows = await cur.fetchall()
            if not rows or (len(rows) == 2 and rows[0][0] != run_id):
                return None, []
            info = _run_info((await _whole_on(conn, rows[:1], self.url, _OUTPUT))[0])
            cur = await conn.execute(
                "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                "LEFT JOIN blobs b ON b.sha256 = e.blob WHERE e.run_id=%s ORDER BY e.seq",
                (info.run_id,),
            )
            events = [
                Event(r[0], r[1], r[2], r[3], r[4], r[5], _data(r[6]), r[7], r[8], r[9])
                for r in await _whole_on(conn, await cur.fetchall(), self.url)
            ]
            return info, events

        return await self._in_snapshot(both)

    # --- the budget ledger (on the claims' connection: short transactions) --------------------
    async def _on_ledger(self, doing: str, op: Callable[[Conn], Awaitable[T]]) -> T:
        await self._same_loop()
        async with self._claim_lock:
            return await self._retrying(doing, self._claimer_conn, op)

    async def reserve(
        self,
        amount_usd: float,
        *,
        project_usd: float | None,
        tenant: str,
        tenant_usd: float | None,
        ttl_s: float,
    ) -> Hold:
        limits = limits_of(project_usd, tenant, tenant_usd)
        return await self._on_ledger(
            "cannot reserve budget",
            lambda c: ledger.reserve(c, self._budget_owner, amount_usd, limits, ttl_s),
        )

    async def settle(self, hold: Hold, cost_usd: float) -> None:
        await self._on_ledger(
            "cannot settle a budget hold", lambda c: ledger.settle(c, hold, cost_usd)
        )

    async def budget_scopes(self, scopes: Sequence[str] | None = None) -> list[BudgetScope]:
        return await self._on_ledger(
            "cannot read the budget ledger", lambda c: ledger.scopes(c, scopes)
        )

    # --- rate limits (on the claims' connection: short transactions) -------------------------
    async def take_rate(
        self, key: str, limit: float, window_s: float, amount: float = 1.0, hold_s: float = 0.0
    ) -> RateGrant:
        return await self._on_ledger(
            "cannot take from a rate limit",
            lambda c: pg_limits.take(c, key, limit, window_s, amount, self._budget_owner, hold_s),
        )

    async def settle_rate(self, grant_id: str, amount: float) -> None:
        await self._on_ledger(
            "cannot settle a rate grant", lambda c: pg_limits.settle(c, grant_id, amount)
        )

    async def rate_grants(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        return await self._on_ledger(
            "cannot read rate grants", lambda c: pg_limits.grants(c, key, since)
        )

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl_s: float) -> bool:
        return await self._on_ledger(
            "cannot take a concurrency slot",
            lambda c: pg_limits.acquire_slot(c, key, limit, holder, self._budget_owner, ttl_s),
        )

    async def release_slot(self, key: str, holder: str) -> None:
        await self._on_ledger(
            "cannot release a concurrency slot", lambda c: pg_limits.release_slot(c, key, holder)
        )

    async def renew_slots(self, ttl_s: float) -> None:
        await self._on_ledger(
            "cannot renew concurrency slots",
            lambda c: pg_limits.renew_slots(c, self._budget_owner, ttl_s),
        )

    async def slots_in_use(self, key: str) -> int:
        return await self._on_ledger(
            "cannot read concurrency slots", lambda c: pg_limits.slots(c, key)
        )

    async def limit_states(self) -> list[LimitState]:
        return await self._on_ledger("cannot read the limits", pg_limits.limit_states)

    # --- schedules (on the claims' connection: short transactions) ---------------------------
    async def put_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        return await self._on_ledger(
            "cannot save the schedule", lambda c: pg_sched.put(c, schedule)
        )

    async def list_schedules(self, names: Sequence[str] | None = None) -> list[ScheduleRow]:
        return await self._on_ledger(
            "cannot read the schedules", lambda c: pg_sched.listed(c, names)
        )

    async def delete_schedule(self, name: str) -> bool:
        return await self._on_ledger(
            "cannot remove the schedule", lambda c: pg_sched.delete(c, name)
        )

    async def pause_schedule(self, name: str, paused: bool, next_tick: float | None) -> bool:
        return await self._on_ledger(
            "cannot pause or resume the schedule",
            lambda c: pg_sched.pause(c, name, paused, next_tick),
        )

    async def claim_tick(self, claim: TickClaim) -> bool:
        return await self._on_ledger(
            "cannot claim a schedule's tick", lambda c: pg_sched.claim(c, claim)
        )

    async def reclaim_tick(self, owner: str, lease_s: float) -> Tick | None:
        return await self._on_ledger(
            "cannot reclaim a schedule's tick", lambda c: pg_sched.reclaim(c, owner, lease_s)
        )

    async def finish_tick(
        self, schedule: str, tick: float, owner: str, error: str | None = None
    ) -> bool:
        return await self._on_ledger(
            "cannot record a fired tick",
            lambda c: pg_sched.finish(c, schedule, tick, owner, error),
        )

    async def schedule_ticks(self, schedule: str | None = None, limit: int = 20) -> list[Tick]:
        return await self._on_ledger(
            "cannot read the ticks", lambda c: pg_sched.ticks(c, schedule, limit)
        )

    # --- the Merkle tree ----------------------------------------------------------------------
    async def tree_head(self) -> TreeHead:
        rows = await self._query("SELECT origin, size, frontier FROM merkle_state")
        if not rows:
            raise StoreError(
                "the Merkle tree's state row (merkle_state) is missing: the store was damaged or "
                "tampered with; see `erpoz audit verify --all`",
                path=self.url,
            )
        return TreeHead(str(rows[0][0]), int(rows[0][1]), bytes(rows[0][2]))

    async def tree_leaves(self, run_id: str | None = None) -> list[Leaf]:
        where, args = ("WHERE run_id = %s", (run_id,)) if run_id is not None else ("", ())
        rows = await self._query(
            f"SELECT run_id, seq, pos, leaf FROM merkle_leaves {where} ORDER BY run_id, seq", args
        )
        return [(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    async def tree_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        if level == 0:
            rows = await self._query(
                "SELECT leaf FROM merkle_leaves WHERE pos >= %s AND pos < %s ORDER BY pos",
                (start, end),
            )
        else:
            check_level(level)
            rows = await self._query(
                "SELECT hash FROM merkle_nodes WHERE level = %s AND idx >= %s AND idx < %s "
                "ORDER BY idx",
                (level, start, end),
            )
        return [bytes(r[0]) for r in rows]

    async def audit_head(self) -> tuple[TreeHead, list[RecordedHead]]:
        async def both(conn: Conn) -> tuple[TreeHead, list[RecordedHead]]:
            cur = await conn.execute("SELECT origin, size, frontier FROM merkle_state")
            state = await cur.fetchall()
            cur = await conn.execute(
                "SELECT run_id, created, head_seq, head_hash, status FROM runs "
                "ORDER BY created, run_id"
            )
            heads: list[RecordedHead] = await cur.fetchall()
            if not state:
                raise StoreError(
                    "the Merkle tree's state row (merkle_state) is missing: the store was "
                    "damaged or tampered with; see `erpoz audit verify --all`",
                    path=self.url,
                )
            return TreeHead(str(state[0][0]), int(state[0][1]), bytes(state[0][2])), heads

        return await self._in_snapshot(both)

    async def audit_rows(
        self,
        first: str | None = None,
        last: str | None = None,
        *,
        keys: bool = True,
        as_of: int | None = None,
        run_id: str | None = None,
    ) -> tuple[list[ChainRow], list[Any]]:
        await self._same_loop()
        where, args = run_range(first, last, "%s", run_id)

        async def read(conn: Conn) -> tuple[list[ChainRow], list[Any]]:
            async with conn.transaction():  # one snapshot for both
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                late: list[tuple[str, int]] = []
                if as_of is not None:
                    cur = await conn.execute(
                        "SELECT run_id, seq FROM merkle_leaves WHERE pos >= %s", (as_of,)
                    )
                    late = await cur.fetchall()
                cur = await conn.execute(
                    "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                    "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                    f"LEFT JOIN blobs b ON b.sha256 = e.blob {where.format(t='e.')} "
                    "ORDER BY e.run_id, e.seq",
                    args,
                )
                rows: list[ChainRow] = await _whole_on(
                    conn, await cur.fetchall(), self.url, strict=False
                )
                cur = await conn.execute(
                    f"SELECT {'run_id, seq, ' if keys else ''}pos, leaf FROM merkle_leaves "
                    f"{where.format(t='')} "
                    "ORDER BY run_id, seq",
                    args,
                )
                got = await cur.fetchall()
            if not keys:
                placed = [(int(r[0]), bytes(r[1])) for r in got]
                return as_of_tree(rows, placed, late, as_of, keys=False)
            leaves = [(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in got]
            return as_of_tree(rows, leaves, late, as_of, keys=True)

        async with self._read_lock:
            return await self._retrying("cannot read the run store", self._reader_conn, read)

    async def run_split(self, parts: int) -> list[str]:
        runs = await self._query("SELECT run_id, head_seq FROM runs ORDER BY run_id")
        return split_runs(runs, parts)

    def reopened(self) -> PostgresStore:
        return PostgresStore(
            self._conninfo, durability=self.durability, fsync=self.fsync, schema=self.schema
        )

    async def request_cancel(self, run_id: str) -> None:
        await self._execute(
            "cannot request cancellation",
            "UPDATE runs SET cancel_requested=true WHERE run_id=%s",
            (run_id,),
        )
        w = self._owned.get(run_id)
        if w is not None:
            w.cancel_requested = True

    # --- durable waits: messages, run events, due runs --------------------------------------
    async def _write_one(self, doing: str, *statements: tuple[str, Sequence[Any]]) -> Any:
        """Statements in one transaction on the reading connection; the last one's first row."""
        await self._same_loop()

        async def run(conn: Conn) -> Any:
            row = None
            async with conn.transaction():
                for query, args in statements:
                    cur = await conn.execute(query, args)
                    row = await cur.fetchone() if cur.description else None
            return row

        async with self._read_lock:
            return await self._retrying(doing, self._reader_conn, run)

    async def send_message(self, run_id: str, topic: str, payload: str) -> int:
        now = time.time()
        row = await self._write_one(
            f"cannot send a message to run {run_id}",
            (_WAKE_ON, (now, run_id, f"msg:{topic}", now)),
            (
                "INSERT INTO messages (run_id, topic, payload, created) VALUES (%s, %s, %s, %s) "
                "RETURNING id",
                (run_id, topic, payload, now),
            ),
        )
        return int(row[0])

    async def messages(self, run_id: str, topic: str) -> list[tuple[int, str]]:
        rows = await self._query(
            "SELECT id, payload FROM messages WHERE run_id=%s AND topic=%s ORDER BY id",
            (run_id, topic),
        )
        return [(int(i), str(p)) for i, p in rows]

    async def set_run_event(self, run_id: str, key: str, payload: str) -> None:
        now = time.time()
        await self._write_one(
            f"cannot set event {key!r} of run {run_id}",
            (
                "INSERT INTO run_events (run_id, key, payload, updated) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (run_id, key) DO UPDATE SET payload=excluded.payload, "
                "updated=excluded.updated",
                (run_id, key, payload, now),
            ),
            (_WAKE_WAITERS, (now, f"event:{run_id}:{key}", now)),
        )

    async def get_run_event(self, run_id: str, key: str) -> str | None:
        rows = await self._query(
            "SELECT payload FROM run_events WHERE run_id=%s AND key=%s", (run_id, key)
        )
        return str(rows[0][0]) if rows else None

    async def wake_run(self, run_id: str) -> None:
        now = time.time()
        await self._write_one(
            f"cannot wake run {run_id}",
            (_WAKE, (now, run_id, now)),
        )

    async def claim_due(self, owner: str, *, flow: str | None = None) -> Claim | None:
        await self._same_loop()

        async def claim(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                "WITH c AS (SELECT run_id FROM runs WHERE wake_at <= %s AND status = 'waiting' "
                "AND owner IS NULL AND queue IS NULL AND (flow = %s OR (%s::text IS NULL AND "
                "source IS NOT NULL)) ORDER BY wake_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "UPDATE runs r SET owner=%s, lease_until=%s, claims=r.claims+1 FROM c "
                f"WHERE r.run_id = c.run_id RETURNING {_CLAIMED_COLS}",
                (time.time(), flow, flow, owner, time.time() + self.lease_s),
            )
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row

        async with self._claim_lock:
            row = await self._retrying("cannot claim a due run", self._claimer_conn, claim)
        if row is None:
            return None
        info = _run_info(row)
        w = _PostgresWriter(self, info.run_id, owner, info.head_seq, info.head_hash, info.status)
        self._fence[info.run_id] = owner
        self._owned[info.run_id] = w
        self._start_heartbeat()
        return Claim(info, w, None)

    async def due_runs(self, *, limit: int = 100) -> list[str]:
        now = time.time()
        rows = await self._query(
            "SELECT run_id FROM runs WHERE wake_at <= %s AND status='waiting' "
            "AND queue IS NULL AND (owner IS NULL OR lease_until < %s) "
            "ORDER BY wake_at LIMIT %s",
            (now, now, limit),
        )
        return [str(r[0]) for r in rows]

    async def cache_get(self, key: str) -> str | None:
        rows = await self._query("SELECT output FROM cache WHERE key=%s", (key,))
        return str(rows[0][0]) if rows else None

    async def cache_put(self, key: str, step: str, output: str) -> None:
        await self._execute(
            "cannot write the output cache",
            "INSERT INTO cache (key, step, output, created) VALUES (%s,%s,%s,%s) "
            "ON CONFLICT (key) DO UPDATE SET step=excluded.step, "
            "output=excluded.output, created=excluded.created",
            (key, step, output, time.time()),
        )

    async def close(self) -> None:
        self._closed = True
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
        try:
            await self._commit()
        finally:
            for c in (self._write, self._read, self._listen, self._claim):
                if c is not None:
                    await c.close()
            self._write = self._read = self._listen = self._claim = None


_OUTPUT = 10
"""The column of a runs row (``_RUN_COLS``) that holds the run's output."""
_DECODE = json.JSONDecoder().decode


def _data(text: str) -> Any:
    """An event's data (``{}``, the data of most events, without the JSON decoder)."""
    return {} if text == "{}" else _DECODE(text)


async def _whole_on(
    conn: Conn, rows: list[Any], where: str, col: int = 7, *, strict: bool = True
) -> list[Any]:
    """Rows with the split payloads in column ``col`` put back together, read on ``conn`` (in
    its transaction)."""

    async def fetch(keys: list[str]) -> dict[str, str]:
        cur = await conn.execute("SELECT sha256, data FROM blobs WHERE sha256 = ANY(%s)", (keys,))
        return dict(await cur.fetchall())

    return await aexpand_rows(rows, fetch, where, col, strict=strict)


def _run_info(r: Sequence[Any]) -> RunInfo:
    return RunInfo(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        int(r[13]),
        r[14],
        r[15],
        bool(r[16]),
        r[17],
        r[18],
        int(r[19]),
        r[20],
        r[21],
    )
