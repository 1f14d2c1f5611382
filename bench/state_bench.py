"""Stored bytes of a loop whose state grows: erpoz (SQLite) and LangGraph's ``SqliteSaver``.

The loop runs ``n`` iterations; each appends a 1,000-character note (seeded random letters, the
same on both sides) to a list in its state, so ``n`` iterations write ``n`` KB of new data.
erpoz records every iteration's output (the whole state) in its log; LangGraph checkpoints the
state after every super-step. Both write one SQLite file in WAL mode; the figure is the file's
size after a WAL checkpoint (``PRAGMA wal_checkpoint(TRUNCATE)``), and, to separate what the
state costs from what the log of ``n`` steps costs anyway, the same size minus that of the same
loop whose state does not grow ("state bytes"); the ratio is state bytes per byte written.

    python -m bench.state_bench                       # 25, 50, 100, 200 iterations
    python -m bench.state_bench --site /tmp/lg-site   # LangGraph installed in another folder
    python -m bench.state_bench --json

LangGraph is optional (``bench/requirements.txt``); without it only erpoz's rows are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from erpoz import Engine, Flow, open_store, step

NOTE = 1000
SIZES = (25, 50, 100, 200)


def note(i: int) -> str:
    return "".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz     ", k=NOTE))


@dataclass
class State:
    n: int = 0
    notes: list[str] = field(default_factory=list)
    done: bool = False


@step
def grow(state: State, limit: int, keep: bool) -> State:
    notes = [*state.notes, note(state.n)] if keep else []
    return State(state.n + 1, notes, state.n + 1 >= limit)


def file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def erpoz_bytes(n: int, keep: bool, folder: Path) -> int:
    flow = Flow("grow", inputs={"limit": int, "keep": bool})
    flow.loop(
        grow,
        state="state",
        init=State(),
        until="done",
        max_iterations=n,
        limit=flow.input("limit"),
        keep=flow.input("keep"),
    )
    path = folder / f"erpoz-{n}-{keep}.db"

    async def main() -> None:
        store = open_store(path)
        result = await Engine(store).run(flow, {"limit": n, "keep": keep})
        await store.close()
        assert result.status == "succeeded" and result.output.n == n

    asyncio.run(main())
    return file_bytes(path)


class LgState(TypedDict):
    n: int
    notes: list[str]
    done: bool


def langgraph_bytes(n: int, keep: bool, folder: Path) -> int:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    def lg_grow(state: LgState) -> dict[str, Any]:
        notes = [*state["notes"], note(state["n"])] if keep else []
        return {"n": state["n"] + 1, "notes": notes, "done": state["n"] + 1 >= n}

    graph = StateGraph(LgState)
    graph.add_node("grow", lg_grow)
    graph.add_edge(START, "grow")
    graph.add_conditional_edges("grow", lambda s: END if s["done"] else "grow")
    path = folder / f"lg-{n}-{keep}.db"
    with SqliteSaver.from_conn_string(str(path)) as saver:
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "t"}, "recursion_limit": n + 10}
        out = app.invoke({"n": 0, "notes": [], "done": False}, config)
        assert out["n"] == n
    return file_bytes(path)


def measure(impl: Callable[[int, bool, Path], int], n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        grown = impl(n, True, Path(tmp))
        flat = impl(n, False, Path(tmp))
    written = n * NOTE
    return {
        "iterations": n,
        "written_kb": written / 1000,
        "file_mb": grown / 1e6,
        "flat_file_mb": flat / 1e6,
        "state_kb": (grown - flat) / 1000,
        "ratio": (grown - flat) / written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", help="a folder LangGraph is installed in (appended to sys.path)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.site:
        sys.path.append(args.site)
    impls: dict[str, Callable[[int, bool, Path], int]] = {"erpoz": erpoz_bytes}
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401

        impls["langgraph"] = langgraph_bytes
    except ImportError:
        print("LangGraph is not installed: erpoz only", file=sys.stderr)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for name, impl in impls.items():  # side by side, each size in turn
            rows.append({"impl": name, **measure(impl, n)})
    if args.json:
        print(json.dumps({"loadavg": os.getloadavg(), "rows": rows}, indent=2))
        return 0
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'impl':<10}{'iters':>6}{'written KB':>12}{'file MB':>10}{'state KB':>10}{'ratio':>8}")
    for r in rows:
        print(
            f"{r['impl']:<10}{r['iterations']:>6}{r['written_kb']:>12.0f}{r['file_mb']:>10.2f}"
            f"{r['state_kb']:>10.0f}{r['ratio']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
