"""Crash safety: SIGKILL `erpoz run` part-way, then `erpoz runs resume` finishes the run, in
every durability mode (``effects`` holds pure steps' successes until the heartbeat commits them
or something leaves the process: they are then in flight at the kill, and run again).

A step whose success was recorded before the kill must never run again; a step that was in
flight may run twice (at-least-once), and must, since its output was never recorded. The flows
(tests/cli/fixtures/crashflow.py) append each step execution's id to a marker file.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._helpers import ERPOZ, FIXTURES, Cli

pytestmark = pytest.mark.slow

DELAY = 0.3  # seconds each step sleeps (CRASHFLOW_DELAY)
START = 5
CHAIN = [f"s{i}" for i in range(1, 7)]
ITEMS = [f"mp[{i}]" for i in range(8)]
CHAIN_OUTPUT = START + len(CHAIN)
MAP_OUTPUT = sum(((START + 1) * 10 + i) ** 2 for i in range(len(ITEMS)))


@dataclass
class Crashed:
    """A run that was SIGKILLed: what the store recorded before the kill, what had started."""

    cli: Cli
    run_id: str
    pid: int
    recorded: set[str]  # steps with a step_succeeded event at kill time
    started: Counter[str]  # marker lines (step executions begun) at kill time

    @property
    def in_flight(self) -> set[str]:
        return set(self.started) - self.recorded


@pytest.fixture(params=["sync", "batch", "effects"])
def durability(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is still alive at the end is killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait(timeout=10)


def _query(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any] | None:
    """Read the store read-only while another process writes it (None: not there yet)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _succeeded(db: Path, run_id: str) -> list[str]:
    rows = _query(db, "SELECT step FROM events WHERE run_id=? AND kind='step_succeeded'", (run_id,))
    return [r[0] for r in rows or []]


def _marker(cli: Cli) -> Counter[str]:
    path = cli.tmp_path / "marker.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _start(
    cli: Cli, attr: str, spawned: list[subprocess.Popen[bytes]], durability: str = "sync"
) -> subprocess.Popen[bytes]:
    module = cli.tmp_path / "crashflow.py"
    shutil.copy(FIXTURES / "crashflow.py", module)
    cli.env["CRASHFLOW_DELAY"] = str(DELAY)
    proc = subprocess.Popen(
        [
            str(ERPOZ),
            "run",
            f"{module}:{attr}",
            "-i",
            f"start={START}",
            "--json",
            "--store",
            str(cli.store),
            "--durability",
            durability,
        ],
        cwd=cli.tmp_path,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spawned.append(proc)
    return proc


def _wait_until(
    cli: Cli,
    proc: subprocess.Popen[bytes],
    ready: Callable[[list[str]], bool],
    timeout: float = 30,
    *,
    started: bool = False,
) -> str:
    """Poll the store until ``ready(succeeded steps)`` (with ``started``: ``ready(steps that
    began)``, from the marker file); returns the run id."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _query(cli.store, "SELECT run_id FROM runs")
        if rows:
            run_id = str(rows[0][0])
            if ready(list(_marker(cli)) if started else _succeeded(cli.store, run_id)):
                return run_id
        assert proc.poll() is None, f"erpoz run ended (exit {proc.returncode}) before the kill"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)


def _kill(cli: Cli, proc: subprocess.Popen[bytes], run_id: str) -> Crashed:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    recorded = set(_succeeded(cli.store, run_id))  # exactly what was committed before the kill
    return Crashed(cli, run_id, proc.pid, recorded, _marker(cli))


def _crash(
    cli: Cli,
    attr: str,
    spawned: list[subprocess.Popen[bytes]],
    ready: Callable[[list[str]], bool],
    durability: str,
) -> Crashed:
    proc = _start(cli, attr, spawned, durability)
    # ``effects`` commits pure steps' successes only now and then: pick the moment from the
    # steps that began, not from those on record
    run_id = _wait_until(cli, proc, ready, started=durability == "effects")
    seen = set(_succeeded(cli.store, run_id))
    crashed = _kill(cli, proc, run_id)
    assert seen <= crashed.recorded
    # before resuming: the dead run is still "running", and nothing recorded ran twice
    assert crashed.cli.show(run_id)["status"] == "running"
    assert all(crashed.started[s] == 1 for s in crashed.recorded), crashed.started
    assert crashed.recorded <= set(crashed.started)
    return crashed


def _resume_and_check(
    crashed: Crashed, steps: list[str], output: int, containers: frozenset[str] = frozenset()
) -> None:
    """Resume, then check: ``steps`` are the step executions (each writes a marker line);
    ``containers`` the steps that only succeed once their parts have (a map step)."""
    cli, run_id = crashed.cli, crashed.run_id
    res = cli("runs", "resume", run_id, "--json", timeout=60)
    assert res.code == 0, str(res)
    data = res.json()
    assert data["run_id"] == run_id
    assert data["status"] == "succeeded"
    assert data["output"] == output

    info = cli.show(run_id)
    assert info["status"] == "succeeded"
    assert info["output"] == output

    counts = _marker(cli)
    # the key property: a step whose success was recorded before the kill never runs again
    again = {s: counts[s] for s in crashed.recorded if counts[s] != 1}
    assert not again, f"recorded before the kill, yet ran again: {again}"
    # every step ran; only the ones in flight at the kill ran twice (at-least-once) ...
    assert set(counts) == set(steps)
    assert all(1 <= n <= 2 for n in counts.values()), counts
    # ... and those had to run again, as their output was never recorded
    assert {s for s, n in counts.items() if n == 2} == crashed.in_flight

    events = cli.events(run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for prev, cur in itertools.pairwise(events):
        assert cur["prev_hash"] == prev["hash"], "hash chain broken across the crash"
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_succeeded"
    assert kinds.count("run_resumed") == 1
    resumed_at = kinds.index("run_resumed")
    succeeded = Counter(e["step"] for e in events if e["kind"] == "step_succeeded")
    assert set(succeeded) == set(steps) | containers
    assert all(n == 1 for n in succeeded.values()), f"a step succeeded twice: {succeeded}"
    before = {e["step"] for e in events[:resumed_at] if e["kind"] == "step_succeeded"}
    assert before == crashed.recorded
    # and the resumed process did not even start the recorded steps again
    restarted = {e["step"] for e in events[resumed_at:] if e["kind"] == "step_started"}
    assert not (restarted & (crashed.recorded - containers)), restarted


@pytest.mark.parametrize("k", [1, 3, 5])
def test_sigkill_after_k_steps_then_resume(
    tmp_path: Path, spawned: list[Any], k: int, durability: str
) -> None:
    cli = Cli(tmp_path)
    crashed = _crash(cli, "flow", spawned, lambda done: len(done) >= k, durability)
    assert len(crashed.recorded) >= k or durability == "effects"
    assert crashed.recorded == set(CHAIN[: len(crashed.recorded)])  # a chain: a prefix
    assert len(crashed.recorded) < len(CHAIN), "killed too late: nothing left to resume"
    _resume_and_check(crashed, CHAIN, CHAIN_OUTPUT)


def test_sigkill_midway_through_a_map_then_resume(
    tmp_path: Path, spawned: list[Any], durability: str
) -> None:
    cli = Cli(tmp_path)

    def midway(done: list[str]) -> bool:
        return sum(bool(re.fullmatch(r"mp\[\d+\]", s)) for s in done) >= 3

    crashed = _crash(cli, "mapflow", spawned, midway, durability)
    items_done = {s for s in crashed.recorded if s.startswith("mp[")}
    assert len(items_done) < len(ITEMS), crashed.recorded
    assert "mp" not in crashed.recorded and "sum" not in crashed.recorded
    if durability != "effects":  # there, what is on record at the kill is the last heartbeat's
        assert len(items_done) >= 3
        assert {"s1", "spread"} <= crashed.recorded
    _resume_and_check(crashed, ["s1", "spread", *ITEMS, "sum"], MAP_OUTPUT, frozenset({"mp"}))


def test_resume_right_after_sigkill_is_not_blocked_by_the_dead_owners_lease(
    tmp_path: Path, spawned: list[Any], durability: str
) -> None:
    cli = Cli(tmp_path)
    proc = _start(cli, "flow", spawned, durability)
    run_id = _wait_until(cli, proc, lambda done: len(done) >= 2)

    # while the owner lives (stopped, not dead), its lease holds: resume is refused
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        res = cli("runs", "resume", run_id)
        assert res.code in (4, 5), str(res)
        assert "being run by" in res.text
        assert f":{proc.pid}:" in res.text
    finally:
        crashed = _kill(cli, proc, run_id)

    rows = _query(cli.store, "SELECT owner, lease_until FROM runs WHERE run_id=?", (run_id,))
    assert rows
    owner, lease_until = rows[0]
    assert f":{proc.pid}:" in owner  # the dead process still holds the lease ...
    assert lease_until > time.time() + 5  # ... for a good while yet

    lease_left = lease_until - time.time()
    t0 = time.monotonic()
    res = cli("runs", "resume", run_id, "--json")
    elapsed = time.monotonic() - t0
    assert res.code == 0, str(res)
    assert res.json()["status"] == "succeeded"
    assert res.json()["output"] == CHAIN_OUTPUT
    assert elapsed < min(lease_left, 15), f"resume took {elapsed:.1f} s: waited for the lease?"
    rows = _query(cli.store, "SELECT owner, lease_until FROM runs WHERE run_id=?", (run_id,))
    assert rows == [(None, None)]  # released when done
    counts = _marker(cli)
    assert all(counts[s] == 1 for s in crashed.recorded), counts
    assert set(counts) == set(CHAIN)
