"""``python -m bench.journal_bench``: what the effects journal costs per tool call and per model
call, in microseconds, next to the same call without it.

Inside one step of one run, a loop makes ``--n`` calls and the step times them
(``perf_counter``), so run and step overheads are left out. Four calls, each run on the same
engine and store:

* **tool, journaled**: ``await ctx.tools.call("effect", x=i)`` of an ``async`` tool declared
  ``side_effects=True``: key, ``tool_intent`` committed before the call, ``tool_called`` with
  the result committed after it;
* **tool, plain**: the same function declared without side effects (policy, validation and a
  ``tool_called`` event, nothing committed);
* **model, journaled**: ``await ctx.models.chat("fn", prompt)``, as a step calls it: the reply
  keyed by the request and recorded (``model_replied``), flushed as the durability says (sync:
  committed before the step goes on; batch: grouped);
* **model, plain**: the same call through a ``Models`` that has no journal (metering and the
  ``model_called`` event as before). The model is an in-process ``FunctionModel`` behind
  ``Metered``, so the figures are erpoz's own cost; a real model call adds its latency to
  both.

Stores: memory, SQLite ``sync`` and ``batch`` (a file in a temporary directory), and with
``--postgres URL`` PostgreSQL ``sync`` (in a schema of its own, dropped afterwards). The four
calls are measured round-robin for ``--reps`` repetitions (default 5) of ``--n`` calls
(default 300), after one warm-up repetition; the table gives the median µs per call, what the
journal adds and the ratio. The 1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from erpoz import Context, Engine, Flow, step
from erpoz.models import ModelHub, ModelSpec
from erpoz.models._hub import Models
from erpoz.models._meter import Recorder
from erpoz.store import Store, open_store
from erpoz.testing import FunctionModel
from erpoz.tools import Rule, ToolPolicy, ToolRegistry, tool


async def _effect(x: int) -> int:
    return x + 1


journaled_tool = tool(_effect, name="effect", side_effects=True)
plain_tool = tool(_effect, name="plain")
N = {"calls": 300}


def _models(ctx: Context, journaled: bool) -> Any:
    if journaled:
        return ctx.models
    hub = ctx.service(ModelHub)
    return Models(hub, Recorder(lambda k, d: ctx.emit(k, dict(d)), ctx.run_id))


@step
async def tool_calls(journaled: bool, ctx: Context) -> float:
    import time

    name = "effect" if journaled else "plain"
    call = ctx.tools.call
    t0 = time.perf_counter()
    for i in range(N["calls"]):
        await call(name, x=i)
    return (time.perf_counter() - t0) / N["calls"] * 1e6


@step
async def model_calls(journaled: bool, ctx: Context) -> float:
    import time

    models = _models(ctx, journaled)
    t0 = time.perf_counter()
    for i in range(N["calls"]):
        await models.chat("fn", f"question {i}")
    return (time.perf_counter() - t0) / N["calls"] * 1e6


def _flow(fn: Any) -> Flow:
    flow = Flow(f"journal-{fn.__name__}", inputs={"journaled": bool})
    flow.add(fn, journaled=flow.input("journaled"))
    return flow


CASES: list[tuple[str, Any, bool]] = [
    ("tool, journaled", tool_calls, True),
    ("tool, plain", tool_calls, False),
    ("model, journaled", model_calls, True),
    ("model, plain", model_calls, False),
]


def _engine(store: Store) -> Engine:
    hub = ModelHub()
    hub.add(
        FunctionModel(lambda req: "an answer", name="fn"),
        ModelSpec(name="fn", provider="test", context_window=4096),
    )
    tools = ToolRegistry(
        [journaled_tool, plain_tool], ToolPolicy((Rule("the bench calls", "allow", "*"),))
    )
    return Engine(store, services={ModelHub: hub, ToolRegistry: tools})


async def _measure(store_of: Callable[[], Store], reps: int) -> dict[str, list[float]]:
    store = store_of()
    engine = _engine(store)
    plans = {fn: _flow(fn).compile() for _, fn, _ in CASES}
    out: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    try:
        for rep in range(reps + 1):
            for name, fn, journaled in CASES:
                result = await engine.run(plans[fn], {"journaled": journaled})
                if not result.ok:
                    raise RuntimeError(f"{name}: {result.error}")
                if rep:  # the first round warms up
                    out[name].append(float(result.output))
    finally:
        await store.close()
    return out


_SCHEMAS: list[str] = []


def _schema(url: str) -> str:
    """A schema of its own in the database at ``url`` (dropped at the end), as a store URL."""
    import uuid
    from urllib.parse import quote

    import psycopg

    name = f"erpoz_journal_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{name}"')
    _SCHEMAS.append(name)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={name}')}"


def _drop_schemas(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        for name in _SCHEMAS:
            db.execute(f'DROP SCHEMA "{name}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="calls per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--postgres", help="also measure on this PostgreSQL URL")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    N["calls"] = args.n
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="erpoz-journal-") as tmp:
        stores: list[tuple[str, Callable[[], Store]]] = [
            ("memory", lambda: open_store("memory")),
            ("SQLite sync", lambda: open_store(Path(tmp) / "sync.db", durability="sync")),
            ("SQLite batch", lambda: open_store(Path(tmp) / "batch.db", durability="batch")),
        ]
        if args.postgres:
            stores.append(("PostgreSQL sync", lambda: open_store(_schema(args.postgres))))
        for label, make in stores:
            measured = asyncio.run(_measure(make, args.reps))
            med = {name: statistics.median(v) for name, v in measured.items()}
            for what in ("tool", "model"):
                j, p = med[f"{what}, journaled"], med[f"{what}, plain"]
                rows.append(
                    {
                        "store": label,
                        "call": what,
                        "journaled_us": j,
                        "plain_us": p,
                        "added_us": j - p,
                        "ratio": j / p,
                    }
                )
        if args.postgres:
            _drop_schemas(args.postgres)
    load_after = os.getloadavg()[0]
    print("| store | call | journaled (µs) | plain (µs) | journal adds (µs) | ratio |")
    print("|:---|:---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['store']} | {r['call']} | {r['journaled_us']:.1f} | {r['plain_us']:.1f} | "
            f"{r['added_us']:.1f} | {r['ratio']:.2f}× |"
        )
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; "
        f"{args.reps} repetitions × {args.n} calls, medians"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rows": rows, "load": [load_before, load_after], "n": args.n, "reps": args.reps},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
