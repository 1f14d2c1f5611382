"""The embedded default store: one SQLite file in WAL mode, numbered migrations.

All writes go through one connection on the event loop's thread; a commit in WAL mode with
``synchronous=NORMAL`` is a short append to the WAL (it survives a killed process; ``fsync=True``
adds ``synchronous=FULL`` for power loss). Events of every run owned by this process share one
buffer, so one commit carries all that is pending: group commit for free under concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import RunClaimed, StoreError
from . import _schedules as sched
from ._buffer import BATCH_SECONDS, DURABILITIES, EFFECTS_SECONDS, StoreWriter
from ._ledger import BudgetScope, Hold, limits_of, sqlite_reserve, sqlite_scopes, sqlite_settle
from ._limits import (
    LimitState,
    RateGrant,
    sqlite_acquire_slot,
    sqlite_grants,
    sqlite_limit_states,
    sqlite_release_slot,
    sqlite_renew_slots,
    sqlite_slots,
    sqlite_take,
)
from ._limits import sqlite_settle as sqlite_settle_rate
from ._merkle import (
    Leaf,
    TreeHead,
    as_of_tree,
    run_range,
    split_runs,
    sqlite_append,
    sqlite_backfill,
    sqlite_hashes,
    sqlite_head,
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
from ._owner import new_owner, owner_is_dead
from ._pieces import expand_rows
from ._protocol import Claim
from ._schedules import ScheduleRow, Tick, TickClaim

T = TypeVar("T")

LEASE_S = 30.0
SUBMIT_POLL_S = 0.25
_TAKEN_OVER = "another owner holds the run now"
_ID_TAKEN = "the run id is taken"
CANCEL_POLL_S = 1.0

_WAKE_ON = (
    "UPDATE runs SET wake_at=? WHERE run_id=? AND status='waiting' AND wake_on=? AND wake_at > ?"
)
_WAKE_WAITERS = "UPDATE runs SET wake_at=? WHERE status='waiting' AND wake_on=? AND wake_at > ?"
_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_RUN_COLS = (
    "run_id, flow, source, fingerprint, status, created, updated, parent_run_id, replay_from, "
    "inputs, output, error, waiting_step, "
    "coalesce((SELECT max(e.seq) FROM events e WHERE e.run_id = runs.run_id), 0), "
    "coalesce((SELECT e.hash FROM events e WHERE e.run_id = runs.run_id "
    "ORDER BY e.seq DESC LIMIT 1), head_hash), owner, cancel_requested, tenant, queue, claims, "
    "wake_at, wake_on"
)
"""The runs row is refreshed on status changes; the head always comes from the log itself."""
_OUTPUT = 10
"""The column of a runs row (``_RUN_COLS``) that holds the run's output."""
_DUE = (
    "SELECT run_id, owner FROM runs WHERE wake_at <= ? AND status = 'waiting' "
    "AND owner IS NULL AND queue IN ({marks}) ORDER BY wake_at LIMIT 1"
)
"""A waiting run of the queues whose timer is due (or whose message came)."""
_INSERT_RUN = f"INSERT INTO runs ({RUN_ROW_COLUMNS}) VALUES ({','.join('?' * 16)})"


def migrations() -> list[tuple[int, str]]:
    """The numbered SQL migrations shipped with erpoz, in order."""
    folder = resources.files("erpoz.store").joinpath("migrations/sqlite")
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), entry.read_text()))
    return sorted(out)


class _SQLiteWriter(StoreWriter):
    """The run's row is refreshed from the writer itself; a run's commit is a group commit
    (the runs of this process that commit together share one transaction)."""

    __slots__ = ()
    _store: SQLiteStore

    def _projection(self) -> _SQLiteWriter:
        return self

    async def _commit_run(self) -> None:
        await self._store._group_commit(self.run_id)

    async def _commit_batch(self) -> None:
        self._store._commit()


class SQLiteStore:
    """Run store on a SQLite file (``durability``: ``sync``, ``batch`` or ``effects``)."""

    def __init__(self, path: str | Path, *, durability: str = "sync", fsync: bool = False) -> None:
        if durability not in DURABILITIES:
            raise StoreError(
                f"durability must be one of {', '.join(DURABILITIES)} for SQLite, "
                f"got {durability!r}"
            )
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.durability = durability
        self.lease_s = LEASE_S
        self._pending: list[tuple[Any, ...]] = []
        self._pending_blobs: dict[str, str] = {}
        self._seen_pieces: set[str] = set()  # piece keys buffered once (see _buffer._split)
        self._dirty: dict[str, _SQLiteWriter] = {}
        self._owned: dict[str, _SQLiteWriter] = {}
        self._releasing: list[tuple[str, str | None]] = []
        self._refused: dict[str, str] = {}
        self._new_runs: list[tuple[Any, ...]] = []  # rows of runs created, for the next commit
        self._fence: dict[str, str] = {}  # run id -> the owner this process writes it as
        self._last_commit = time.monotonic()
        self._commits = 0  # successful commits so far: who waited for a group sees it move
        self._starting = 0  # runs being created, waiting for their first commit
        self._heartbeat: asyncio.Task[None] | None = None
        self._budget_owner = new_owner()  # who holds budget reservations made here
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc, "cannot open the run store") from exc
        except OSError as exc:
            raise StoreError(f"cannot open the run store: {exc}", path=str(self.path)) from exc

    # --- set-up -----------------------------------------------------------------------------
    def _translate(self, exc: sqlite3.Error, doing: str) -> StoreError:
        msg = str(exc)
        if "locked" in msg or "busy" in msg:
            return StoreError(
                f"{doing}: the database is locked by another process for more than 5 s "
                "(a long transaction elsewhere?); try again",
                path=str(self.path),
            )
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return StoreError(
                f"{doing}: the file is not an erpoz database or is corrupt ({msg}); "
                "point --store at another file or restore a backup",
                path=str(self.path),
            )
        return StoreError(f"{doing}: {msg}", path=str(self.path))

    def _migrate(self) -> None:
        known = migrations()
        latest = known[-1][0]
        if self.schema_version == latest:
            return
        self._db.execute("BEGIN IMMEDIATE")  # one process migrates; others wait, then see it
        try:
            current = self.schema_version
            had_tree = self._has_table("merkle_state")
            if current > latest:
                raise StoreError(
                    f"the run store has schema version {current}, newer than this erpoz knows "
                    f"({latest}); upgrade erpoz",
                    path=str(self.path),
                )
            for number, sql in known:
                if number > current:
                    self._apply(sql, number)
            if not had_tree and self._has_table("merkle_state"):
                sqlite_backfill(self._db)  # the events recorded before the tree existed
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _apply(self, sql: str, number: int) -> None:
        for statement in _split_sql(sql):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version={number}")

    def _has_table(self, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(sql, (name,)).fetchone() is not None

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # --- writing ----------------------------------------------------------------------------
    async def _group_commit(self, run_id: str | None = None) -> None:
        """Make everything appended so far durable, in one commit with every other writer of
        this store that asks in the same turn of the event loop: each yields once, and the
        first to resume commits for all (the others find their events already committed).
        The writer of ``run_id`` commits at once when no other run is in flight here (yielding
        costs a turn of the loop); a run being created (``None``) always yields, as the runs
        started together are not in flight yet."""
        owned = self._owned
        if run_id is None or len(owned) + self._starting > (run_id in owned):
            ticket = self._commits
            await asyncio.sleep(0)
            if self._commits != ticket:
                return
        self._commit()

    def _commit(self) -> None:
        if not self._pending and not self._dirty and not self._pending_blobs:
            return
        db = self._db
        rows, blobs, dirty = self._pending, self._pending_blobs, self._dirty
        releasing, new_runs = self._releasing, self._new_runs
        now = time.time()
        refused: dict[str, str] = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                refused = self._insert_new_runs(new_runs) if new_runs else {}
                for run_id, why in self._fenced_out(rows, releasing).items():
                    refused.setdefault(run_id, why)  # a taken id says so, not "taken over"
                if refused:  # another owner took these runs over: nothing of theirs is written
                    rows = [r for r in rows if r[0] not in refused]
                    releasing = [r for r in releasing if r[0] not in refused]
                if blobs:
                    db.executemany(
                        "INSERT OR IGNORE INTO blobs (sha256, data) VALUES (?, ?)",
                        list(blobs.items()),
                    )
                db.execute("SAVEPOINT all_events")
                try:
                    db.executemany(_INSERT_EVENT, rows)
                except sqlite3.IntegrityError:
                    db.execute("ROLLBACK TO all_events")
                    refused.update(self._insert_per_run(rows))
                db.execute("RELEASE all_events")
                self._append_tree([r for r in rows if r[0] not in refused] if refused else rows)
                db.executemany(
                    "UPDATE runs SET status=?, updated=?, head_seq=?, head_hash=?, "
                    "output=coalesce(?, output), error=?, waiting_step=?, wake_at=?, wake_on=? "
                    "WHERE run_id=?",
                    [
                        (
                            w.status,
                            now,
                            w.seq,
                            w.head,
                            w.output,
                            w.error,
                            w.waiting_step,
                            w.wake_at,
                            w.wake_on,
                            w.run_id,
                        )
                        for w in dirty.values()
                        if w.run_id not in refused
                    ],
                )
                if releasing:
                    db.executemany(
                        "UPDATE runs SET owner=NULL, lease_until=NULL "
                        "WHERE run_id=? AND owner IS ?",
                        releasing,
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # nothing was written; keep the buffer so a later commit can still record it
            raise self._translate(exc, "cannot record events") from exc
        self._pending, self._pending_blobs, self._dirty, self._releasing = [], {}, {}, []
        self._new_runs = []
        self._last_commit = time.monotonic()
        self._commits += 1
        for run_id, owner in releasing:
            if self._fence.get(run_id) == owner:
                del self._fence[run_id]
        for run_id, why in refused.items():
            self._refused[run_id] = why
            self._fence.pop(run_id, None)
            w = self._owned.pop(run_id, None)
            if w is not None and why == _TAKEN_OVER:
                w.lost = True

    def _append_tree(self, rows: list[tuple[Any, ...]]) -> None:
        """The events just inserted join the Merkle tree (inside the commit's transaction)."""
        sqlite_append(self._db, rows)

    def _insert_new_runs(self, new_runs: list[tuple[Any, ...]]) -> dict[str, str]:
        """The rows of runs created since the last commit; a run whose id is taken already is
        refused (its events with it), the others go in."""
        db = self._db
        db.execute("SAVEPOINT new_runs")
        try:
            db.executemany(_INSERT_RUN, new_runs)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO new_runs")
            refused = {}
            for row in new_runs:
                try:
                    db.execute(_INSERT_RUN, row)
                except sqlite3.IntegrityError:
                    refused[row[0]] = _ID_TAKEN
            db.execute("RELEASE new_runs")
            return refused
        db.execute("RELEASE new_runs")
        return {}

    def _fenced_out(
        self, rows: list[tuple[Any, ...]], releasing: list[tuple[str, str | None]]
    ) -> dict[str, str]:
        """The runs of this commit that another owner holds now (checked inside the commit's
        write transaction, so no claim can slip in between)."""
        runs = {row[0] for row in rows} | {r for r, _ in releasing}
        fence = {r: o for r in runs if (o := self._fence.get(r)) is not None}
        if not fence:
            return {}
        holders = self._holders(list(fence))
        return {r: _TAKEN_OVER for r, o in fence.items() if holders.get(r) != o}

    def _holders(self, run_ids: list[str]) -> dict[str, str | None]:
        """Who holds each of the runs now, as their rows say."""
        marks = ",".join("?" * len(run_ids))
        return dict(
            self._db.execute(f"SELECT run_id, owner FROM runs WHERE run_id IN ({marks})", run_ids)
        )

    def _insert_per_run(self, rows: list[tuple[Any, ...]]) -> dict[str, str]:
        """Insert run by run so that one refused run does not lose the others' events."""
        by_run: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_run.setdefault(row[0], []).append(row)
        refused: dict[str, str] = {}
        for run_id, run_rows in by_run.items():
            self._db.execute("SAVEPOINT run_events")
            try:
                self._db.executemany(_INSERT_EVENT, run_rows)
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK TO run_events")
                refused[run_id] = str(exc)
            self._db.execute("RELEASE run_events")
        return refused

    def _lost_error(self, run_id: str) -> StoreError:
        return StoreError(
            f"run {run_id} was taken over by another process (this one held it past its "
            f"{self.lease_s:g} s lease); what this process did since is not recorded",
            path=str(self.path),
        )

    def _check_refused(self, run_id: str) -> None:
        why = self._refused.pop(run_id, None)
        if why == _ID_TAKEN:
            raise StoreError(f"run id {run_id!r} already exists", path=str(self.path))
        if why is not None:
            raise StoreError(
                f"refused to record events of run {run_id} ({why}): another process recorded "
                "the same step or sequence number; the run is owned elsewhere",
                path=str(self.path),
            )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            with contextlib.suppress(RuntimeError):
                self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """While this process owns runs: commit what ``batch`` mode holds back (every 50 ms)
        and what ``effects`` mode held for a second, notice cancel requests (every second) and
        renew the leases (every 10 s)."""
        hold = EFFECTS_SECONDS if self.durability == "effects" else BATCH_SECONDS
        tick = BATCH_SECONDS if self.durability == "batch" else CANCEL_POLL_S
        tick = min(tick, self.lease_s / 6)
        last_poll = last_lease = time.monotonic()
        while self._owned:
            await asyncio.sleep(tick)
            owned = list(self._owned)
            now = time.monotonic()
            try:
                if self._pending and now - self._last_commit >= hold:
                    self._commit()
                if not owned or now - last_poll < min(CANCEL_POLL_S, self.lease_s / 3):
                    continue
                last_poll = now
                marks = ",".join("?" * len(owned))
                if now - last_lease >= self.lease_s / 3:
                    last_lease = now
                    self._renew(owned)
                for (run_id,) in self._db.execute(
                    f"SELECT run_id FROM runs WHERE cancel_requested=1 AND run_id IN ({marks})",
                    owned,
                ):
                    w = self._owned.get(run_id)
                    if w is not None:
                        w.cancel_requested = True
            except (sqlite3.Error, StoreError):
                continue  # a busy database delays a beat; the lease is long enough

    def _renew(self, owned: list[str]) -> None:
        """Extend the leases this process still holds; a run whose row names another owner was
        taken over (this process stalled past its lease): its writer is lost."""
        holders = self._holders(owned)
        mine = []
        for run_id in owned:
            w = self._owned.get(run_id)
            if w is None:
                continue
            if w.owner is not None and holders.get(run_id) != w.owner:
                w.lost = True
                self._owned.pop(run_id, None)
            else:
                mine.append(run_id)
        if mine:
            self._db.execute(
                f"UPDATE runs SET lease_until=? WHERE run_id IN ({','.join('?' * len(mine))})",
                [time.time() + self.lease_s, *mine],
            )

    async def create_run(self, run: NewRun, owner: str) -> _SQLiteWriter:
        now = time.time()
        w = _SQLiteWriter(self, run.run_id, owner, 0, GENESIS, "running")
        # the row and run_started in one transaction: a run that dies in its first step is on
        # record (resumable), for one commit instead of two, shared by the runs that start
        # together
        w.append(RUN_STARTED, data=run.started_data(), payload=run.inputs)
        self._dirty.pop(run.run_id, None)  # inserted whole, with its head
        lease = now + self.lease_s
        self._new_runs.append(
            run.row("running", now, owner=owner, lease_until=lease, head=(w.seq, w.head))
        )
        self._fence[run.run_id] = owner
        self._starting += 1  # in flight from now: others group their commits with it
        try:
            await self._group_commit()
        finally:
            self._starting -= 1
        self._check_refused(run.run_id)
        self._owned[run.run_id] = w  # (only now: the heartbeat renews the leases of these)
        self._start_heartbeat()
        return w

    async def claim_run(self, run_id: str, owner: str) -> _SQLiteWriter:
        try:
            self._commit()
            row = self._db.execute(
                "SELECT owner, lease_until, head_seq, head_hash, status FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise StoreError(f"no run {run_id!r} in this store", path=str(self.path))
            prev_owner, lease_until, seq, head, status = row
            last = self._db.execute(
                "SELECT seq, hash FROM events WHERE run_id=? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone()
            if last is not None:
                seq, head = last
            if (
                prev_owner is not None
                and prev_owner != owner
                and (lease_until or 0) > time.time()
                and not owner_is_dead(prev_owner)
            ):
                raise RunClaimed(
                    f"run {run_id} is being run by {prev_owner} (lease until "
                    f"{time.strftime('%H:%M:%S', time.localtime(lease_until))}); wait for it, "
                    "or cancel it with `erpoz runs cancel`",
                    run_id=run_id,
                    owner=prev_owner,
                    path=str(self.path),
                )
            cur = self._db.execute(
                "UPDATE runs SET owner=?, lease_until=? WHERE run_id=? AND owner IS ?",
                (owner, time.time() + self.lease_s, run_id, prev_owner),
            )
            if cur.rowcount != 1:
                raise RunClaimed(
                    f"run {run_id} was claimed by another process just now",
                    run_id=run_id,
                    path=str(self.path),
                )
        except sqlite3.Error as exc:
            raise self._translate(exc, f"cannot claim run {run_id}") from exc
        w = _SQLiteWriter(self, run_id, owner, seq, head, status)
        self._fence[run_id] = owner
        self._owned[run_id] = w
        self._start_heartbeat()
        return w

    # --- the queue of submitted runs ------------------------------------------------------
    async def submit_run(self, run: NewRun, queue: str) -> None:
        w = _SQLiteWriter(self, run.run_id, None, 0, GENESIS, "running")
        w.append(RUN_STARTED, data=run.started_data(), payload=run.inputs)
        w.append(RUN_QUEUED, data={"queue": queue})
        self._dirty.pop(run.run_id, None)  # inserted whole, with its head
        self._new_runs.append(run.row("queued", time.time(), queue=queue, head=(w.seq, w.head)))
        self._commit()  # a worker in another process must see it now, whatever the durability
        self._check_refused(run.run_id)

    async def claim_next(self, owner: str, queues: Sequence[str]) -> Claim | None:
        if not queues:
            return None
        marks = ",".join("?" * len(queues))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = self._db.execute(
                    f"SELECT run_id, owner FROM runs WHERE queue IN ({marks}) AND status IN "
                    "('queued', 'running') AND (owner IS NULL OR lease_until < ?) "
                    "ORDER BY created LIMIT 1",
                    [*queues, now],
                ).fetchone()
                if row is None:
                    row = self._db.execute(_DUE.format(marks=marks), [now, *queues]).fetchone()
                if row is None:
                    row = self._dead_owned(marks, queues)
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                run_id, prev_owner = row
                self._db.execute(
                    "UPDATE runs SET owner=?, lease_until=?, claims=claims+1 WHERE run_id=?",
                    (owner, now + self.lease_s, run_id),
                )
                info = _run_info(
                    self._db.execute(
                        f"SELECT {_RUN_COLS} FROM runs WHERE run_id=?", (run_id,)
                    ).fetchone()
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot claim a queued run") from exc
        return self._own(info, owner, prev_owner)

    def _own(self, info: RunInfo, owner: str, prev_owner: str | None) -> Claim:
        """Hold a run just claimed: its writer, its fence and the lease's heartbeat."""
        w = _SQLiteWriter(self, info.run_id, owner, info.head_seq, info.head_hash, info.status)
        self._fence[info.run_id] = owner
        self._owned[info.run_id] = w
        self._start_heartbeat()
        return Claim(info, w, prev_owner)

    def _dead_owned(self, marks: str, queues: Sequence[str]) -> tuple[str, str] | None:
        """A run of the queues whose owner is a process of this host that no longer exists
        (killed before its lease lapsed): no need to wait for the lease."""
        for run_id, prev in self._db.execute(
            f"SELECT run_id, owner FROM runs WHERE queue IN ({marks}) AND status IN "
            "('queued', 'running') AND owner IS NOT NULL ORDER BY created",
            list(queues),
        ):
            if owner_is_dead(prev):
                return run_id, prev
        return None

    async def wait_for_runs(self, queues: Sequence[str], timeout: float) -> None:
        # another process may submit, and SQLite tells nobody: look again soon
        await asyncio.sleep(min(timeout, SUBMIT_POLL_S))

    # --- reading ----------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc

    async def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._query(f"SELECT {_RUN_COLS} FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            rows = (
                self._query(
                    f"SELECT {_RUN_COLS} FROM runs WHERE run_id LIKE ? LIMIT 2", (run_id + "%",)
                )
                if len(run_id) >= 6
                else []
            )
            if len(rows) != 1:
                return None
        return _run_info(self._whole(rows, _OUTPUT)[0])

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[RunInfo]:
        where, args = [], []
        if tenant is not None:
            where.append("tenant=?")
            args.append(tenant)
        if status:
            where.append("status=?")
            args.append(status)
        if flow:
            where.append("flow=?")
            args.append(flow)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT {_RUN_COLS} FROM runs {clause} ORDER BY created DESC LIMIT ?",
            [*args, limit],
        )
        return [_run_info(r) for r in self._whole(rows, _OUTPUT)]

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        rows = self._query(
            "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
            "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
            "LEFT JOIN blobs b ON b.sha256 = e.blob WHERE e.run_id=? AND e.seq>? ORDER BY e.seq",
            (run_id, after),
        )
        rows = self._whole(rows)
        return [
            Event(r[0], r[1], r[2], r[3], r[4], r[5], _data(r[6]), r[7], r[8], r[9]) for r in rows
        ]

    async def chain_rows(self, run_id: str | None = None) -> list[ChainRow]:
        where, args = ("WHERE e.run_id = ?", (run_id,)) if run_id is not None else ("", ())
        return self._whole(
            strict=False,
            rows=self._query(
                "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                f"LEFT JOIN blobs b ON b.sha256 = e.blob {where} ORDER BY e.run_id, e.seq",
                args,
            ),
        )

    async def recorded_heads(self) -> list[RecordedHead]:
        return self._query(
            "SELECT run_id, created, head_seq, head_hash, status FROM runs "
            "ORDER BY created, run_id",
            (),
        )

    def _pieces(self, keys: list[str]) -> dict[str, str]:
        """The pieces (of split payloads) with these keys."""
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            out.update(
                self._db.execute(f"SELECT sha256, data FROM blobs WHERE sha256 IN ({marks})", part)
            )
        return out

    def _whole(self, rows: list[Any], col: int = 7, *, strict: bool = True) -> list[Any]:
        """Rows with the split payloads in column ``col`` put back together (event rows: 7;
        the audit's reads are not ``strict``: see :func:`expand_rows`)."""
        try:
            return expand_rows(rows, self._pieces, str(self.path), col, strict=strict)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc

    def _snapshot(self, *reads: tuple[str, tuple[Any, ...] | list[Any]]) -> list[list[Any]]:
        """Several reads in one read transaction: one snapshot of the file (WAL); the first
        read's rows are events whose split payloads are put back together."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                out = [db.execute(sql, args).fetchall() for sql, args in reads]
                out[0] = expand_rows(out[0], self._pieces, str(self.path), strict=False)
                return out
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc

    async def chain_and_heads(
        self, run_id: str | None = None
    ) -> tuple[list[ChainRow], list[RecordedHead]]:
        where, args = ("WHERE e.run_id = ?", (run_id,)) if run_id is not None else ("", ())
        rows, heads = self._snapshot(
            (
                "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                f"LEFT JOIN blobs b ON b.sha256 = e.blob {where} ORDER BY e.run_id, e.seq",
                args,
            ),
            (
                "SELECT run_id, created, head_seq, head_hash, status FROM runs "
                "ORDER BY created, run_id",
                (),
            ),
        )
        return rows, heads

    async def run_with_events(self, run_id: str) -> tuple[RunInfo | None, list[Event]]:
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc
        try:
            info = await self.get_run(run_id)
            events = await self.events(info.run_id) if info is not None else []
        finally:
            self._db.execute("COMMIT")
        return info, events

    # --- the budget ledger ------------------------------------------------------------------
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
        try:
            return sqlite_reserve(self._db, self._budget_owner, amount_usd, limits, ttl_s)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot reserve budget") from exc

    async def settle(self, hold: Hold, cost_usd: float) -> None:
        try:
            sqlite_settle(self._db, hold, cost_usd)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot settle a budget hold") from exc

    async def budget_scopes(self, scopes: Sequence[str] | None = None) -> list[BudgetScope]:
        try:
            return sqlite_scopes(self._db, scopes)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the budget ledger") from exc

    # --- rate limits --------------------------------------------------------------------------
    async def take_rate(
        self, key: str, limit: float, window_s: float, amount: float = 1.0, hold_s: float = 0.0
    ) -> RateGrant:
        return self._on_schedules(
            "cannot take from a rate limit",
            sqlite_take,
            key,
            limit,
            window_s,
            amount,
            self._budget_owner,
            hold_s,
        )

    async def settle_rate(self, grant_id: str, amount: float) -> None:
        self._on_schedules("cannot settle a rate grant", sqlite_settle_rate, grant_id, amount)

    async def rate_grants(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        return self._on_schedules("cannot read rate grants", sqlite_grants, key, since)

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl_s: float) -> bool:
        return self._on_schedules(
            "cannot take a concurrency slot",
            sqlite_acquire_slot,
            key,
            limit,
            holder,
            self._budget_owner,
            ttl_s,
        )

    async def release_slot(self, key: str, holder: str) -> None:
        self._on_schedules("cannot release a concurrency slot", sqlite_release_slot, key, holder)

    async def renew_slots(self, ttl_s: float) -> None:
        self._on_schedules(
            "cannot renew concurrency slots", sqlite_renew_slots, self._budget_owner, ttl_s
        )

    async def slots_in_use(self, key: str) -> int:
        return self._on_schedules("cannot read concurrency slots", sqlite_slots, key)

    async def limit_states(self) -> list[LimitState]:
        return self._on_schedules("cannot read the limits", sqlite_limit_states)

    # --- schedules ----------------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        return self._on_schedules("cannot save the schedule", sched.sqlite_put, schedule)

    async def list_schedules(self, names: Sequence[str] | None = None) -> list[ScheduleRow]:
        return self._on_schedules("cannot read the schedules", sched.sqlite_list, names)

    async def delete_schedule(self, name: str) -> bool:
        return self._on_schedules("cannot remove the schedule", sched.sqlite_delete, name)

    async def pause_schedule(self, name: str, paused: bool, next_tick: float | None) -> bool:
        return self._on_schedules(
            "cannot pause or resume the schedule", sched.sqlite_pause, name, paused, next_tick
        )

    async def claim_tick(self, claim: TickClaim) -> bool:
        return self._on_schedules("cannot claim a schedule's tick", sched.sqlite_claim, claim)

    async def reclaim_tick(self, owner: str, lease_s: float) -> Tick | None:
        return self._on_schedules(
            "cannot reclaim a schedule's tick", sched.sqlite_reclaim, owner, lease_s
        )

    async def finish_tick(
        self, schedule: str, tick: float, owner: str, error: str | None = None
    ) -> bool:
        return self._on_schedules(
            "cannot record a fired tick", sched.sqlite_finish, schedule, tick, owner, error
        )

    async def schedule_ticks(self, schedule: str | None = None, limit: int = 20) -> list[Tick]:
        return self._on_schedules("cannot read the ticks", sched.sqlite_ticks, schedule, limit)

    def _on_schedules(self, doing: str, op: Callable[..., T], *args: Any) -> T:
        try:
            return op(self._db, *args)
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from exc

    # --- the Merkle tree ----------------------------------------------------------------------
    async def tree_head(self) -> TreeHead:
        try:
            return sqlite_head(self._db)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the Merkle tree") from exc

    async def tree_leaves(self, run_id: str | None = None) -> list[Leaf]:
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        rows = self._query(
            f"SELECT run_id, seq, pos, leaf FROM merkle_leaves {where} ORDER BY run_id, seq", args
        )
        return rows

    async def tree_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        try:
            return sqlite_hashes(self._db, level, start, end)
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the Merkle tree") from exc

    async def audit_head(self) -> tuple[TreeHead, list[RecordedHead]]:
        db = self._db
        try:
            db.execute("BEGIN")  # one snapshot for both (WAL)
            try:
                head = sqlite_head(db)
                heads = db.execute(
                    "SELECT run_id, created, head_seq, head_hash, status FROM runs "
                    "ORDER BY created, run_id"
                ).fetchall()
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc
        return head, heads

    async def audit_rows(
        self,
        first: str | None = None,
        last: str | None = None,
        *,
        keys: bool = True,
        as_of: int | None = None,
        run_id: str | None = None,
    ) -> tuple[list[ChainRow], list[Any]]:
        where, args = run_range(first, last, "?", run_id)
        db = self._db
        try:
            db.execute("BEGIN")  # one snapshot for both (WAL)
            try:
                late = (
                    db.execute(
                        "SELECT run_id, seq FROM merkle_leaves WHERE pos >= ?", (as_of,)
                    ).fetchall()
                    if as_of is not None
                    else []
                )
                rows = db.execute(
                    "SELECT e.run_id, e.seq, e.ts, e.kind, e.step, e.attempt, e.data, "
                    "coalesce(e.payload, b.data), e.prev_hash, e.hash FROM events e "
                    f"LEFT JOIN blobs b ON b.sha256 = e.blob {where.format(t='e.')} "
                    "ORDER BY e.run_id, e.seq",
                    args,
                ).fetchall()
                leaves = db.execute(
                    f"SELECT {'run_id, seq, ' if keys else ''}pos, leaf FROM merkle_leaves "
                    f"{where.format(t='')} "
                    "ORDER BY run_id, seq",
                    args,
                ).fetchall()
                rows = expand_rows(rows, self._pieces, str(self.path), strict=False)
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot read the run store") from exc
        return as_of_tree(rows, leaves, late, as_of, keys=keys)

    async def run_split(self, parts: int) -> list[str]:
        runs = self._query("SELECT run_id, head_seq FROM runs ORDER BY run_id", ())
        return split_runs(runs, parts)

    def reopened(self) -> SQLiteStore:
        return SQLiteStore(self.path, durability=self.durability)

    async def request_cancel(self, run_id: str) -> None:
        try:
            self._db.execute("UPDATE runs SET cancel_requested=1 WHERE run_id=?", (run_id,))
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot request cancellation") from exc
        w = self._owned.get(run_id)
        if w is not None:
            w.cancel_requested = True

    # --- durable waits: messages, run events, due runs --------------------------------------
    def _write(self, doing: str, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
        """Statements in one write transaction; the last one's rows."""
        rows: list[Any] = []
        try:
            self._commit()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    rows = self._db.execute(sql, args).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from exc
        return rows

    async def send_message(self, run_id: str, topic: str, payload: str) -> int:
        now = time.time()
        rows = self._write(
            f"cannot send a message to run {run_id}",
            (_WAKE_ON, (now, run_id, f"msg:{topic}", now)),
            (
                "INSERT INTO messages (run_id, topic, payload, created) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (run_id, topic, payload, now),
            ),
        )
        return int(rows[0][0])

    async def messages(self, run_id: str, topic: str) -> list[tuple[int, str]]:
        return [
            (int(i), p)
            for i, p in self._query(
                "SELECT id, payload FROM messages WHERE run_id=? AND topic=? ORDER BY id",
                (run_id, topic),
            )
        ]

    async def set_run_event(self, run_id: str, key: str, payload: str) -> None:
        now = time.time()
        self._write(
            f"cannot set event {key!r} of run {run_id}",
            (
                "INSERT INTO run_events (run_id, key, payload, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, key) DO UPDATE SET payload=excluded.payload, "
                "updated=excluded.updated",
                (run_id, key, payload, now),
            ),
            (_WAKE_WAITERS, (now, f"event:{run_id}:{key}", now)),
        )

    async def get_run_event(self, run_id: str, key: str) -> str | None:
        rows = self._query("SELECT payload FROM run_events WHERE run_id=? AND key=?", (run_id, key))
        return str(rows[0][0]) if rows else None

    async def wake_run(self, run_id: str) -> None:
        now = time.time()
        self._write(
            f"cannot wake run {run_id}",
            (
                "UPDATE runs SET wake_at=? WHERE run_id=? AND status='waiting' AND wake_at > ?",
                (now, run_id, now),
            ),
        )

    async def claim_due(self, owner: str, *, flow: str | None = None) -> Claim | None:
        try:
            self._commit()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = self._db.execute(
                    "SELECT run_id, owner FROM runs WHERE wake_at <= ? AND status = 'waiting' "
                    "AND owner IS NULL AND queue IS NULL AND (flow = ? OR (? IS NULL AND "
                    "source IS NOT NULL)) ORDER BY wake_at LIMIT 1",
                    (now, flow, flow),
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute(
                    "UPDATE runs SET owner=?, lease_until=?, claims=claims+1 WHERE run_id=?",
                    (owner, now + self.lease_s, row[0]),
                )
                info = _run_info(
                    self._db.execute(
                        f"SELECT {_RUN_COLS} FROM runs WHERE run_id=?", (row[0],)
                    ).fetchone()
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot claim a due run") from exc
        return self._own(info, owner, None)

    async def due_runs(self, *, limit: int = 100) -> list[str]:
        return [
            r[0]
            for r in self._query(
                "SELECT run_id FROM runs WHERE wake_at <= ? AND status='waiting' "
                "AND queue IS NULL AND (owner IS NULL OR lease_until < ?) "
                "ORDER BY wake_at LIMIT ?",
                (time.time(), time.time(), limit),
            )
        ]

    async def cache_get(self, key: str) -> str | None:
        rows = self._query("SELECT output FROM cache WHERE key=?", (key,))
        return rows[0][0] if rows else None

    async def cache_put(self, key: str, step: str, output: str) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO cache (key, step, output, created) VALUES (?,?,?,?)",
                (key, step, output, time.time()),
            )
        except sqlite3.Error as exc:
            raise self._translate(exc, "cannot write the output cache") from exc

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            self._commit()
        finally:
            self._db.close()


_DECODE = json.JSONDecoder().decode


def _data(text: str) -> Any:
    """An event's data (``{}``, the data of most events, without the JSON decoder)."""
    return {} if text == "{}" else _DECODE(text)


def _run_info(r: Any) -> RunInfo:
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
        r[13],
        r[14],
        r[15],
        bool(r[16]),
        r[17],
        r[18],
        r[19],
        r[20],
        r[21],
    )


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (``BEGIN … END;``) whole."""
    out, buf = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        buf.append(line)
        text = "\n".join(buf)
        if sqlite3.complete_statement(text):
            out.append(text)
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out
