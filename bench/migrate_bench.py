"""``python -m bench.migrate_bench``: how fast ``erpoz migrate`` copies SQLite into PostgreSQL.

Builds a SQLite store of 500 runs of a 100-step chain (~102,000 events, batch durability),
then, each into a fresh PostgreSQL schema (dropped afterwards):

* ``erpoz migrate`` (:func:`erpoz.store.migrate`): source verified, copied with every
  event re-chained, destination verified — the whole command, end to end;
* the same again when everything is already there (what a re-run costs);
* the floor: the same event rows read with sqlite3 and written with one ``COPY`` into the same
  schema, no verification — what moving the bytes costs.

PostgreSQL: ``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
or ``--url``. Prints the figures, their ratio to the floor, and the load average before and
after (on a shared machine, read the figures with it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

from erpoz import Engine, Flow, step
from erpoz.audit import verify
from erpoz.store import migrate, open_store
from erpoz.store._model import EVENT_COLUMNS

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@step
async def inc(x: int) -> int:
    return x + 1


def _chain(n: int) -> Flow:
    flow = Flow("chain", inputs={"x": int})
    prev = flow.input("x")
    for i in range(n):
        prev = flow.add(inc, id=f"s{i}", x=prev)
    return flow


async def _build(path: Path, runs: int, steps: int) -> None:
    store = open_store(path, durability="batch")
    plan = _chain(steps).compile()
    engine = Engine(store)
    for _ in range(runs):
        await engine.run(plan, {"x": 0})
    await store.close()


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def _floor(path: Path, url: str) -> tuple[int, float]:
    """Read every event row with sqlite3 and COPY it into the (migrated, empty) schema."""
    asyncio.run(open_store(url).close())
    t0 = time.perf_counter()
    with sqlite3.connect(path) as lite:
        rows = lite.execute(f"SELECT {EVENT_COLUMNS} FROM events").fetchall()
    with psycopg.connect(url) as db, db.cursor() as cur:
        with cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        db.commit()
    return len(rows), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ERPOZ_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    load_before = os.getloadavg()
    schemas = [f"erpoz_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(args.url, autocommit=True) as db:
        path = Path(tmp) / "source.db"
        t0 = time.perf_counter()
        asyncio.run(_build(path, args.runs, args.steps))
        built = time.perf_counter() - t0
        for s in schemas:
            db.execute(f'CREATE SCHEMA "{s}"')
        try:
            target = _schema_url(args.url, schemas[0])
            first = asyncio.run(migrate(str(path), target, verify=verify))
            again = asyncio.run(migrate(str(path), target, verify=verify))
            floor_rows, floor_s = _floor(path, _schema_url(args.url, schemas[1]))
        finally:
            for s in schemas:
                db.execute(f'DROP SCHEMA "{s}" CASCADE')
    load_after = os.getloadavg()
    assert first.events == floor_rows and again.events == 0

    def rate(n: int, s: float) -> str:
        return f"{n / s:,.0f} events/s"

    print(f"source: {first.copied} runs, {first.events:,} events (built in {built:.1f} s)")
    print(f"{'case':<44} {'seconds':>8}  {'rate':>18}  {'vs floor':>8}")
    cases = [
        ("erpoz migrate, end to end", first.seconds),
        ("  of which copying (events re-chained)", first.copy_seconds),
        ("erpoz migrate again (all already there)", again.seconds),
        ("floor: sqlite3 read + one COPY, no checks", floor_s),
    ]
    for name, seconds in cases:
        shown = rate(first.events, seconds) if "again" not in name else "-"
        print(f"{name:<44} {seconds:>8.2f}  {shown:>18}  {seconds / floor_s:>7.1f}x")
    print(
        "load average before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f} ({} cores)".format(
            *load_before, *load_after, os.cpu_count()
        )
    )


if __name__ == "__main__":
    main()
