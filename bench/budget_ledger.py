"""``python -m bench.budget_ledger``: what a budget costs per paid chat call, in microseconds.

The same metered call (``ctx.models``-style, a ``FunctionModel`` that answers at once, so only
erpoz's own work is timed) goes out by these paths:

* **no budget**: ``Metered`` without a budget (the floor);
* **in process**: a project ceiling counted in this process (no ledger: what a ``ModelHub``
  made in Python without a store does);
* **ledger: memory / sqlite / postgres**: project and tenant ceilings kept in the store's budget
  ledger, as ``erpoz run`` / ``erpoz worker`` / ``erpoz serve`` do: a reservation (one write
  transaction) before the call and a settle (another) after, which is what makes the ceiling
  hold across processes. SQLite is a WAL file with ``synchronous=NORMAL`` (the default);
  PostgreSQL is ``$ERPOZ_BENCH_POSTGRES_URL`` (default the local test server, in a throw-away
  schema), skipped when it cannot be reached.

Calls are sequential and interleaved over the paths (one call of each per round, in a shuffled
order), so drift in the machine hits every path alike; ``--warmup`` rounds are dropped. Each
call is timed on its own (``perf_counter_ns``); the table gives p50 / p99 and what each path
adds to the floor at p50, with the load average before and after.

Options: ``--n`` calls per path (default 2000), ``--warmup`` (default 100), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erpoz.models import Budget, ChatRequest, Message, ModelHub, ModelSpec
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.store import open_store
from erpoz.testing import FunctionModel

PG_URL = os.environ.get("ERPOZ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPEC = ModelSpec("paid", "test", price_in=0.15, price_out=0.60)
REQUEST = ChatRequest((Message.user("What is the capital of France?"),), max_tokens=64)


def metered(budget: Budget | None) -> tuple[Any, Recorder]:
    """The metered model and the recorder a step of tenant ``acme`` would call it with (the
    hub's budget travels with the recorder, as ``ctx.models`` does it)."""
    hub = ModelHub(budget=budget)
    model = hub.add(FunctionModel(lambda r: "Paris.", name="paid"), SPEC)
    return model, Recorder(lambda k, d: None, "bench-run", budget=budget, tenant="acme")


async def postgres_store() -> tuple[Any, Callable[[], Awaitable[None]]] | None:
    try:
        import psycopg
    except ImportError:
        return None
    schema = f"erpoz_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as db:
            db.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error:
        return None
    from erpoz.store import PostgresStore

    store = PostgresStore(PG_URL, schema=schema)

    async def drop() -> None:
        await store.close()
        with psycopg.connect(PG_URL, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return store, drop


async def main(n: int, warmup: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="erpoz-bench-"))
    sqlite = open_store(tmp / "ledger.db")
    memory = open_store("memory")
    pg = await postgres_store()
    ceilings = {"per_project_usd": 1e9, "per_tenant_usd": 1e9}

    def ledger_budget(store: Any) -> Budget:
        b = Budget(per_project_usd=ceilings["per_project_usd"])
        b.per_tenant_usd, b.ledger = ceilings["per_tenant_usd"], store
        return b

    paths: dict[str, Any] = {
        "no budget": metered(None),
        "in process": metered(Budget(per_project_usd=1e9, per_tenant_usd=1e9)),
        "ledger: memory": metered(ledger_budget(memory)),
        "ledger: sqlite": metered(ledger_budget(sqlite)),
    }
    if pg is not None:
        paths["ledger: postgres"] = metered(ledger_budget(pg[0]))
    times: dict[str, list[int]] = {name: [] for name in paths}
    rng = random.Random(13)
    load_before = os.getloadavg()
    order = list(paths.items())
    for i in range(warmup + n):
        rng.shuffle(order)  # no path always runs right after another (cache, socket warmth)
        for name, (model, recorder) in order:
            t0 = time.perf_counter_ns()
            token = bind(recorder)
            try:
                await model.generate(REQUEST)
            finally:
                unbind(token)
            took = time.perf_counter_ns() - t0
            if i >= warmup:
                times[name].append(took)
    load_after = os.getloadavg()
    spent = {s.scope: s.spent_usd for s in await sqlite.budget_scopes()}  # type: ignore[attr-defined]
    assert spent["tenant:acme"] > 0, "the ledger was not used: the benchmark measures nothing"
    await sqlite.close()
    if pg is not None:
        await pg[1]()
    floor = statistics.median(times["no budget"])
    rows = []
    for name, ts in times.items():
        ts.sort()
        p50 = statistics.median(ts)
        rows.append(
            {
                "path": name,
                "n": len(ts),
                "p50_us": round(p50 / 1000, 1),
                "p99_us": round(ts[int(len(ts) * 0.99) - 1] / 1000, 1),
                "added_p50_us": round((p50 - floor) / 1000, 1),
                "ratio_p50": round(p50 / floor, 2),
            }
        )
    return {
        "rows": rows,
        "load_before": load_before,
        "load_after": load_after,
        "cpus": os.cpu_count(),
    }


def report(result: dict[str, Any]) -> None:
    table = Table("path", "calls", "p50 µs", "p99 µs", "added p50 µs", "× floor")
    for r in result["rows"]:
        table.add_row(
            r["path"],
            str(r["n"]),
            f"{r['p50_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['added_p50_us']:+.1f}",
            f"{r['ratio_p50']:.2f}",
        )
    console = Console()
    console.print(table)
    before, after = result["load_before"], result["load_after"]
    console.print(
        f"load average {before[0]:.2f} → {after[0]:.2f} (1 min) on {result['cpus']} CPUs",
        highlight=False,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.n, args.warmup))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
