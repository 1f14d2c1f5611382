"""Schedules in the store: their definitions, where each stands (``next_tick``), and the ticks
fired, shared by every process of the store.

Exactly one process fires a tick: it *claims* the tick by compare-and-swap on the schedule's
``next_tick`` (it names the ``next_tick`` it read and the one that follows; another process
that read the same value finds it moved) and, in the same write transaction, records the tick
as ``claimed`` by it, with a lease and the id of the run it will start. Only then does it start
the run, and mark the tick ``fired``. A process killed in between leaves a ``claimed`` tick
whose lease lapses (at once when the owner was a process of this host): another process
*reclaims* it and starts the same run id — the run is started once, whoever gets there.

When a schedule's ticks come due, and which to fire after downtime, is the engine's business
(``erpoz.engine`` computes them with the cron library); the store only keeps the state and the
claims. SQLite's functions here run inside the store's connection (``BEGIN IMMEDIATE``: one
writer at a time across processes); PostgreSQL's live in ``_postgres_schedules.py``; the memory
store's in :class:`MemorySchedules`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._owner import owner_is_dead

CLAIMED, FIRED, FAILED = "claimed", "fired", "failed"


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as stored: its definition and where it stands."""

    name: str
    flow: str
    cron: str
    timezone: str
    inputs: str
    """The inputs of every run it starts, as JSON."""
    queue: str
    catchup: str
    paused: bool
    origin: str
    """Who made it: ``cli``, ``api``, ``config`` (``schedules:`` in erpoz.yaml) or ``python``."""
    created: float
    updated: float
    next_tick: float
    """The first tick not fired or skipped yet (epoch seconds)."""
    fired: int = 0
    skipped: int = 0
    tenant: str = "-"
    """The tenant it belongs to (made through the HTTP API with a tenant's key; its runs carry
    the tenant's tag); ``-``: the project's."""

    def same_timing(self, other: ScheduleRow) -> bool:
        return self.cron == other.cron and self.timezone == other.timezone

    def same_definition(self, other: ScheduleRow) -> bool:
        return self.definition() == other.definition()

    def definition(self) -> tuple[Any, ...]:
        return (
            self.flow,
            self.cron,
            self.timezone,
            self.inputs,
            self.queue,
            self.catchup,
            self.tenant,
        )


@dataclass(frozen=True, slots=True)
class Tick:
    """A tick a process claimed: the run it starts, and how it went (``claimed``, ``fired``,
    ``failed``)."""

    schedule: str
    tick: float
    run_id: str
    state: str
    owner: str | None
    lease_until: float | None
    claimed: float
    fired: float | None = None
    claims: int = 1
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "tick": self.tick,
            "run_id": self.run_id,
            "state": self.state,
            "owner": self.owner,
            "claimed": self.claimed,
            "fired": self.fired,
            "claims": self.claims,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class TickClaim:
    """Move ``schedule`` from ``expect_next`` to ``next_tick``, counting ``skipped`` ticks
    skipped, and (unless ``tick`` is None) claim ``tick`` for ``owner`` to start ``run_id``."""

    schedule: str
    expect_next: float
    next_tick: float
    owner: str
    lease_until: float
    tick: float | None = None
    run_id: str | None = None
    skipped: int = 0


SCHEDULE_COLS = (
    "name, flow, cron, timezone, inputs, queue, catchup, paused, origin, created, updated, "
    "next_tick, fired, skipped, tenant"
)
TICK_COLS = "schedule, tick, run_id, state, owner, lease_until, claimed, fired, claims, error"


def schedule_of(r: Sequence[Any]) -> ScheduleRow:
    return ScheduleRow(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        bool(r[7]),
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        r[13],
        r[14],
    )


def tick_of(r: Sequence[Any]) -> Tick:
    return Tick(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])


def schedule_values(s: ScheduleRow) -> tuple[Any, ...]:
    return (
        s.name,
        s.flow,
        s.cron,
        s.timezone,
        s.inputs,
        s.queue,
        s.catchup,
        s.paused,
        s.origin,
        s.created,
        s.updated,
        s.next_tick,
        s.fired,
        s.skipped,
        s.tenant,
    )


def merged(old: ScheduleRow | None, new: ScheduleRow) -> ScheduleRow:
    """What ``put`` stores: the new definition; an existing schedule keeps its counts, its
    pause and, unless its timing changed, where it stands."""
    if old is None:
        return new
    if old.same_definition(new) and old.origin == new.origin:
        return old
    return replace(
        new,
        created=old.created,
        paused=old.paused,
        fired=old.fired,
        skipped=old.skipped,
        next_tick=old.next_tick if old.same_timing(new) else new.next_tick,
    )


def stale(t: Tick, now: float) -> bool:
    """A claimed tick nobody will finish: its lease lapsed or its owner died on this host."""
    if t.state != CLAIMED:
        return False
    return (t.lease_until or 0.0) < now or (t.owner is not None and owner_is_dead(t.owner))


# --- SQLite ---------------------------------------------------------------------------------
def _immediate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def sqlite_put(db: sqlite3.Connection, s: ScheduleRow) -> ScheduleRow:
    _immediate(db)
    try:
        row = db.execute(
            f"SELECT {SCHEDULE_COLS} FROM schedules WHERE name = ?", (s.name,)
        ).fetchone()
        out = merged(schedule_of(row) if row else None, s)
        db.execute(
            f"INSERT OR REPLACE INTO schedules ({SCHEDULE_COLS}) VALUES ({','.join('?' * 15)})",
            schedule_values(out),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return out


def sqlite_list(db: sqlite3.Connection, names: Sequence[str] | None) -> list[ScheduleRow]:
    if names is None:
        rows = db.execute(f"SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name").fetchall()
    else:
        marks = ",".join("?" * len(names))
        rows = db.execute(
            f"SELECT {SCHEDULE_COLS} FROM schedules WHERE name IN ({marks}) ORDER BY name",
            list(names),
        ).fetchall()
    return [schedule_of(r) for r in rows]


def sqlite_delete(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1


def sqlite_pause(db: sqlite3.Connection, name: str, paused: bool, next_tick: float | None) -> bool:
    cur = db.execute(
        "UPDATE schedules SET paused = ?, next_tick = coalesce(?, next_tick), updated = ? "
        "WHERE name = ?",
        (paused, next_tick, time.time(), name),
    )
    return cur.rowcount == 1


def sqlite_claim(db: sqlite3.Connection, c: TickClaim) -> bool:
    """The compare-and-swap of a claim, with the tick's row, in one write transaction; a
    tick claimed before is not claimed again (the schedule still moves past it)."""
    _immediate(db)
    try:
        cur = db.execute(
            "UPDATE schedules SET next_tick = ?, skipped = skipped + ?, fired = fired + ? "
            "WHERE name = ? AND next_tick = ? AND NOT paused",
            (c.next_tick, c.skipped, int(c.tick is not None), c.schedule, c.expect_next),
        )
        won = cur.rowcount == 1
        if won and c.tick is not None:  # a tick claimed before (a backfill) is not again
            won = (
                db.execute(
                    f"INSERT OR IGNORE INTO schedule_ticks ({TICK_COLS}) "
                    "VALUES (?,?,?,?,?,?,?,NULL,1,NULL)",
                    (c.schedule, c.tick, c.run_id, CLAIMED, c.owner, c.lease_until, time.time()),
                ).rowcount
                == 1
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return won


def sqlite_reclaim(db: sqlite3.Connection, owner: str, lease_s: float) -> Tick | None:
    """Take over one claimed tick nobody will finish (see :func:`stale`)."""
    now = time.time()
    look = f"SELECT {TICK_COLS} FROM schedule_ticks WHERE state = ? ORDER BY tick"
    if not any(stale(t, now) for t in map(tick_of, db.execute(look, (CLAIMED,)).fetchall())):
        return None  # the common case, without taking the write lock
    _immediate(db)
    try:
        rows = db.execute(look, (CLAIMED,)).fetchall()
        found = next((t for t in map(tick_of, rows) if stale(t, now)), None)
        if found is not None:
            db.execute(
                "UPDATE schedule_ticks SET owner = ?, lease_until = ?, claims = claims + 1 "
                "WHERE schedule = ? AND tick = ?",
                (owner, now + lease_s, found.schedule, found.tick),
            )
            found = replace(found, owner=owner, lease_until=now + lease_s, claims=found.claims + 1)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return found


def sqlite_finish(
    db: sqlite3.Connection, schedule: str, tick: float, owner: str, error: str | None
) -> bool:
    cur = db.execute(
        "UPDATE schedule_ticks SET state = ?, fired = ?, error = ?, lease_until = NULL "
        "WHERE schedule = ? AND tick = ? AND owner = ? AND state = ?",
        (FAILED if error else FIRED, time.time(), error, schedule, tick, owner, CLAIMED),
    )
    return cur.rowcount == 1


def sqlite_ticks(db: sqlite3.Connection, schedule: str | None, limit: int) -> list[Tick]:
    where, args = ("WHERE schedule = ?", [schedule]) if schedule is not None else ("", [])
    rows = db.execute(
        f"SELECT {TICK_COLS} FROM schedule_ticks {where} ORDER BY tick DESC, schedule LIMIT ?",
        [*args, limit],
    ).fetchall()
    return [tick_of(r) for r in rows]


# --- memory ---------------------------------------------------------------------------------
class MemorySchedules:
    """Schedules of one process (the memory store): the same rules, in dicts."""

    def __init__(self) -> None:
        self._rows: dict[str, ScheduleRow] = {}
        self._ticks: dict[tuple[str, float], Tick] = {}

    def put(self, s: ScheduleRow) -> ScheduleRow:
        out = merged(self._rows.get(s.name), s)
        self._rows[s.name] = out
        return out

    def listed(self, names: Sequence[str] | None) -> list[ScheduleRow]:
        return [r for n, r in sorted(self._rows.items()) if names is None or n in names]

    def delete(self, name: str) -> bool:
        return self._rows.pop(name, None) is not None

    def pause(self, name: str, paused: bool, next_tick: float | None) -> bool:
        row = self._rows.get(name)
        if row is None:
            return False
        self._rows[name] = replace(
            row,
            paused=paused,
            next_tick=row.next_tick if next_tick is None else next_tick,
            updated=time.time(),
        )
        return True

    def claim(self, c: TickClaim) -> bool:
        row = self._rows.get(c.schedule)
        if row is None or row.paused or row.next_tick != c.expect_next:
            return False
        self._rows[c.schedule] = replace(
            row,
            next_tick=c.next_tick,
            skipped=row.skipped + c.skipped,
            fired=row.fired + int(c.tick is not None),
        )
        if c.tick is None or c.run_id is None:
            return True
        if (c.schedule, c.tick) in self._ticks:
            return False  # claimed before (a backfill): not again
        self._ticks[(c.schedule, c.tick)] = Tick(
            c.schedule, c.tick, c.run_id, CLAIMED, c.owner, c.lease_until, time.time()
        )
        return True

    def reclaim(self, owner: str, lease_s: float) -> Tick | None:
        now = time.time()
        for key, t in sorted(self._ticks.items(), key=lambda kv: kv[0][1]):
            if stale(t, now):
                self._ticks[key] = t = replace(
                    t, owner=owner, lease_until=now + lease_s, claims=t.claims + 1
                )
                return t
        return None

    def finish(self, schedule: str, tick: float, owner: str, error: str | None) -> bool:
        t = self._ticks.get((schedule, tick))
        if t is None or t.owner != owner or t.state != CLAIMED:
            return False
        self._ticks[(schedule, tick)] = replace(
            t, state=FAILED if error else FIRED, fired=time.time(), error=error, lease_until=None
        )
        return True

    def ticks(self, schedule: str | None, limit: int) -> list[Tick]:
        found = [t for t in self._ticks.values() if schedule is None or t.schedule == schedule]
        found.sort(key=lambda t: (-t.tick, t.schedule))
        return found[:limit]
