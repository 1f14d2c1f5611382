"""Workers sharing a PostgreSQL store, as real processes: SIGKILL at points read from the store
(a run has k steps recorded), SIGTERM, a restart of a private PostgreSQL server in the middle, a
step that kills its worker, and a worker that stalls past its lease while another takes over.

Runs against ``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
in a throw-away schema; skipped when the server is unreachable, failed when
``ERPOZ_TEST_POSTGRES=required``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine, open_store
from erpoz.audit import verify
from erpoz.errors import StoreError
from erpoz.flow._load import load_flow
from pgtest import REQUIRED, private_cluster, throwaway_schema
from store.contract import assert_valid_chain, new_run

if REQUIRED:
    import psycopg
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")

from erpoz.store._postgres import PostgresStore

ERPOZ = Path(sys.executable).parent / "erpoz"
FLOWS = Path(__file__).resolve().parent / "queue_flows.py"
pytestmark = pytest.mark.slow


@pytest.fixture
def pg() -> Iterator[str]:
    """The URL of a throw-away schema."""
    with throwaway_schema() as schema:
        yield schema.url


def sql(url: str, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        cur = db.execute(query, args)
        return cur.fetchall() if cur.description else []


def submit(url: str, n: int, flow: str = "chain5") -> list[str]:
    async def go() -> list[str]:
        store = open_store(url)
        engine = Engine(store)
        plan = load_flow(f"{FLOWS}:{flow}")
        ids = [await engine.submit(plan, {"x": i}) for i in range(n)]
        await store.close()
        return ids

    return asyncio.run(go())


def start_worker(url: str, tmp: Path, *extra: str, step_s: float = 0.1) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ERPOZ_TEST_EXEC_LOG": str(tmp / "executions.log"),
        "ERPOZ_TEST_STEP_S": str(step_s),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [str(ERPOZ), "worker", "--store", url, "--lease", "3", "--poll", "0.2", "--quiet", *extra],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def statuses(url: str) -> collections.Counter[str]:
    return collections.Counter(r[0] for r in sql(url, "SELECT status FROM runs"))


def wait_until(url: str, pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred(url):
                return
        except psycopg.OperationalError:
            pass  # the server is restarting
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s: {statuses(url)}")


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


def check_exactly_once(url: str, tmp: Path, ids: list[str]) -> None:
    """Every run succeeded with x + 5, each step's success recorded once, no step started
    again after its success was recorded, and every chain verifies."""
    rows = sql(url, "SELECT run_id, status, output, inputs FROM runs")
    by_id = {r[0]: r for r in rows}
    for rid in ids:
        assert by_id[rid][1] == "succeeded", by_id[rid]
        assert by_id[rid][2] == str(json.loads(by_id[rid][3])["x"] + 5)
    recorded: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for run_id, step, ts in sql(
        url, "SELECT run_id, step, ts FROM events WHERE kind = 'step_succeeded'"
    ):
        recorded[(run_id, step)].append(ts)
    assert all(len(v) == 1 for v in recorded.values())
    assert len(recorded) == 5 * len(ids)
    log = (tmp / "executions.log").read_text().split("\n")
    for line in filter(None, log):
        run_id, step, started = line.split()
        done = recorded[(run_id, step)][0]
        assert float(started) < done, f"{run_id} {step} ran again after its success"

    async def audit() -> None:
        store = open_store(url)
        report = await verify(store)
        await store.close()
        assert report.ok, report.problems[:3]
        assert report.runs == len(ids)

    asyncio.run(audit())


def in_flight_with_steps(url: str, pid: int, k: int) -> str | None:
    """A run the worker process ``pid`` holds that has ``k`` or more steps recorded and is
    not finished: the moment to kill that worker (read from the store, not from a clock)."""
    rows = sql(
        url,
        "SELECT r.run_id FROM runs r WHERE r.status = 'running' AND r.owner LIKE %s AND "
        "(SELECT count(*) FROM events e WHERE e.run_id = r.run_id "
        "AND e.kind = 'step_succeeded') >= %s LIMIT 1",
        (f"{socket.gethostname()}:{pid}:%", k),
    )
    return str(rows[0][0]) if rows else None


def test_sigkill_at_random_points_while_three_workers_drain_200_runs(
    pg: str, tmp_path: Path
) -> None:
    """Kill -9 a worker each time one of its runs has k steps recorded (k random, 1..4 of 5),
    then start another: 8 kills that each cut a run in flight, as the store shows."""
    ids = submit(pg, 200)
    rng = random.Random(8)
    procs = [start_worker(pg, tmp_path, "-n", "4") for _ in range(3)]
    cut: list[str] = []  # runs that were in flight, unfinished, when their worker was killed
    try:
        deadline = time.monotonic() + 240
        while len(cut) < 8 and statuses(pg)["succeeded"] < 200:
            assert time.monotonic() < deadline, f"only {len(cut)} kills in time: {statuses(pg)}"
            i, k = rng.randrange(3), rng.randint(1, 4)
            run_id = in_flight_with_steps(pg, procs[i].pid, k)
            if run_id is None:
                time.sleep(0.02)  # polling the store, not timing the kill
                continue
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            [(status,)] = sql(pg, "SELECT status FROM runs WHERE run_id=%s", (run_id,))
            if status == "running":  # the store says the kill cut it (it may rarely have ended)
                cut.append(run_id)
            procs[i] = start_worker(pg, tmp_path, "-n", "4")
        wait_until(pg, lambda u: statuses(u)["succeeded"] == 200, 120)
    finally:
        stop(procs)
    assert len(cut) == 8, f"the runs ended before 8 kills could cut one: {cut}"
    claims = dict(sql(pg, "SELECT run_id, claims FROM runs WHERE run_id = ANY(%s)", (cut,)))
    assert all(claims[r] >= 2 for r in cut), claims  # each was taken over by another worker
    check_exactly_once(pg, tmp_path, ids)


def test_sigterm_finishes_or_hands_back_the_runs_in_flight(pg: str, tmp_path: Path) -> None:
    # grace long enough: the run in flight finishes, then the worker exits
    [first] = submit(pg, 1)
    w = start_worker(pg, tmp_path, "--grace", "60", step_s=0.3)
    wait_until(pg, lambda u: statuses(u)["running"] == 1, 60)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0
    assert "stopping" in (w.stderr.read() if w.stderr else "")
    assert sql(pg, "SELECT status FROM runs WHERE run_id=%s", (first,)) == [("succeeded",)]

    # no grace: the run in flight goes back to the queue, and another worker goes on with it
    [second] = submit(pg, 1)
    w = start_worker(pg, tmp_path, "--grace", "0", step_s=2.0)
    wait_until(
        pg,
        lambda u: (
            sql(
                u, "SELECT count(*) FROM events WHERE run_id=%s AND kind='step_started'", (second,)
            )[0][0]
            >= 2
        ),
        60,
    )
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0
    [(status, owner)] = sql(pg, "SELECT status, owner FROM runs WHERE run_id=%s", (second,))
    assert (status, owner) == ("running", None)
    w = start_worker(pg, tmp_path, "--burst", step_s=0.01)
    assert w.wait(timeout=120) == 0
    [(status, claims)] = sql(pg, "SELECT status, claims FROM runs WHERE run_id=%s", (second,))
    assert (status, claims) == ("succeeded", 2)
    check_exactly_once(pg, tmp_path, [first, second])


def test_workers_reconnect_and_go_on_after_postgresql_restarts(tmp_path: Path) -> None:
    """The server restarts while two workers drain 100 runs: they reconnect and finish. The
    server is a private one this test starts (initdb in a temp folder, its own port), never the
    machine's shared PostgreSQL. The restart comes when the store says 5 runs succeeded."""
    with private_cluster() as cluster:
        url = cluster.url
        ids = submit(url, 100)
        procs = [start_worker(url, tmp_path, "-n", "4") for _ in range(2)]
        try:
            wait_until(url, lambda u: statuses(u)["succeeded"] >= 5, 60)
            cluster.restart()
            wait_until(url, lambda u: statuses(u) is not None, 30)  # the server answers again
            assert statuses(url)["succeeded"] < 100, "the restart came after the work"
            wait_until(url, lambda u: statuses(u)["succeeded"] == 100, 120)
            assert all(p.poll() is None for p in procs), "a worker died with the server"
        finally:
            stop(procs)
        check_exactly_once(url, tmp_path, ids)


def test_a_run_that_kills_its_workers_is_abandoned_after_max_claims(
    pg: str, tmp_path: Path
) -> None:
    [rid] = submit(pg, 1, flow="killer")
    codes = []
    for _ in range(4):
        w = start_worker(pg, tmp_path, "--burst", "--max-claims", "2")
        codes.append(w.wait(timeout=120))
        if codes[-1] == 0:
            break
    assert codes == [17, 17, 0]  # two workers died running it; the third gave up on it
    [(status, error, claims)] = sql(
        pg, "SELECT status, error, claims FROM runs WHERE run_id=%s", (rid,)
    )
    assert (status, claims) == ("failed", 3)
    assert "abandoned" in error and "2 times" in error


def test_a_worker_that_stalled_past_its_lease_cannot_write_after_the_takeover(pg: str) -> None:
    host = socket.gethostname()
    slow_owner, new_owner = f"{host}:{os.getpid()}:stalled", f"{host}:{os.getpid()}:successor"
    a, b = PostgresStore(pg), PostgresStore(pg)
    a.lease_s = 0.5
    asyncio.run(b.submit_run(new_run("run-1"), "default"))

    async def take() -> Any:
        claim = await a.claim_next(slow_owner, ["default"])
        claim.writer.append("run_resumed")
        await claim.writer.flush()
        return claim.writer

    stalled = asyncio.run(take())  # then its process stops (a GC pause, a partition …)
    time.sleep(0.8)

    async def successor() -> None:
        claim = await b.claim_next(new_owner, ["default"])
        assert claim is not None and claim.previous_owner == slow_owner
        claim.writer.append("run_resumed")
        claim.writer.append("step_succeeded", "s1", 1, payload="1")
        await claim.writer.flush()

    asyncio.run(successor())

    async def wakes_up() -> None:
        stalled.append("step_succeeded", "s1", 1, payload="999")
        with pytest.raises(StoreError, match="taken over"):
            await stalled.flush()
        assert stalled.lost

    asyncio.run(wakes_up())

    async def check() -> None:
        events = await b.events("run-1")
        assert [e.payload for e in events if e.kind == "step_succeeded"] == ["1"]
        assert_valid_chain(events, "run-1")
        await a.close()
        await b.close()

    asyncio.run(check())


def test_the_heartbeat_notices_a_lost_lease(pg: str) -> None:
    a, b = PostgresStore(pg), PostgresStore(pg)
    a.lease_s = 0.5
    asyncio.run(b.submit_run(new_run("run-1"), "default"))
    me = f"{socket.gethostname()}:{os.getpid()}"

    async def take() -> Any:
        claim = await a.claim_next(f"{me}:a", ["default"])
        await claim.writer.flush()
        return claim.writer

    held = asyncio.run(take())
    time.sleep(0.8)
    assert asyncio.run(b.claim_next(f"{me}:b", ["default"])) is not None

    async def beat() -> None:
        a._start_heartbeat()  # the stalled process comes back and renews its leases
        for _ in range(50):
            if held.lost:
                break
            await asyncio.sleep(0.05)
        assert held.lost
        await a.close()
        await b.close()

    asyncio.run(beat())
