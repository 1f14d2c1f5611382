"""The PostgreSQL store: per-step overhead of a 100-step chain, and append throughput of 8 writers.

``python -m bench.postgres_bench [--url URL] [--steps 100] [--events 2000]``

* chain: µs per step of one run of a 100-step chain of ``async inc(x)`` steps (as
  ``bench.erpoz_bench.erpoz_chain_us_per_step``) on the in-memory store and on PostgreSQL with
  ``sync`` durability (a step's success committed before the next step starts) with
  ``synchronous_commit`` off (the default, ``fsync=False``) and on (``fsync=True``), and with
  ``batch`` durability. The store's overhead per step is PostgreSQL minus memory. Target
  ≤ 300 µs on loopback.
* append: 8 writers, each its own :class:`PostgresStore` (own connections, as 8 worker
  processes would have) in one event loop, each appending ``--events`` events to its own run as
  step_started/step_succeeded pairs, flushing after each pair; total events/s, and the audit
  chain verified afterwards. Also with the 8 writers sharing one store (group commit).

Everything happens in a throw-away schema of the database at ``--url`` (default
``$ERPOZ_TEST_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``), dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psycopg

from bench.erpoz_bench import build_chain
from erpoz import Engine
from erpoz.audit import verify
from erpoz.store import MemoryStore, NewRun, Store
from erpoz.store._postgres import PostgresStore

DEFAULT_URL = os.environ.get("ERPOZ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


async def chain_us_per_step(make: Callable[[], Store], n_steps: int, reps: int = 7) -> float:
    """Median over ``reps`` runs (after 2 warm-up runs) of wall per run / ``n_steps``, in µs."""
    plan = build_chain(n_steps).compile()
    store = make()
    try:
        engine = Engine(store)
        times = []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            result = await engine.run(plan, {"x": 0})
            elapsed = time.perf_counter() - t0
            if result.output != n_steps:
                raise RuntimeError(f"chain run ended {result.status}: {result.error}")
            if i >= 2:
                times.append(elapsed)
        return statistics.median(times) / n_steps * 1e6
    finally:
        await store.close()


async def append_events_per_s(
    url: str, writers: int, events: int, *, shared: bool, durability: str = "sync"
) -> tuple[float, Any]:
    """Total events/s of ``writers`` concurrent writers, and the audit report afterwards."""
    one = PostgresStore(url, durability=durability) if shared else None
    stores = [one or PostgresStore(url, durability=durability) for _ in range(writers)]
    tag = uuid.uuid4().hex[:6]

    async def write(i: int) -> None:
        w = await stores[i].create_run(
            NewRun(f"append-{tag}-{i}", "append", "f" * 16, '{"x":0}'), f"bench:{i}:w"
        )
        for k in range(events // 2):
            w.append("step_started", f"s{k}", 1)
            w.append("step_succeeded", f"s{k}", 1, {"ms": 0.01}, str(k))
            await w.flush()
        await w.release()

    t0 = time.perf_counter()
    await asyncio.gather(*(write(i) for i in range(writers)))
    elapsed = time.perf_counter() - t0
    for s in {id(s): s for s in stores}.values():
        await s.close()
    checker = PostgresStore(url)
    report = await verify(checker)
    await checker.close()
    return writers * (events // 2 * 2) / elapsed, report


async def main_async(url: str, steps: int, events: int) -> None:
    schema = f"erpoz_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
    surl = _schema_url(url, schema)
    try:
        cases: list[tuple[str, Callable[[], Store]]] = [
            ("memory", MemoryStore),
            ("postgres sync (synchronous_commit=off)", lambda: PostgresStore(surl)),
            ("postgres sync, fsync=True", lambda: PostgresStore(surl, fsync=True)),
            ("postgres batch", lambda: PostgresStore(surl, durability="batch")),
            ("postgres effects", lambda: PostgresStore(surl, durability="effects")),
        ]
        print(f"chain of {steps} steps, µs per step (median of 7 runs):")
        floor = None
        for name, make in cases:
            us = await chain_us_per_step(make, steps)
            floor = us if floor is None else floor
            extra = "" if name == "memory" else f"   store overhead {us - floor:7.1f} µs"
            print(f"  {name:<40} {us:8.1f} µs{extra}")
        print(f"\nappend throughput, 8 writers x {events} events (flush per step pair):")
        for label, shared, durability in [
            ("8 stores (8 connections), sync", False, "sync"),
            ("1 shared store (group commit), sync", True, "sync"),
            ("8 stores, batch", False, "batch"),
            ("1 shared store, effects", True, "effects"),
        ]:
            rate, report = await append_events_per_s(
                surl, 8, events, shared=shared, durability=durability
            )
            ok = "chains verify" if report.ok else f"AUDIT FAILED: {report.problems[:3]}"
            print(f"  {label:<40} {rate:10,.0f} events/s   ({ok})")
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args(argv)
    asyncio.run(main_async(args.url, args.steps, args.events))


if __name__ == "__main__":
    main()
