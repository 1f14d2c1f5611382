"""``python -m bench.limits_bench``: what a model's rate limit adds to a chat call, and what a
schedule's tick costs to fire, in microseconds.

Rate limits: the same metered call (a ``FunctionModel`` that answers at once, so only erpoz's
own work is timed) with no limit (the floor), a limit counted in this process, and a limit
kept in the store (SQLite WAL file, ``synchronous=NORMAL``; PostgreSQL at
``$ERPOZ_BENCH_POSTGRES_URL``, default the local test server, in a throw-away schema, skipped
when unreachable): a grant taken before the call and settled after (two write transactions
per call: what makes the limit hold across processes). Calls are sequential and interleaved
over the paths (one of each per round, shuffled); p50 and p99 per path.

Schedules: a scheduler pass firing ``--ticks`` due ticks of one schedule (``catchup: all``)
on each store: per tick, the claim (one write transaction), the run's submission (its
``run_started`` and ``run_queued`` events) and the tick marked fired.

Options: ``--n`` calls per path (default 1000), ``--ticks`` (default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from erpoz import Engine
from erpoz.engine import Schedule, Scheduler, add_schedule
from erpoz.models import ChatRequest, Message, Metered, ModelSpec, RateGate, RateLimit
from erpoz.store import SQLiteStore, Store
from erpoz.testing import FunctionModel

PG_URL = os.environ.get("ERPOZ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
FLOW = Path(__file__).resolve().parents[1] / "tests" / "engine" / "schedule_flows.py"


def _pg() -> tuple[Any, str] | None:
    try:
        import psycopg

        from erpoz.store import PostgresStore

        schema = f"erpoz_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as db:
            db.execute(f'CREATE SCHEMA "{schema}"')
        return PostgresStore(PG_URL, schema=schema), schema
    except Exception:  # unreachable or psycopg missing: skipped
        return None


def _drop(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as db:
        db.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _model(gate: RateGate | None) -> Metered:
    limits = RateLimit(requests=10**9, tokens=10**12) if gate is not None else None
    spec = ModelSpec("m", "test", limits=limits)
    return Metered(FunctionModel(lambda r: "ok", name="m"), spec, rates=gate)


async def rate_limits(n: int, stores: dict[str, Store]) -> dict[str, list[float]]:
    request = ChatRequest((Message.user("hello there"),), max_tokens=10)
    paths: dict[str, Callable[[], Awaitable[Any]]] = {
        "no limit": _model(None).generate,
        "limit in process": _model(RateGate()).generate,
    }
    for name, store in stores.items():
        paths[f"limit in {name}"] = _model(RateGate(store)).generate  # type: ignore[arg-type]
    times: dict[str, list[float]] = {p: [] for p in paths}
    order = list(paths)
    for i in range(n + 50):
        random.shuffle(order)
        for p in order:
            t0 = time.perf_counter_ns()
            await paths[p](request)  # type: ignore[call-arg]
            if i >= 50:
                times[p].append((time.perf_counter_ns() - t0) / 1000)
    return times


async def schedule_ticks(ticks: int, store: Store) -> float:
    row = await add_schedule(
        store, Schedule("bench", f"{FLOW}:stamp", "* * * * * *", {"who": "b"}, catchup="all")
    )
    scheduler = Scheduler(Engine(store))
    fired = 0
    t0 = time.perf_counter()
    while fired < ticks:
        fired += len(await scheduler.run_once(now=row.next_tick + ticks - 1))
    return (time.perf_counter() - t0) / fired * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:

        async def go() -> None:
            stores: dict[str, Store] = {"sqlite": SQLiteStore(Path(tmp) / "b.db")}
            pg = _pg()
            if pg is not None:
                stores["postgres"] = pg[0]
            times = await rate_limits(args.n, stores)
            floor = statistics.median(times["no limit"])
            print(f"{'path':<20} {'p50 µs':>10} {'p99 µs':>10} {'added p50':>10}")
            for p, ts in times.items():
                ts.sort()
                p50, p99 = statistics.median(ts), ts[int(0.99 * len(ts))]
                print(f"{p:<20} {p50:>10.1f} {p99:>10.1f} {p50 - floor:>+10.1f}")
            for name in list(stores):
                fresh: Store = SQLiteStore(Path(tmp) / "s.db") if name == "sqlite" else stores[name]
                us = await schedule_ticks(args.ticks, fresh)
                print(f"schedule tick fired on {name}: {us:.0f} µs per tick (2 events)")
            for s in stores.values():
                await s.close()
            if pg is not None:
                _drop(pg[1])

        asyncio.run(go())
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
