"""The budget ledger on PostgreSQL (see ``_ledger.py`` for the rules): one transaction per
reservation, serialised per scope by a row lock (``SELECT … FOR UPDATE``, scopes in sorted
order so that two reservations never wait for each other in a circle)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from ._ledger import FORGET_S, TENANT_PREFIX, BudgetScope, Hold, new_hold_id, over, settled
from ._owner import HOST, owner_is_dead

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_COST = "(e.data::jsonb ->> 'cost_usd')::double precision"
_LOG_SPEND = f"SELECT coalesce(sum({_COST}), 0) FROM events e WHERE e.kind = 'model_called'"
_TENANT_SPEND = (
    f"SELECT coalesce(sum({_COST}), 0) FROM events e JOIN runs r ON r.run_id = e.run_id "
    "WHERE e.kind = 'model_called' AND r.tenant = %s"
)


_LOCK = "SELECT scope, spent FROM budget_spent WHERE scope = ANY(%s) ORDER BY scope FOR UPDATE"
_HOLDS = (
    "SELECT hold_id, scope, amount, owner, expires FROM budget_holds "
    "WHERE scope = ANY(%s) AND NOT charged"
)


async def _create(conn: Conn, scopes: list[str], now: float) -> None:
    """Rows for scopes used for the first time, starting from what the log says they spent
    (two processes may race here: the first row stays)."""
    for scope in scopes:
        if scope.startswith(TENANT_PREFIX):
            cur = await conn.execute(_TENANT_SPEND, (scope[len(TENANT_PREFIX) :],))
        else:
            cur = await conn.execute(_LOG_SPEND)
        row = await cur.fetchone()
        await conn.execute(
            "INSERT INTO budget_spent (scope, spent, updated) VALUES (%s, %s, %s) "
            "ON CONFLICT (scope) DO NOTHING",
            (scope, float(row[0] if row else 0.0), now),
        )


async def _states(
    conn: Conn, scopes: list[str], owner: str, now: float
) -> dict[str, BudgetScope] | None:
    """Lock the scopes' rows (sorted) and read them with the holds in flight; ``None`` when a
    scope has no row yet. Expired holds, and holds of dead processes of this host, are charged
    at their estimate on the way."""
    cur = await conn.execute(_LOCK, (scopes,))
    spent = {r[0]: float(r[1]) for r in await cur.fetchall()}
    cur = await conn.execute(_HOLDS, (scopes,))  # after the lock: sees what it waited for
    in_flight = await cur.fetchall()
    if len(spent) < len(scopes):
        return None
    held = dict.fromkeys(scopes, 0.0)
    gone: list[tuple[str, str, float]] = []
    for hold_id, scope, amount, holder, expires in in_flight:
        if expires < now or (
            holder != owner and holder.startswith(HOST + ":") and owner_is_dead(holder)
        ):
            gone.append((hold_id, scope, float(amount)))
        else:
            held[scope] += float(amount)
    if gone:
        await _charge(conn, gone, now, spent)
    return {s: BudgetScope(s, spent[s], held[s]) for s in scopes}


async def _charge(
    conn: Conn, gone: list[tuple[str, str, float]], now: float, spent: dict[str, float]
) -> None:
    """Charge holds nobody will settle at their estimate (the caller holds the scopes' row
    locks); drop charged holds nobody settled within a day."""
    for hold_id, scope, amount in gone:
        await conn.execute(
            "UPDATE budget_holds SET charged = true WHERE hold_id = %s AND scope = %s",
            (hold_id, scope),
        )
        await conn.execute(
            "UPDATE budget_spent SET spent = spent + %s, updated = %s WHERE scope = %s",
            (amount, now, scope),
        )
        spent[scope] += amount
    await conn.execute("DELETE FROM budget_holds WHERE charged AND expires < %s", (now - FORGET_S,))


async def reserve(
    conn: Conn, owner: str, amount: float, limits: Mapping[str, float], ttl_s: float
) -> Hold:
    scopes = sorted(limits)
    now = time.time()
    async with conn.transaction():
        states = await _states(conn, scopes, owner, now)
        if states is None:  # first use of a scope
            await _create(conn, scopes, now)
            states = await _states(conn, scopes, owner, now)
            assert states is not None
        refused = over(states, limits, amount)
        if refused is not None:
            return Hold("", amount, tuple(scopes), refused)
        hold = Hold(new_hold_id(), amount, tuple(scopes))
        marks = ",".join(["(%s, %s, %s, %s, %s)"] * len(scopes))
        await conn.execute(
            f"INSERT INTO budget_holds (hold_id, scope, amount, owner, expires) VALUES {marks}",
            [v for s in scopes for v in (hold.id, s, amount, owner, now + ttl_s)],
        )
    return hold


async def settle(conn: Conn, hold: Hold, cost: float) -> None:
    """Replace the hold by ``cost``; settling twice (an answer lost and retried) is a no-op:
    the scopes' rows locked in sorted order, then the hold dropped and its cost added (less its
    estimate where an expired hold was charged at it), in one statement."""
    now = time.time()
    async with conn.transaction():
        await conn.execute(_LOCK, (list(hold.scopes),))
        await conn.execute(
            "WITH d AS (DELETE FROM budget_holds WHERE hold_id = %s RETURNING scope, charged) "
            "UPDATE budget_spent s SET spent = s.spent + CASE WHEN d.charged THEN %s ELSE %s "
            "END, updated = %s FROM d WHERE s.scope = d.scope",
            (hold.id, settled(hold, cost, True), settled(hold, cost, False), now),
        )


async def scopes(conn: Conn, names: Sequence[str] | None) -> list[BudgetScope]:
    where: str = ""
    args: tuple[Any, ...] = ()
    if names is not None:
        where, args = "WHERE s.scope = ANY(%s)", (list(names),)
    cur = await conn.execute(
        "SELECT s.scope, s.spent, (SELECT coalesce(sum(h.amount), 0) FROM budget_holds h "
        f"WHERE h.scope = s.scope AND NOT h.charged) FROM budget_spent s {where} "
        "ORDER BY s.scope",
        args,
    )
    return [BudgetScope(r[0], float(r[1]), float(r[2])) for r in await cur.fetchall()]
