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


async def _locked_states(conn: Conn, scopes: list[str], now: float) -> dict[str, BudgetScope]:
    """Lock each scope's row (creating it from the log the first time) and read it."""
    cur = await conn.execute("SELECT scope FROM budget_spent WHERE scope = ANY(%s)", (scopes,))
    known = {r[0] for r in await cur.fetchall()}
    for scope in scopes:
        if scope in known:
            continue
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
    cur = await conn.execute(
        "SELECT scope, spent FROM budget_spent WHERE scope = ANY(%s) ORDER BY scope FOR UPDATE",
        (scopes,),
    )
    spent = {r[0]: float(r[1]) for r in await cur.fetchall()}
    await _expire(conn, scopes, now, spent)
    cur = await conn.execute(
        "SELECT scope, sum(amount) FROM budget_holds WHERE scope = ANY(%s) AND NOT charged "
        "GROUP BY scope",
        (scopes,),
    )
    held = {r[0]: float(r[1]) for r in await cur.fetchall()}
    return {s: BudgetScope(s, spent[s], held.get(s, 0.0)) for s in scopes}


async def _expire(conn: Conn, scopes: list[str], now: float, spent: dict[str, float]) -> None:
    """Charge the holds of ``scopes`` that expired, or whose owner is a dead process of this
    host, at their estimate (the caller holds the scopes' row locks); drop charged holds
    nobody settled within a day."""
    await conn.execute(
        "DELETE FROM budget_holds WHERE charged AND expires < %s AND scope = ANY(%s)",
        (now - FORGET_S, scopes),
    )
    cur = await conn.execute(
        "SELECT hold_id, scope, amount, owner, expires FROM budget_holds "
        "WHERE scope = ANY(%s) AND NOT charged AND (expires < %s OR starts_with(owner, %s))",
        (scopes, now, HOST + ":"),
    )
    for hold_id, scope, amount, owner, expires in await cur.fetchall():
        if expires >= now and not owner_is_dead(owner):
            continue
        await conn.execute(
            "UPDATE budget_holds SET charged = true WHERE hold_id = %s AND scope = %s",
            (hold_id, scope),
        )
        await conn.execute(
            "UPDATE budget_spent SET spent = spent + %s, updated = %s WHERE scope = %s",
            (amount, now, scope),
        )
        spent[scope] += float(amount)


async def reserve(
    conn: Conn, owner: str, amount: float, limits: Mapping[str, float], ttl_s: float
) -> Hold:
    scopes = sorted(limits)
    now = time.time()
    async with conn.transaction():
        states = await _locked_states(conn, scopes, now)
        refused = over(states, limits, amount)
        if refused is not None:
            return Hold("", amount, tuple(scopes), refused)
        hold = Hold(new_hold_id(), amount, tuple(scopes))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO budget_holds (hold_id, scope, amount, owner, expires) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(hold.id, s, amount, owner, now + ttl_s) for s in scopes],
            )
    return hold


async def settle(conn: Conn, hold: Hold, cost: float) -> None:
    """Replace the hold by ``cost``; settling twice (an answer lost and retried) is a no-op."""
    now = time.time()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT scope FROM budget_spent WHERE scope = ANY(%s) ORDER BY scope FOR UPDATE",
            (list(hold.scopes),),
        )
        await cur.fetchall()
        cur = await conn.execute(
            "DELETE FROM budget_holds WHERE hold_id = %s RETURNING scope, charged", (hold.id,)
        )
        for scope, charged in sorted(await cur.fetchall()):
            await conn.execute(
                "UPDATE budget_spent SET spent = spent + %s, updated = %s WHERE scope = %s",
                (settled(hold, cost, bool(charged)), now, scope),
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
