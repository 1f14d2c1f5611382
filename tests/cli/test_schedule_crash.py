"""A schedule's tick fires exactly once with three `erpoz worker` processes sharing the store,
when the worker that claimed a tick is killed (kill -9) between claiming it and starting its
run — the moment read from the store, not guessed from a sleep.

The flow the schedule starts (``tests/engine/schedule_flows.py``) waits, when it is imported,
for a gate file: a worker that claimed a tick loads the flow right after the claim, so it stays
there until the test has seen its claim in the store and killed it. Then the gate opens; the
other workers take the tick over (its claimer is a dead process of this host) and start its run
— with the run id derived from the schedule and the tick, the same id its claimer would have
used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erpoz.engine import Schedule, add_schedule, pause_schedule, tick_run_id
from erpoz.store import Store, open_store
from pgtest import throwaway_schema

from ._helpers import ERPOZ, REPO, cli_env

FLOWS = REPO / "tests" / "engine" / "schedule_flows.py"
DEADLINE_S = 120.0


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "s.db")
        return
    with throwaway_schema() as schema:
        yield schema.url


def until(what: str, check: Any) -> Any:
    """Poll ``check()`` (an async function of a store) until it returns something truthy."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read(url: str, op: Any) -> Any:
    async def go() -> Any:
        st: Store = open_store(url)
        try:
            return await op(st)
        finally:
            await st.close()

    return asyncio.run(go())


def test_a_tick_fires_once_when_its_claimer_is_killed(store_url: str, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "exec.log"
    env = cli_env(
        tmp_path,
        ERPOZ_TEST_SCHEDULE_GATE=str(gate),
        ERPOZ_TEST_EXEC_LOG=str(log),
    )
    schedule = Schedule("every", f"{FLOWS}:stamp", "* * * * * *", {"who": "ops"}, catchup="all")
    read(store_url, lambda st: add_schedule(st, schedule))
    cmd = [str(ERPOZ), "worker", "--store", store_url, "--poll", "0.05", "--lease", "5", "--quiet"]
    workers = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    pids = {w.pid: w for w in workers}
    try:
        # the moment: a tick claimed in the store by one of the workers
        claimed = until(
            "a claimed tick",
            lambda: [
                t
                for t in read(store_url, lambda st: st.schedule_ticks("every", 50))
                if t.state == "claimed" and int(t.owner.split(":")[1]) in pids
            ],
        )
        victim = claimed[-1]  # the oldest claimed
        pid = int(victim.owner.split(":")[1])
        os.kill(pid, signal.SIGKILL)
        pids.pop(pid).wait(timeout=30)
        gate.touch()

        def fired_by_another() -> Any:
            ticks = read(store_url, lambda st: st.schedule_ticks("every", 1000))
            mine = [t for t in ticks if t.tick == victim.tick]
            done = [t for t in ticks if t.state == "fired"]
            return mine and mine[0].state == "fired" and len(done) >= 4 and mine[0]

        taken = until("the tick fired by another worker", fired_by_another)
        assert taken.owner != victim.owner and taken.claims >= 2
        assert taken.run_id == tick_run_id("every", victim.tick)
        read(store_url, lambda st: pause_schedule(st, "every"))

        def all_settled() -> Any:
            async def look(st: Any) -> Any:
                ticks = await st.schedule_ticks("every", 1000)
                runs = await st.list_runs(limit=1000)
                return ticks, runs

            ticks, runs = read(store_url, look)
            busy = [t for t in ticks if t.state == "claimed"]
            unfinished = [r for r in runs if r.status != "succeeded"]
            return not busy and not unfinished and (ticks, runs)

        ticks, runs = until("every tick fired and every run finished", all_settled)
    finally:
        for w in pids.values():
            w.send_signal(signal.SIGTERM)
        for w in pids.values():
            w.communicate(timeout=60)
    ticks.sort(key=lambda t: t.tick)
    first = ticks[0].tick
    assert [t.tick - first for t in ticks] == list(range(len(ticks)))  # none lost (catchup all)
    assert all(t.state == "fired" for t in ticks)
    assert sorted(r.run_id for r in runs) == sorted(t.run_id for t in ticks)  # one run a tick
    started = log.read_text().split()
    assert sorted(started) == sorted(t.run_id for t in ticks)  # each run's step ran once
