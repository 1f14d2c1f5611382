"""A sleeping run whose worker is killed (SIGKILL, at a moment read from the store) wakes
exactly once, at its recorded wake time, under workers started afterwards — on SQLite and
PostgreSQL, with real ``erpoz worker`` processes.

Two ways to sleep: held in the worker (``--hold`` longer than the nap: the deadline is on record
before the worker sleeps) and suspended (``--hold 0``: the run waits in the store, held by no
process). Two workers race for the run after the kill; it goes on once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine, open_store
from erpoz.audit import verify
from erpoz.flow._load import load_flow
from pgtest import need_postgres, throwaway_schema

ERPOZ = Path(sys.executable).parent / "erpoz"
FLOWS = Path(__file__).resolve().parent / "wait_flows.py"
NAP_S = 3.0
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "runs.db")
    else:
        need_postgres()
        with throwaway_schema("erpoz_waits_crash") as schema:
            yield schema.url


def start_worker(url: str, tmp: Path, hold: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ERPOZ_TEST_EXEC_LOG": str(tmp / "executions.log"),
        "ERPOZ_TEST_NAP_S": str(NAP_S),
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [
            str(ERPOZ),
            "worker",
            "--store",
            url,
            "--lease",
            "3",
            "--poll",
            "0.1",
            "--quiet",
            "--hold",
            str(hold),
        ],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def look(url: str, run_id: str) -> tuple[str, list[Any]]:
    async def go() -> tuple[str, list[Any]]:
        store = open_store(url)
        try:
            info, events = await store.run_with_events(run_id)
            return (info.status if info else "?"), events
        finally:
            await store.close()

    return asyncio.run(go())


def until(url: str, run_id: str, pred: Any, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, events = look(url, run_id)
        if pred(status, events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not get there in {timeout} s: {look(url, run_id)}")


def submit(url: str) -> str:
    async def go() -> str:
        store = open_store(url)
        try:
            return await Engine(store).submit(load_flow(f"{FLOWS}:napper"), {"x": 1})
        finally:
            await store.close()

    return asyncio.run(go())


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.parametrize("hold", [10.0, 0.0], ids=["held", "suspended"])
def test_a_sleeping_run_killed_with_its_worker_wakes_once_at_its_time(
    url: str, tmp_path: Path, hold: float
) -> None:
    rid = submit(url)
    first = start_worker(url, tmp_path, hold)
    later: list[subprocess.Popen[str]] = []
    try:
        if hold:  # the worker sleeps it out itself: kill it once the deadline is on record
            events = until(url, rid, lambda s, ev: any(e.kind == "timer_set" for e in ev))
        else:  # the run waits in the store, held by nobody
            events = until(url, rid, lambda s, ev: s == "waiting")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        wake_at = next(e for e in events if e.kind == "timer_set").data["wake_at"]
        restarted = time.time()
        later = [start_worker(url, tmp_path, hold) for _ in range(2)]  # they race for it
        events = until(url, rid, lambda s, ev: s in ("succeeded", "failed"))
    finally:
        stop([first, *later])
    assert look(url, rid)[0] == "succeeded"
    kinds = [e.kind for e in events]
    assert kinds.count("timer_set") == 1  # the deadline was never set again
    woke = [e for e in events if e.kind == "woke"]
    assert len(woke) == 1  # the step after the sleep ran once …
    lines = [x for x in (tmp_path / "executions.log").read_text().splitlines() if rid in x]
    assert len(lines) == 1  # … and was started once
    assert woke[0].data["at"] >= wake_at  # not before its time
    # only the time left was slept: the nap ran again after the kill and used the deadline on
    # record (one timer_set, before the kill), not a new one
    naps = [e for e in events if e.kind == "step_started" and e.step == "nap"]
    assert len(naps) == 2 and naps[1].ts > restarted
    nap_done = next(e for e in events if e.kind == "step_succeeded" and e.step == "nap")
    assert nap_done.ts >= wake_at
    if not hold:
        assert kinds.count("run_waiting") == 1
        assert len([e for e in events if e.kind == "run_resumed" and "woke" in e.data]) == 1

    async def audit() -> None:
        store = open_store(url)
        try:
            assert (await verify(store)).ok
        finally:
            await store.close()

    asyncio.run(audit())
