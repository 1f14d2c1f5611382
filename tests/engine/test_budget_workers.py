"""Budgets across processes, as real `erpoz worker` processes spend them: four workers race on
one project budget (a SQLite file they share, and PostgreSQL) and end at most one call's
estimate above it; a worker killed in the middle of a paid call leaves no reservation behind.

The model is the stub OpenAI server (erpoz.testing): a paid call is estimated before it is sent
at (3 prompt + 10 max output tokens) x $0.001 = $0.013, and the stub answers with exactly that
usage, so each call costs its estimate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine, open_store
from erpoz.flow._load import load_flow
from erpoz.testing import Behaviour, OpenAIStubServer
from pgtest import throwaway_schema

ERPOZ = Path(sys.executable).parent / "erpoz"
pytestmark = pytest.mark.slow

ESTIMATE = 0.013
BUDGET = 0.1  # seven calls fit ($0.091); an eighth would pass it

FLOW = """
from erpoz import Context, Flow, step


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("paid", q, max_tokens=10)).text


flow = Flow("paid", inputs={"q": str})
flow.add(ask, q=flow.input("q"))
"""


def project(tmp: Path, server: OpenAIStubServer, budget: float) -> Path:
    (tmp / "erpoz.yaml").write_text(
        "models:\n"
        "  paid:\n"
        "    provider: openai\n"
        f"    params: {{base_url: '{server.base_url}', max_retries: 0}}\n"
        "    price: {input: 1000, output: 1000}\n"
        f"budget: {{per_project_usd: {budget}}}\n"
    )
    flow = tmp / "paidflow.py"
    flow.write_text(FLOW)
    return flow


def submit(url: str, flow: Path, n: int) -> list[str]:
    async def go() -> list[str]:
        store = open_store(url)
        engine = Engine(store)
        plan = load_flow(f"{flow}:flow")
        ids = [await engine.submit(plan, {"q": "hello there"}) for _ in range(n)]
        await store.close()
        return ids

    return asyncio.run(go())


def worker(url: str, tmp: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("ERPOZ_CONFIG", None)
    return subprocess.Popen(
        [str(ERPOZ), "worker", "--store", url, "--poll", "0.1", "--quiet", *extra],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def model_calls(url: str) -> list[tuple[str, dict[str, Any]]]:
    """(run id, data) of every model_called event in the store."""

    async def go() -> list[tuple[str, dict[str, Any]]]:
        store = open_store(url)
        out = []
        for info in await store.list_runs(limit=10_000):
            for e in await store.events(info.run_id):
                if e.kind == "model_called":
                    out.append((info.run_id, e.data))
        await store.close()
        return out

    return asyncio.run(go())


def ledger(url: str) -> dict[str, tuple[float, float]]:
    async def go() -> dict[str, tuple[float, float]]:
        store: Any = open_store(url)
        scopes = await store.budget_scopes()
        await store.close()
        return {s.scope: (round(s.spent_usd, 9), round(s.reserved_usd, 9)) for s in scopes}

    return asyncio.run(go())


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")
    with throwaway_schema() as schema:
        yield schema.url


def test_four_workers_racing_on_one_budget_end_at_most_one_estimate_above_it(
    store_url: str, tmp_path: Path
) -> None:
    with OpenAIStubServer() as server:
        # a slow answer: the workers' calls are in flight together, even when one worker
        # process starts seconds before the others on a loaded machine (at 0.3 s the first
        # one once spent the whole budget alone, and the test proved no race)
        server.always("chat", Behaviour.reply("fine", usage=(3, 10)).delayed(1.5))
        flow = project(tmp_path, server, BUDGET)
        ids = submit(store_url, flow, 24)
        procs = [worker(store_url, tmp_path, "--burst", "-n", "3") for _ in range(4)]
        for p in procs:
            assert p.wait(timeout=180) in (0, 1), p.stderr.read() if p.stderr else ""
        sent = len(server.requests_to("chat"))
    calls = model_calls(store_url)
    ok = [(rid, d) for rid, d in calls if d["status"] == "ok"]
    refused = [d for _, d in calls if d["status"] == "refused"]
    spent = sum(d["cost_usd"] for _, d in ok)
    assert spent <= BUDGET + ESTIMATE + 1e-9, f"{len(ok)} calls spent ${spent:.3f}"
    assert len(ok) >= 7, "the budget was not used up: proved nothing"
    assert sent == len(ok)  # a refused call never reached the server
    assert len(ok) + len(refused) == len(ids)
    assert all("would take the project over its budget" in d["error"] for d in refused)
    # the calls were spread over the workers, or no race took place
    by_worker = Counter(d.get("worker") for d in _resumes(store_url, {rid for rid, _ in ok}))
    assert len(by_worker) >= 2, by_worker
    assert ledger(store_url)["project"] == (round(spent, 9), 0.0)  # nothing left held


def _resumes(url: str, run_ids: set[str]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        store = open_store(url)
        out = []
        for rid in run_ids:
            out += [e.data for e in await store.events(rid) if e.kind == "run_resumed"]
        await store.close()
        return out

    return asyncio.run(go())


def wait_for(
    what: str, pred: Callable[[], bool], proc: subprocess.Popen[str], timeout: float
) -> None:
    """Poll ``pred`` (a look at the store) until it holds; the worker must still be alive."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"the worker ended before {what}: {proc.stderr}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def holds_in_flight(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(con.execute("SELECT count(*) FROM budget_holds").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet


def test_a_worker_killed_mid_call_leaves_no_reservation_behind(tmp_path: Path) -> None:
    """kill -9 while the call is in flight (the moment is read from the store: its hold is
    recorded); the next worker charges that hold at its estimate (it may have been paid) and
    goes on. The budget then has room for exactly what is left, not less."""
    db = tmp_path / "shared.db"
    with OpenAIStubServer() as server:
        server.always("chat", Behaviour.reply("slow", usage=(3, 10)).delayed(60))
        flow = project(tmp_path, server, 3 * ESTIMATE)
        [first] = submit(str(db), flow, 1)
        doomed = worker(str(db), tmp_path)
        try:
            wait_for("a hold was recorded", lambda: holds_in_flight(db) == 1, doomed, 60)
            os.kill(doomed.pid, signal.SIGKILL)
            assert doomed.wait(timeout=10) == -signal.SIGKILL
        finally:
            if doomed.poll() is None:
                doomed.kill()
        server.always("chat", Behaviour.reply("fine", usage=(3, 10)))
        submit(str(db), flow, 2)
        after = worker(str(db), tmp_path, "--burst", "--json")
        out, errors = after.communicate(timeout=120)
    assert after.returncode in (0, 1), errors
    stats = json.loads(out)
    assert stats["claimed"] == 3  # the killed worker's run, taken over at once, and the two new
    calls = [d for _, d in model_calls(str(db))]
    # the killed call counts at its estimate: 1 + 2 more fit in 3 estimates, a fourth would not
    assert Counter(d["status"] for d in calls) == {"ok": 2, "refused": 1}
    assert ledger(str(db))["project"] == (round(3 * ESTIMATE, 9), 0.0)
    assert first in {rid for rid, _ in model_calls(str(db))}  # the killed run went on
