"""The audit reads a run's events and its recorded head in one snapshot: `erpoz audit verify
--all` never reports a run "truncated" while another process is writing runs, on SQLite and
PostgreSQL (where it reads in a REPEATABLE READ transaction). `runs show` and the API read a
run and its events the same way.

A real writer process appends runs the whole time (each run's head moves when it ends); the
test verifies in a loop meanwhile, in-process and through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from erpoz import open_store
from erpoz.audit import verify
from pgtest import throwaway_schema

ERPOZ = Path(sys.executable).parent / "erpoz"
pytestmark = pytest.mark.slow

WRITER = textwrap.dedent(
    """
    import asyncio, itertools, os, sys
    from erpoz import open_store
    from erpoz.store import NewRun

    async def main(url: str) -> None:
        store = open_store(url)
        owner = f"writer:{os.getpid()}:w"
        for i in itertools.count():
            w = await store.create_run(NewRun(f"w{i:06d}", "busy", "f" * 16, "{}"), owner)
            for k in range(4):
                w.append("step_started", f"s{k}", 1)
                w.append("step_succeeded", f"s{k}", 1, {"ms": 1.0}, str(k))
                await w.flush()
            w.append("run_succeeded", payload="3")
            await w.release()

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "busy.db")
        return
    pytest.importorskip("psycopg", reason="psycopg is not installed (erpoz[postgres])")
    with throwaway_schema() as schema:
        yield schema.url


@pytest.fixture
def writer(store_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), store_url], stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def runs_written(url: str) -> int:
    async def count() -> int:
        store = open_store(url)
        n = len(await store.list_runs(limit=100_000))
        await store.close()
        return n

    return asyncio.run(count())


def test_verify_all_is_ok_while_another_process_writes_runs(
    store_url: str, writer: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 60
    while runs_written(store_url) < 20:  # the writer is under way
        assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
        assert time.monotonic() < deadline, "the writer wrote nothing"
        time.sleep(0.05)

    async def loop() -> list[int]:
        store = open_store(store_url)
        seen = []
        try:
            for _ in range(40):
                report = await verify(store)
                assert report.ok, [str(p) for p in report.problems[:3]]
                seen.append(report.runs)
        finally:
            await store.close()
        return seen

    seen = asyncio.run(loop())
    assert seen[-1] > seen[0], "no run was written while verifying: proved nothing"
    for _ in range(3):  # the command, as an auditor runs it
        res = subprocess.run(
            [str(ERPOZ), "audit", "verify", "--all", "--json", "--store", store_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["ok"] is True
    res = subprocess.run(
        [str(ERPOZ), "runs", "show", "w000003", "--json", "--store", store_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["status"] == "succeeded" and shown["events"] == 10
    assert writer.poll() is None
