"""A model's rate limit holds across 8 `erpoz worker` processes sharing the store (a SQLite
file, and PostgreSQL): measured where the requests arrive — the stub OpenAI server records
when each came in — no window of the limit's length ever holds more than the limit.

The limit is 4 requests a second and the 24 runs all want the model at once (the 8 workers take
4 each: every run is in flight from the start), so the limit is what paces them over 6 windows
(the busiest holds exactly 4); ``on_limit: wait`` makes every call wait its turn instead of
failing over. (24 runs, not more: each further 4 add a second of waiting and no new case.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from erpoz import Engine, open_store
from erpoz.flow import load_flow
from erpoz.testing import Behaviour, OpenAIStubServer
from pgtest import throwaway_schema

ERPOZ = Path(sys.executable).parent / "erpoz"
pytestmark = pytest.mark.slow

LIMIT, WINDOW_S, RUNS, WORKERS = 4, 1.0, 24, 8

FLOW = """
from erpoz import Context, Flow, step


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("limited", q, max_tokens=10)).text


flow = Flow("limited", inputs={"q": str})
flow.add(ask, q=flow.input("q"))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")
    with throwaway_schema() as schema:
        yield schema.url


def most_in_a_window(times: list[float], window: float) -> int:
    """The most arrivals any window ``[t, t + window)`` holds (the busiest starts at one)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t:
            j += 1
        k = i
        while k < len(times) and times[k] < t + window:
            k += 1
        best = max(best, k - j)
    return best


def test_eight_workers_never_send_more_than_the_limit_in_any_window(
    store_url: str, tmp_path: Path
) -> None:
    with OpenAIStubServer() as server:
        server.always("chat", Behaviour.reply("fine", usage=(3, 10)).delayed(0.05))
        (tmp_path / "erpoz.yaml").write_text(
            "models:\n"
            "  limited:\n"
            "    provider: openai\n"
            f"    params: {{base_url: '{server.base_url}', max_retries: 0}}\n"
            f"    limits: {{requests: {LIMIT}, per_s: {WINDOW_S}, on_limit: wait, "
            "max_wait_s: 600}\n"
        )
        (tmp_path / "limitedflow.py").write_text(FLOW)

        async def submit() -> None:
            store = open_store(store_url)
            engine = Engine(store)
            plan = load_flow(f"{tmp_path / 'limitedflow.py'}:flow")
            for _ in range(RUNS):
                await engine.submit(plan, {"q": "hello"})
            await store.close()

        asyncio.run(submit())
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        env.pop("ERPOZ_CONFIG", None)
        procs = [
            subprocess.Popen(
                [str(ERPOZ), "worker", "--store", store_url, "--poll", "0.1", "--burst", "-n", "4"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        try:
            outs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        arrivals = [r.at for r in server.requests_to("chat")]

    async def statuses() -> list[str]:
        store = open_store(store_url)
        runs = await store.list_runs(limit=1000)
        await store.close()
        return [r.status for r in runs]

    assert statuses_ok(asyncio.run(statuses()))
    assert len(arrivals) == RUNS  # every run's call went out once
    busiest = most_in_a_window(arrivals, WINDOW_S)
    print(
        f"busiest {WINDOW_S:g} s window: {busiest} requests (limit {LIMIT}); "
        f"{RUNS} requests over {max(arrivals) - min(arrivals):.2f} s"
    )
    assert busiest == LIMIT  # never above it, and the limit is what paced them


def statuses_ok(statuses: list[str]) -> bool:
    return len(statuses) == RUNS and set(statuses) == {"succeeded"}
