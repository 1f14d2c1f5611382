"""Rate limits on PostgreSQL (see ``_limits.py`` for the rules): a take serialises per key on
a transaction advisory lock, then reads the window and records the grant."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from ._limits import (
    RATE_ROWS,
    SLACK,
    SLOT_ROWS,
    LimitState,
    RateGrant,
    decide,
    keep_s,
)
from ._limits import limit_states as states_of
from ._owner import owner_is_dead

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def take(
    conn: Conn,
    key: str,
    limit: float,
    window_s: float,
    amount: float,
    owner: str,
    hold_s: float = 0.0,
) -> RateGrant:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('erpoz.limit.' || %s))", (key,))
        now = time.time()  # after the lock: the window as it stands now
        await conn.execute(
            "DELETE FROM limit_grants WHERE key = %s AND at < %s", (key, now - keep_s(window_s))
        )
        cur = await conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM limit_grants WHERE key = %s AND at > %s",
            (key, now - window_s),
        )
        row = await cur.fetchone()
        held = float(row[0]) if row else 0.0
        if held + amount <= limit + SLACK:  # the common case: one aggregate over the index
            grant = RateGrant(True, uuid.uuid4().hex, 0.0, held)
        else:
            cur = await conn.execute(
                "SELECT at, amount FROM limit_grants WHERE key = %s AND at > %s ORDER BY at",
                (key, now - window_s),
            )
            grant = decide(await cur.fetchall(), limit, window_s, amount, now)
        if grant.granted:
            await conn.execute(
                "INSERT INTO limit_grants (grant_id, key, at, amount, owner, lim, window_s) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (grant.grant_id, key, now + hold_s, amount, owner, limit, window_s),
            )
    return grant


async def settle(conn: Conn, grant_id: str, amount: float) -> None:
    await conn.execute(
        "UPDATE limit_grants SET amount = %s, at = %s WHERE grant_id = %s",
        (amount, time.time(), grant_id),
    )


async def grants(conn: Conn, key: str, since: float) -> list[tuple[float, float]]:
    cur = await conn.execute(
        "SELECT at, amount FROM limit_grants WHERE key = %s AND at >= %s ORDER BY at", (key, since)
    )
    return [(float(a), float(b)) for a, b in await cur.fetchall()]


async def acquire_slot(
    conn: Conn, key: str, limit: int, holder: str, owner: str, ttl_s: float
) -> bool:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('erpoz.slot.' || %s))", (key,))
        now = time.time()
        cur = await conn.execute(
            "SELECT holder, owner, expires FROM limit_slots WHERE key = %s", (key,)
        )
        rows = await cur.fetchall()
        gone = [h for h, o, exp in rows if exp < now or owner_is_dead(o)]
        if gone:
            await conn.execute(
                "DELETE FROM limit_slots WHERE key = %s AND holder = ANY(%s)", (key, gone)
            )
        got = len(rows) - len(gone) < limit
        if got:
            await conn.execute(
                "INSERT INTO limit_slots (key, holder, owner, expires, lim) "
                "VALUES (%s,%s,%s,%s,%s) "
                "ON CONFLICT (key, holder) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires, lim = excluded.lim",
                (key, holder, owner, now + ttl_s, limit),
            )
    return got


async def release_slot(conn: Conn, key: str, holder: str) -> None:
    await conn.execute("DELETE FROM limit_slots WHERE key = %s AND holder = %s", (key, holder))


async def renew_slots(conn: Conn, owner: str, ttl_s: float) -> None:
    await conn.execute(
        "UPDATE limit_slots SET expires = %s WHERE owner = %s", (time.time() + ttl_s, owner)
    )


async def slots(conn: Conn, key: str) -> int:
    now = time.time()
    cur = await conn.execute("SELECT owner, expires FROM limit_slots WHERE key = %s", (key,))
    return sum(1 for o, exp in await cur.fetchall() if exp >= now and not owner_is_dead(o))


async def limit_states(conn: Conn) -> list[LimitState]:
    now = time.time()
    rates = await (await conn.execute(RATE_ROWS.replace("?", "%s"), (now,))).fetchall()
    slots = await (await conn.execute(SLOT_ROWS)).fetchall()
    return states_of(rates, slots, now)
