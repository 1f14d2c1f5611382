"""The budget ledger: what each budget scope has spent, and the holds of model calls in flight.

A scope is ``project`` or ``tenant:NAME``. Before a paid call, the caller *reserves* its
estimated cost against every scope that has a ceiling, in one transaction that all processes
sharing the store serialise on: the reservation is refused when a scope's spend plus what calls
in flight hold plus this estimate would pass its ceiling. After the call, the hold is *settled*:
replaced by the actual cost. So N workers cannot spend N times a budget — at most the
difference between estimates and actual costs of the calls in flight.

A hold whose process died (killed mid-call) must not block the budget forever: holds expire
after their ``ttl_s`` (and at once when their owner is a dead process on this host), and an
expired hold is charged at its estimate — the call may have been paid for, and nothing can tell
(fail closed). A late settle of an expired hold corrects the charge to the actual cost.

A scope's spend starts, the first time the scope is used, from the log: the ``cost_usd`` of
every ``model_called`` event of the store (of the tenant's runs, for a tenant scope).

SQLite's functions here run inside the store's own connection (``BEGIN IMMEDIATE``: one writer
at a time across processes); PostgreSQL's live in ``_postgres_ledger.py``; the memory store's
in :class:`MemoryLedger`.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ._owner import owner_is_dead

PROJECT = "project"
TENANT_PREFIX = "tenant:"
_SLACK = 1e-12  # float sums of prices: equal is within the ceiling
FORGET_S = 86_400.0
"""A charged hold nobody settled is dropped after this long (its process is surely gone)."""


def tenant_scope(tenant: str) -> str:
    """The ledger scope of a tenant's budget."""
    return TENANT_PREFIX + tenant


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """A scope of the ledger as it stands: settled spend, what calls in flight hold, and (in a
    refusal) the ceiling it would pass."""

    scope: str
    spent_usd: float
    reserved_usd: float = 0.0
    limit_usd: float | None = None

    @property
    def tenant(self) -> str | None:
        """The tenant whose budget this is; ``None`` for the project's."""
        return self.scope[len(TENANT_PREFIX) :] if self.scope.startswith(TENANT_PREFIX) else None

    def to_json(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "spent_usd": round(self.spent_usd, 9),
            "reserved_usd": round(self.reserved_usd, 9),
        }


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: ``amount_usd`` held against each of ``scopes`` until it is settled; or,
    when ``refused`` is set, the scope it would have taken past its ceiling (nothing held)."""

    id: str
    amount_usd: float
    scopes: tuple[str, ...]
    refused: BudgetScope | None = None


def limits_of(project_usd: float | None, tenant: str, tenant_usd: float | None) -> dict[str, float]:
    """The ceilings a call is held against, by scope."""
    out: dict[str, float] = {}
    if project_usd is not None:
        out[PROJECT] = project_usd
    if tenant_usd is not None:
        out[tenant_scope(tenant)] = tenant_usd
    return out


def over(
    states: Mapping[str, BudgetScope], limits: Mapping[str, float], amount: float
) -> BudgetScope | None:
    """The first scope (in sorted order) that ``amount`` more would take past its ceiling."""
    for scope in sorted(limits):
        s = states[scope]
        if s.spent_usd + s.reserved_usd + amount > limits[scope] + _SLACK:
            return replace(s, limit_usd=limits[scope])
    return None


def new_hold_id() -> str:
    return uuid.uuid4().hex


def settled(hold: Hold, cost: float, charged: bool) -> float:
    """What settling ``hold`` adds to a scope's spend: the cost, less the estimate when an
    expired hold was charged at it already."""
    return cost - hold.amount_usd if charged else cost


# --- SQLite ---------------------------------------------------------------------------------
_SQLITE_LOG_SPEND = (
    "SELECT coalesce(sum(CAST(json_extract(e.data, '$.cost_usd') AS REAL)), 0) FROM events e "
    "WHERE e.kind = 'model_called'"
)
_SQLITE_TENANT_SPEND = (
    "SELECT coalesce(sum(CAST(json_extract(e.data, '$.cost_usd') AS REAL)), 0) FROM events e "
    "JOIN runs r ON r.run_id = e.run_id WHERE e.kind = 'model_called' AND r.tenant = ?"
)


def _sqlite_expire(db: sqlite3.Connection, scopes: Sequence[str], now: float) -> None:
    """Charge the holds of ``scopes`` that expired or whose process is dead (at their
    estimate); drop charged holds nobody settled within a day."""
    db.execute("DELETE FROM budget_holds WHERE charged = 1 AND expires < ?", (now - FORGET_S,))
    marks = ",".join("?" * len(scopes))
    rows = db.execute(
        "SELECT hold_id, scope, amount, owner, expires FROM budget_holds "
        f"WHERE charged = 0 AND scope IN ({marks})",
        list(scopes),
    ).fetchall()
    for hold_id, scope, amount, owner, expires in rows:
        if expires >= now and not owner_is_dead(owner):
            continue
        db.execute(
            "UPDATE budget_spent SET spent = spent + ?, updated = ? WHERE scope = ?",
            (amount, now, scope),
        )
        db.execute(
            "UPDATE budget_holds SET charged = 1 WHERE hold_id = ? AND scope = ?", (hold_id, scope)
        )


def _sqlite_states(
    db: sqlite3.Connection, scopes: Sequence[str], now: float
) -> dict[str, BudgetScope]:
    """The scopes as they stand (inside the caller's write transaction); a scope used for the
    first time starts from what the log says it spent."""
    out: dict[str, BudgetScope] = {}
    for scope in scopes:
        row = db.execute("SELECT spent FROM budget_spent WHERE scope = ?", (scope,)).fetchone()
        if row is None:
            if scope.startswith(TENANT_PREFIX):
                spent = db.execute(_SQLITE_TENANT_SPEND, (scope[len(TENANT_PREFIX) :],))
            else:
                spent = db.execute(_SQLITE_LOG_SPEND)
            value = float(spent.fetchone()[0] or 0.0)
            db.execute(
                "INSERT INTO budget_spent (scope, spent, updated) VALUES (?, ?, ?)",
                (scope, value, now),
            )
        else:
            value = float(row[0])
        held = db.execute(
            "SELECT coalesce(sum(amount), 0) FROM budget_holds WHERE scope = ? AND charged = 0",
            (scope,),
        ).fetchone()[0]
        out[scope] = BudgetScope(scope, value, float(held))
    return out


def sqlite_reserve(
    db: sqlite3.Connection,
    owner: str,
    amount: float,
    limits: Mapping[str, float],
    ttl_s: float,
) -> Hold:
    """Reserve in one ``BEGIN IMMEDIATE`` transaction (processes sharing the file queue on it)."""
    scopes = sorted(limits)
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        _sqlite_expire(db, scopes, now)
        states = _sqlite_states(db, scopes, now)
        refused = over(states, limits, amount)
        hold = Hold(new_hold_id() if refused is None else "", amount, tuple(scopes), refused)
        if refused is None:
            db.executemany(
                "INSERT INTO budget_holds (hold_id, scope, amount, owner, expires) "
                "VALUES (?, ?, ?, ?, ?)",
                [(hold.id, s, amount, owner, now + ttl_s) for s in scopes],
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return hold


def sqlite_settle(db: sqlite3.Connection, hold: Hold, cost: float) -> None:
    """Replace the hold by ``cost``; settling twice (an answer lost and retried) is a no-op."""
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT scope, charged FROM budget_holds WHERE hold_id = ?", (hold.id,)
        ).fetchall()
        for scope, charged in rows:
            db.execute(
                "UPDATE budget_spent SET spent = spent + ?, updated = ? WHERE scope = ?",
                (settled(hold, cost, bool(charged)), now, scope),
            )
        db.execute("DELETE FROM budget_holds WHERE hold_id = ?", (hold.id,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def sqlite_scopes(db: sqlite3.Connection, scopes: Sequence[str] | None) -> list[BudgetScope]:
    where, args = "", list(scopes or ())
    if scopes is not None:
        if not scopes:
            return []
        where = f"WHERE s.scope IN ({','.join('?' * len(args))})"
    rows = db.execute(
        "SELECT s.scope, s.spent, (SELECT coalesce(sum(h.amount), 0) FROM budget_holds h "
        f"WHERE h.scope = s.scope AND h.charged = 0) FROM budget_spent s {where} "
        "ORDER BY s.scope",
        args,
    ).fetchall()
    return [BudgetScope(r[0], float(r[1]), float(r[2])) for r in rows]


# --- memory ---------------------------------------------------------------------------------
class MemoryLedger:
    """The ledger of one process (the memory store): the same rules, in dicts."""

    def __init__(self, log_spend: Callable[[str | None], float]) -> None:
        self._log_spend = log_spend  # tenant (None: the project) -> cost_usd in the log
        self._spent: dict[str, float] = {}
        self._holds: dict[str, tuple[Hold, float, bool]] = {}  # id -> hold, expires, charged

    def _state(self, scope: str) -> BudgetScope:
        if scope not in self._spent:
            tenant = scope[len(TENANT_PREFIX) :] if scope.startswith(TENANT_PREFIX) else None
            self._spent[scope] = self._log_spend(tenant)
        held = sum(
            h.amount_usd
            for h, _, charged in self._holds.values()
            if scope in h.scopes and not charged
        )
        return BudgetScope(scope, self._spent[scope], held)

    def reserve(self, amount: float, limits: Mapping[str, float], ttl_s: float) -> Hold:
        now = time.time()
        for hold_id, (h, expires, charged) in list(self._holds.items()):
            if charged or expires >= now:
                continue
            self._holds[hold_id] = (h, expires, True)
            for s in h.scopes:
                self._spent[s] = self._spent.get(s, 0.0) + h.amount_usd
        scopes = tuple(sorted(limits))
        refused = over({s: self._state(s) for s in scopes}, limits, amount)
        if refused is not None:
            return Hold("", amount, scopes, refused)
        hold = Hold(new_hold_id(), amount, scopes)
        self._holds[hold.id] = (hold, now + ttl_s, False)
        return hold

    def settle(self, hold: Hold, cost: float) -> None:
        found = self._holds.pop(hold.id, None)
        if found is None:
            return  # settled already
        for s in hold.scopes:
            self._spent[s] = self._spent.get(s, 0.0) + settled(hold, cost, found[2])

    def scopes(self, scopes: Iterable[str] | None) -> list[BudgetScope]:
        names = sorted(self._spent if scopes is None else set(scopes) & set(self._spent))
        return [self._state(s) for s in names]
