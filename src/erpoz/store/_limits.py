"""Rate limits shared by every process of a store: a sliding log of grants per key.

A key (``model:gpt-4o:requests``, ``model:gpt-4o:tokens``, ``queue:default``) allows
``limit`` units (requests, tokens, runs) per ``window_s`` seconds. Taking ``amount`` units is
one write transaction that every process sharing the store serialises on: it counts the units
granted in the last ``window_s`` seconds and grants (records a row) only when ``amount`` more
stays within the limit — so in any window of that length, across all processes, at most
``limit`` units are granted. A refusal says how long until enough of the window's grants age
out. A grant made on an estimate (the tokens of a model call) is settled to the actual amount
after.

A grant taken with ``hold_s`` (a model call, which reaches its provider some time after the
grant) counts as in its window from the grant until it is settled (at the latest ``hold_s``
later), and its window is counted from the settle: so however long the call took to leave,
the provider never sees more than ``limit`` requests in any window (the last request of a
window was granted after all the others of that window had been granted, and each of those
was counted then).

Grants are kept for ``KEEP_S`` (at least ten of their windows) so that what was granted can be
read back (``rate_grants``), then dropped. SQLite's functions run in the store's connection
(``BEGIN IMMEDIATE``); PostgreSQL's serialise per key on a transaction advisory lock; the
memory store's are :class:`MemoryRates`.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._owner import owner_is_dead

KEEP_S = 600.0
HELD_POLL_S = 0.1
"""How soon to look again when the window is full of grants still held by calls in flight."""
SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class RateGrant:
    """The answer to a take: granted (with the grant's id, to settle it), or not and how many
    seconds until it would be (``inf``: never — ``amount`` alone is over the limit)."""

    granted: bool
    grant_id: str
    wait_s: float
    in_window: float
    """The units the window held before this take."""


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limit as it stands in the store: a rate limit (``kind`` ``rate``: ``used`` units
    granted in its window now, grants of calls in flight included) or a concurrency limit
    (``concurrency``: ``used`` slots in use). ``limit`` and ``window_s`` are what its users
    last applied (``None``: not recorded — grants from before erpoz recorded them)."""

    key: str
    kind: str
    limit: float | None
    window_s: float | None
    used: float
    last: float | None
    """When its last grant was taken or settled, or its last slot's lease ends (epoch s)."""

    @property
    def room(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.used)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "limit": self.limit,
            "per_s": self.window_s,
            "used": self.used,
            "room": self.room,
            "last": self.last,
        }


def keep_s(window_s: float) -> float:
    return max(KEEP_S, 10 * window_s)


def decide(
    grants: Sequence[tuple[float, float]], limit: float, window_s: float, amount: float, now: float
) -> RateGrant:
    """Grant or refuse ``amount`` given the key's grants ``(at, amount)`` of the last window,
    oldest first."""
    held = sum(a for _, a in grants)
    if held + amount <= limit + SLACK:
        return RateGrant(True, uuid.uuid4().hex, 0.0, held)
    if amount > limit + SLACK:
        return RateGrant(False, "", float("inf"), held)
    freed = 0.0
    for at, a in grants:  # the window frees as its oldest grants age out
        freed += a
        if held - freed + amount <= limit + SLACK:
            if at > now:  # held by a call in flight: it frees when settled, look again soon
                return RateGrant(False, "", min(window_s, HELD_POLL_S), held)
            return RateGrant(False, "", max(0.0, at + window_s - now), held)
    return RateGrant(False, "", window_s, held)  # pragma: no cover - the loop always frees


# --- SQLite ---------------------------------------------------------------------------------
def sqlite_take(
    db: sqlite3.Connection,
    key: str,
    limit: float,
    window_s: float,
    amount: float,
    owner: str,
    hold_s: float = 0.0,
) -> RateGrant:
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "DELETE FROM limit_grants WHERE key = ? AND at < ?", (key, now - keep_s(window_s))
        )
        held = db.execute(
            "SELECT coalesce(sum(amount), 0) FROM limit_grants WHERE key = ? AND at > ?",
            (key, now - window_s),
        ).fetchone()[0]
        if held + amount <= limit + SLACK:  # the common case: one aggregate over the index
            grant = RateGrant(True, uuid.uuid4().hex, 0.0, float(held))
        else:
            rows = db.execute(
                "SELECT at, amount FROM limit_grants WHERE key = ? AND at > ? ORDER BY at",
                (key, now - window_s),
            ).fetchall()
            grant = decide(rows, limit, window_s, amount, now)
        if grant.granted:
            db.execute(
                "INSERT INTO limit_grants (grant_id, key, at, amount, owner, lim, window_s) "
                "VALUES (?,?,?,?,?,?,?)",
                (grant.grant_id, key, now + hold_s, amount, owner, limit, window_s),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return grant


def sqlite_settle(db: sqlite3.Connection, grant_id: str, amount: float) -> None:
    """The grant used ``amount``; its window runs from now."""
    db.execute(
        "UPDATE limit_grants SET amount = ?, at = ? WHERE grant_id = ?",
        (amount, time.time(), grant_id),
    )


def sqlite_grants(db: sqlite3.Connection, key: str, since: float) -> list[tuple[float, float]]:
    rows = db.execute(
        "SELECT at, amount FROM limit_grants WHERE key = ? AND at >= ? ORDER BY at", (key, since)
    ).fetchall()
    return [(float(a), float(b)) for a, b in rows]


RATE_ROWS = (
    "SELECT g.key, g.lim, g.window_s, g.at, "
    "(SELECT coalesce(sum(u.amount), 0) FROM limit_grants u "
    "WHERE u.key = g.key AND u.at > ? - g.window_s) "
    "FROM limit_grants g "
    "WHERE g.at = (SELECT max(h.at) FROM limit_grants h WHERE h.key = g.key) ORDER BY g.key"
)
"""Each rate limit's latest grant (the limit and window it was last applied with) and the
units granted in that window up to now (the one parameter; none when no window is recorded)."""
SLOT_ROWS = "SELECT key, owner, expires, lim FROM limit_slots ORDER BY key"


def limit_states(
    rates: Sequence[tuple[Any, ...]], slots: Sequence[tuple[Any, ...]], now: float
) -> list[LimitState]:
    """The limits as they stand: the rate limits of ``rates`` (:data:`RATE_ROWS`), then the
    concurrency limits of ``slots`` (:data:`SLOT_ROWS`), read at ``now``."""
    seen: dict[str, LimitState] = {}
    for key, lim, window, at, used in rates:
        if key not in seen:
            seen[key] = LimitState(
                key,
                "rate",
                None if lim is None else float(lim),
                None if window is None else float(window),
                0.0 if used is None else float(used),
                float(at),
            )
    return list(seen.values()) + slot_states(slots, now)


def slot_states(rows: Sequence[tuple[Any, ...]], now: float) -> list[LimitState]:
    """The concurrency limits of :data:`SLOT_ROWS`: the slots in use (a lapsed lease or a dead
    holder's slot is free), each with the limit it was last taken under."""
    found: dict[str, tuple[int, float | None, float | None]] = {}
    for key, owner, expires, lim in rows:
        n, limit, last = found.get(key, (0, None, None))
        live = expires >= now and not owner_is_dead(owner)
        found[key] = (
            n + int(live),
            limit if lim is None else float(lim) if limit is None else max(limit, float(lim)),
            expires if last is None else max(last, expires),
        )
    return [
        LimitState(key, "concurrency", limit, None, float(n), last)
        for key, (n, limit, last) in found.items()
    ]


def sqlite_limit_states(db: sqlite3.Connection) -> list[LimitState]:
    now = time.time()
    rates = db.execute(RATE_ROWS, (now,)).fetchall()
    return limit_states(rates, db.execute(SLOT_ROWS).fetchall(), now)


# --- memory ---------------------------------------------------------------------------------
class MemoryRates:
    """The grants of one process (the memory store): the same rules, in lists."""

    def __init__(self) -> None:
        self._grants: dict[str, list[tuple[float, float, str]]] = {}
        self._defs: dict[str, tuple[float, float]] = {}

    def take(
        self, key: str, limit: float, window_s: float, amount: float, hold_s: float = 0.0
    ) -> RateGrant:
        now = time.time()
        kept = [g for g in self._grants.get(key, []) if g[0] >= now - keep_s(window_s)]
        self._grants[key] = kept
        grant = decide(
            [(at, a) for at, a, _ in kept if at > now - window_s], limit, window_s, amount, now
        )
        if grant.granted:
            kept.append((now + hold_s, amount, grant.grant_id))
            self._defs[key] = (limit, window_s)
        return grant

    def states(self) -> list[LimitState]:
        now = time.time()
        out: list[LimitState] = []
        for key, (limit, window) in sorted(self._defs.items()):
            grants = self._grants.get(key, [])
            used = sum(a for at, a, _ in grants if at > now - window)
            last = max((at for at, _, _ in grants), default=None)
            out.append(LimitState(key, "rate", limit, window, used, last))
        return out

    def settle(self, grant_id: str, amount: float) -> None:
        for grants in self._grants.values():
            for i, (_, _, gid) in enumerate(grants):
                if gid == grant_id:
                    grants[i] = (time.time(), amount, gid)
                    grants.sort(key=lambda g: g[0])
                    return

    def grants(self, key: str, since: float) -> list[tuple[float, float]]:
        return [(at, a) for at, a, _ in self._grants.get(key, []) if at >= since]


# --- concurrency slots ------------------------------------------------------------------------
# A concurrency limit is a key with at most ``limit`` slots in use. A slot is held by a holder
# (a run) of an owner (a process) until released, with a lease the owner renews: a slot whose
# lease lapsed, or whose owner is a dead process of this host, is free again.


def sqlite_acquire_slot(
    db: sqlite3.Connection, key: str, limit: int, holder: str, owner: str, ttl_s: float
) -> bool:
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT holder, owner, expires FROM limit_slots WHERE key = ?", (key,)
        ).fetchall()
        gone = [h for h, o, exp in rows if exp < now or owner_is_dead(o)]
        db.executemany(
            "DELETE FROM limit_slots WHERE key = ? AND holder = ?", [(key, h) for h in gone]
        )
        got = len(rows) - len(gone) < limit
        if got:
            db.execute(
                "INSERT OR REPLACE INTO limit_slots (key, holder, owner, expires, lim) "
                "VALUES (?,?,?,?,?)",
                (key, holder, owner, now + ttl_s, limit),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return got


def sqlite_release_slot(db: sqlite3.Connection, key: str, holder: str) -> None:
    db.execute("DELETE FROM limit_slots WHERE key = ? AND holder = ?", (key, holder))


def sqlite_renew_slots(db: sqlite3.Connection, owner: str, ttl_s: float) -> None:
    db.execute("UPDATE limit_slots SET expires = ? WHERE owner = ?", (time.time() + ttl_s, owner))


def sqlite_slots(db: sqlite3.Connection, key: str) -> int:
    now = time.time()
    rows = db.execute("SELECT owner, expires FROM limit_slots WHERE key = ?", (key,)).fetchall()
    return sum(1 for o, exp in rows if exp >= now and not owner_is_dead(o))


class MemorySlots:
    """Concurrency slots of one process (the memory store)."""

    def __init__(self) -> None:
        self._slots: dict[str, dict[str, float]] = {}
        self._limits: dict[str, int] = {}

    def acquire(self, key: str, limit: int, holder: str, ttl_s: float) -> bool:
        now = time.time()
        held = {h: exp for h, exp in self._slots.get(key, {}).items() if exp >= now}
        self._slots[key] = held
        self._limits[key] = limit
        if len(held) >= limit:
            return False
        held[holder] = now + ttl_s
        return True

    def release(self, key: str, holder: str) -> None:
        self._slots.get(key, {}).pop(holder, None)

    def renew(self, ttl_s: float) -> None:
        for held in self._slots.values():
            for h in held:
                held[h] = time.time() + ttl_s

    def count(self, key: str) -> int:
        now = time.time()
        return sum(1 for exp in self._slots.get(key, {}).values() if exp >= now)

    def states(self) -> list[LimitState]:
        return [
            LimitState(
                key,
                "concurrency",
                float(limit),
                None,
                float(self.count(key)),
                max(self._slots.get(key, {}).values(), default=None),
            )
            for key, limit in sorted(self._limits.items())
        ]
