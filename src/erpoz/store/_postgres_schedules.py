"""Schedules on PostgreSQL (see ``_schedules.py`` for the rules): a claim is one transaction
that locks the schedule's row (``SELECT … FOR UPDATE``), compares its ``next_tick`` and records
the tick; a reclaim takes the oldest stale claimed tick with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import psycopg

from ._schedules import (
    CLAIMED,
    FAILED,
    FIRED,
    SCHEDULE_COLS,
    TICK_COLS,
    ScheduleRow,
    Tick,
    TickClaim,
    merged,
    schedule_of,
    schedule_values,
    stale,
    tick_of,
)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def put(conn: Conn, s: ScheduleRow) -> ScheduleRow:
    async with conn.transaction():
        # a row lock when it exists; two first puts race on the primary key (one waits)
        cur = await conn.execute(
            f"SELECT {SCHEDULE_COLS} FROM schedules WHERE name = %s FOR UPDATE", (s.name,)
        )
        row = await cur.fetchone()
        out = merged(schedule_of(row) if row else None, s)
        marks = ",".join(["%s"] * 15)
        await conn.execute(
            f"INSERT INTO schedules ({SCHEDULE_COLS}) VALUES ({marks}) "
            "ON CONFLICT (name) DO UPDATE SET "
            "flow = excluded.flow, cron = excluded.cron, timezone = excluded.timezone, "
            "inputs = excluded.inputs, queue = excluded.queue, catchup = excluded.catchup, "
            "paused = excluded.paused, origin = excluded.origin, created = excluded.created, "
            "updated = excluded.updated, next_tick = excluded.next_tick, "
            "fired = excluded.fired, skipped = excluded.skipped, tenant = excluded.tenant",
            schedule_values(out),
        )
    return out


async def listed(conn: Conn, names: Sequence[str] | None) -> list[ScheduleRow]:
    if names is None:
        cur = await conn.execute(f"SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name")
    else:
        cur = await conn.execute(
            f"SELECT {SCHEDULE_COLS} FROM schedules WHERE name = ANY(%s) ORDER BY name",
            (list(names),),
        )
    return [schedule_of(r) for r in await cur.fetchall()]


async def delete(conn: Conn, name: str) -> bool:
    cur = await conn.execute("DELETE FROM schedules WHERE name = %s", (name,))
    return cur.rowcount == 1


async def pause(conn: Conn, name: str, paused: bool, next_tick: float | None) -> bool:
    cur = await conn.execute(
        "UPDATE schedules SET paused = %s, next_tick = coalesce(%s, next_tick), updated = %s "
        "WHERE name = %s",
        (paused, next_tick, time.time(), name),
    )
    return cur.rowcount == 1


async def claim(conn: Conn, c: TickClaim) -> bool:
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE schedules SET next_tick = %s, skipped = skipped + %s, fired = fired + %s "
            "WHERE name = %s AND next_tick = %s AND NOT paused",
            (c.next_tick, c.skipped, int(c.tick is not None), c.schedule, c.expect_next),
        )
        won = cur.rowcount == 1
        if won and c.tick is not None:  # a tick claimed before (a backfill) is not again
            cur = await conn.execute(
                f"INSERT INTO schedule_ticks ({TICK_COLS}) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,NULL,1,NULL) ON CONFLICT DO NOTHING",
                (c.schedule, c.tick, c.run_id, CLAIMED, c.owner, c.lease_until, time.time()),
            )
            won = cur.rowcount == 1
    return won


async def reclaim(conn: Conn, owner: str, lease_s: float) -> Tick | None:
    now = time.time()
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT {TICK_COLS} FROM schedule_ticks WHERE state = %s ORDER BY tick "
            "FOR UPDATE SKIP LOCKED",
            (CLAIMED,),
        )
        found = next((t for t in map(tick_of, await cur.fetchall()) if stale(t, now)), None)
        if found is None:
            return None
        await conn.execute(
            "UPDATE schedule_ticks SET owner = %s, lease_until = %s, claims = claims + 1 "
            "WHERE schedule = %s AND tick = %s",
            (owner, now + lease_s, found.schedule, found.tick),
        )
    return replace(found, owner=owner, lease_until=now + lease_s, claims=found.claims + 1)


async def finish(conn: Conn, schedule: str, tick: float, owner: str, error: str | None) -> bool:
    cur = await conn.execute(
        "UPDATE schedule_ticks SET state = %s, fired = %s, error = %s, lease_until = NULL "
        "WHERE schedule = %s AND tick = %s AND owner = %s AND state = %s",
        (FAILED if error else FIRED, time.time(), error, schedule, tick, owner, CLAIMED),
    )
    return cur.rowcount == 1


async def ticks(conn: Conn, schedule: str | None, limit: int) -> list[Tick]:
    where, args = ("WHERE schedule = %s", [schedule]) if schedule is not None else ("", [])
    cur = await conn.execute(
        f"SELECT {TICK_COLS} FROM schedule_ticks {where} ORDER BY tick DESC, schedule LIMIT %s",
        [*args, limit],
    )
    return [tick_of(r) for r in await cur.fetchall()]
