"""erpoz against DBOS Transact (a durable-execution library for Python), side by side in one
process, on SQLite at the same durability: what a durable timer, a message and a step cost.

    pip install --target /tmp/dbos_site -r bench/requirements.txt   # dbos is bench-only
    PYTHONPATH=/tmp/dbos_site python -m bench.dbos_bench            # --runs 100 --reps 5

DBOS is imported from wherever it is installed (erpoz does not depend on it). Both libraries
write to a SQLite file of their own in one temporary folder, both in WAL mode with
``synchronous=NORMAL`` (erpoz's default; DBOS's connections are set to it here, and the bench
reads the setting back from each). Cases, each a one-run-at-a-time loop of ``--runs`` runs,
the libraries and cases interleaved over ``--reps`` repetitions after a warm-up; medians:

- ``baseline``: a workflow (flow) of one step that returns its input;
- ``steps x10``: ten such steps in a row — per step = (steps x10 − baseline) / 9;
- ``timer``: the step's workflow sleeps durably for 1 ms (``DBOS.sleep_async(0.001)``;
  ``await ctx.sleep(0.001)``, waited out in the process): the deadline recorded, then waited;
- ``message``: the workflow waits for a message (``DBOS.recv_async`` / ``ctx.recv``, timeout
  60 s), the bench sends it (``DBOS.send_async`` / ``engine.send``) and gets the result. DBOS
  keeps the waiting workflow in its process; erpoz lets the run go (``hold_s=0``) and
  ``resume`` takes the message — each library's own way of waiting. On SQLite DBOS's
  ``recv`` polls (no LISTEN/NOTIFY); the bench sets its polling interval to 10 ms (default
  1 s), so its wall time includes up to 10 ms of waiting: compare CPU for the work.

Reported per run: wall µs and process CPU µs (``time.process_time``: the machine is shared),
and rows written (the rows every table of the library's database gained, over the runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from erpoz import Context, Engine, Flow, open_store, step

HERE = Path(__file__).resolve()
SYNCHRONOUS = "NORMAL"
TIMER_S = 0.001
POLL_S = 0.01


# --- erpoz --------------------------------------------------------------------------------------
@step
async def e_noop(x: int) -> int:
    return x


@step
async def e_timer(x: int, ctx: Context) -> int:
    await ctx.sleep(TIMER_S)
    return x


@step
async def e_recv(x: int, ctx: Context) -> int:
    got = await ctx.recv("reply", timeout=60)
    return x + int(got or 0)


def _chain(name: str, fn: Any, n: int = 1) -> Flow:
    f = Flow(name, inputs={"x": int}, source=f"{HERE}:{name}")
    ref: Any = f.input("x")
    for i in range(n):
        ref = f.add(fn, id=f"s{i}", x=ref)
    f.output(ref)
    return f


e_baseline = _chain("e_baseline", e_noop)
e_steps = _chain("e_steps", e_noop, 10)
e_timed = _chain("e_timed", e_timer)
e_messaged = _chain("e_messaged", e_recv)


# --- DBOS ---------------------------------------------------------------------------------------
def _dbos_workflows() -> dict[str, Any]:
    from dbos import DBOS

    @DBOS.step()
    async def d_noop(x: int) -> int:
        return x

    @DBOS.workflow()
    async def d_baseline(x: int) -> int:
        return await d_noop(x)

    @DBOS.workflow()
    async def d_steps(x: int) -> int:
        for _ in range(10):
            x = await d_noop(x)
        return x

    @DBOS.workflow()
    async def d_timed(x: int) -> int:
        await DBOS.sleep_async(TIMER_S)
        return await d_noop(x)

    @DBOS.workflow()
    async def d_messaged(x: int) -> int:
        got = await DBOS.recv_async("reply", timeout_seconds=60)
        return await d_noop(x + int(got or 0))

    return {
        "baseline": d_baseline,
        "steps x10": d_steps,
        "timer": d_timed,
        "message": d_messaged,
    }


def _normal_sqlite() -> None:
    """Every SQLAlchemy SQLite connection (DBOS's) at erpoz's synchronous setting."""
    import sqlalchemy as sa

    @sa.event.listens_for(sa.engine.Engine, "connect")
    def _pragma(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return sum(db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names)


Case = Callable[[int], Awaitable[None]]


async def _timed(case: Case, n: int, path: Path) -> tuple[float, float, float]:
    rows0 = _rows(path)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        await case(i)
    w1, c1 = time.perf_counter(), time.process_time()
    return (w1 - w0) / n * 1e6, (c1 - c0) / n * 1e6, (_rows(path) - rows0) / n


async def main(runs: int, reps: int) -> dict[str, Any]:
    from dbos import DBOS

    folder = Path(tempfile.mkdtemp(prefix="dbos-bench-"))
    d_path, e_path = folder / "dbos.sqlite", folder / "erpoz.db"
    with sqlite3.connect(d_path) as db:  # WAL, as erpoz's store (kept in the file)
        db.execute("PRAGMA journal_mode=WAL")
    _normal_sqlite()
    workflows = _dbos_workflows()
    DBOS(
        config={
            "name": "bench",
            "system_database_url": f"sqlite:///{d_path}",
            # SQLite has no LISTEN/NOTIFY: a recv polls; its default (1 s) would measure the
            # poll, not the work, so it polls every 10 ms here
            "notification_listener_polling_interval_sec": POLL_S,
        }
    )
    DBOS.launch()
    store = open_store(e_path)
    engine = Engine(store, hold_s=1.0)  # a 1 ms timer is waited out in the process
    waiting = Engine(store, hold_s=0.0)  # a message wait lets the run go

    async def d_message(i: int) -> None:
        handle = await DBOS.start_workflow_async(workflows["message"], i)
        await DBOS.send_async(handle.workflow_id, 1, "reply")
        assert await handle.get_result() == i + 1

    async def e_message(i: int) -> None:
        rid = (await waiting.run(e_messaged, {"x": i})).run_id
        await waiting.send(rid, "reply", 1)
        assert (await waiting.resume(rid, e_messaged)).output == i + 1

    def d_case(name: str) -> Case:
        wf = workflows[name]

        async def go(i: int) -> None:
            assert await wf(i) >= i

        return go

    def e_case(flow: Flow) -> Case:
        async def go(i: int) -> None:
            assert (await engine.run(flow, {"x": i}, run_id=uuid.uuid4().hex)).status == "succeeded"

        return go

    cases: dict[str, dict[str, tuple[Case, Path]]] = {
        "baseline": {
            "dbos": (d_case("baseline"), d_path),
            "erpoz": (e_case(e_baseline), e_path),
        },
        "steps x10": {
            "dbos": (d_case("steps x10"), d_path),
            "erpoz": (e_case(e_steps), e_path),
        },
        "timer": {"dbos": (d_case("timer"), d_path), "erpoz": (e_case(e_timed), e_path)},
        "message": {"dbos": (d_message, d_path), "erpoz": (e_message, e_path)},
    }
    for libs in cases.values():  # warm-up
        for case, path in libs.values():
            await _timed(case, 5, path)
    got: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for rep in range(reps):  # interleaved: every case of both libraries in each repetition
        for name, libs in cases.items():
            order = list(libs.items()) if rep % 2 == 0 else list(libs.items())[::-1]
            for lib, (case, path) in order:
                got.setdefault((name, lib), []).append(await _timed(case, runs, path))
    with sqlite3.connect(d_path) as db:
        d_journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    from dbos._dbos import _get_dbos_instance

    with _get_dbos_instance()._sys_db.engine.connect() as conn:
        import sqlalchemy as sa

        d_sync = conn.execute(sa.text("PRAGMA synchronous")).scalar()
    e_sync = store._db.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[attr-defined]
    e_journal = store._db.execute("PRAGMA journal_mode").fetchone()[0]  # type: ignore[attr-defined]
    await store.close()
    DBOS.destroy()
    out: dict[str, Any] = {
        "runs": runs,
        "reps": reps,
        "load_before": os.getloadavg(),
        "sqlite": {
            "dbos": {"journal_mode": d_journal, "synchronous": d_sync},
            "erpoz": {"journal_mode": e_journal, "synchronous": e_sync},
        },
        "cases": {},
    }
    for (name, lib), samples in got.items():
        out["cases"].setdefault(name, {})[lib] = {
            "wall_us": round(statistics.median(s[0] for s in samples), 1),
            "cpu_us": round(statistics.median(s[1] for s in samples), 1),
            "rows_per_run": round(statistics.median(s[2] for s in samples), 2),
        }
    return out


def _table(res: dict[str, Any]) -> str:
    lines = [
        "| case | DBOS wall µs | erpoz wall µs | DBOS/erpoz | DBOS CPU µs | erpoz CPU µs "
        "| DBOS/erpoz CPU | DBOS rows | erpoz rows |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases = res["cases"]
    rows = dict(cases)
    base = cases["baseline"]
    rows["per step"] = {
        lib: {
            k: round((cases["steps x10"][lib][k] - base[lib][k]) / 9, 2)
            for k in ("wall_us", "cpu_us", "rows_per_run")
        }
        for lib in ("dbos", "erpoz")
    }
    for extra in ("timer", "message"):
        rows[f"{extra}, beyond baseline"] = {
            lib: {
                k: round(cases[extra][lib][k] - base[lib][k], 2)
                for k in ("wall_us", "cpu_us", "rows_per_run")
            }
            for lib in ("dbos", "erpoz")
        }
    for name, libs in rows.items():
        d, e = libs["dbos"], libs["erpoz"]

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.1f}×" if b > 0 else "–"

        lines.append(
            f"| {name} | {d['wall_us']:,.0f} | {e['wall_us']:,.0f} | "
            f"{ratio(d['wall_us'], e['wall_us'])} | {d['cpu_us']:,.0f} | {e['cpu_us']:,.0f} | "
            f"{ratio(d['cpu_us'], e['cpu_us'])} | {d['rows_per_run']:g} | {e['rows_per_run']:g} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    result = asyncio.run(main(args.runs, args.reps))
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    print(_table(result))
