"""Schedules through the Python API: catch-up rules, each tick fired once by competing
schedulers, ticks of a dead claimer taken over, and the ``schedules:`` section of erpoz.yaml."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from erpoz import Engine
from erpoz.engine import (
    Cron,
    Schedule,
    Scheduler,
    add_schedule,
    pause_schedule,
    schedules_from_config,
    sync_schedules,
    tick_run_id,
)
from erpoz.errors import ConfigError, FlowError
from erpoz.models._config import parse_config
from erpoz.store import SQLiteStore, Store, TickClaim, open_store

FLOWS = Path(__file__).resolve().parent / "schedule_flows.py"
STAMP = f"{FLOWS}:stamp"
EVERY_SECOND = "* * * * * *"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return open_store("memory" if request.param == "memory" else tmp_path / "s.db")


async def add(store: Store, catchup: str = "latest", replace: bool = False) -> Any:
    schedule = Schedule("every", STAMP, EVERY_SECOND, {"who": "ops"}, catchup=catchup)
    return await add_schedule(store, schedule, replace=replace)


def test_cron_ticks_in_a_time_zone() -> None:
    paris = Cron("0 2 * * *", "Europe/Paris")
    t = paris.next_after(time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, 0)))
    assert time.gmtime(t)[3] == 1  # 02:00 in Paris is 01:00 UTC in winter
    assert paris.latest_until(t) == t and paris.latest_until(t - 1) == t - 86_400
    assert paris.count(t, t + 3 * 86_400) == 3


@pytest.mark.parametrize(
    ("catchup", "late", "fired", "skipped"),
    [
        ("all", 0.5, [0, 1, 2, 3, 4], 0),
        ("latest", 0.5, [4], 4),
        ("none", 0.1, [4], 4),  # the latest is late by less than late_s: on time
        ("none", 0.5, [], 5),  # later than late_s: downtime, nothing fires
    ],
)
def test_catchup_after_downtime(
    store: Store, catchup: str, late: float, fired: list[int], skipped: int
) -> None:
    async def main() -> None:
        row = await add(store, catchup)
        first = row.next_tick
        behind = 4  # ticks 0..4 are due
        sched = Scheduler(Engine(store), late_s=0.25)
        done = await sched.run_once(now=first + behind + late)
        assert [t.tick - first for t in done] == fired
        assert all(t.state == "fired" for t in done)
        (after,) = await store.list_schedules()  # type: ignore[attr-defined]
        assert after.next_tick == first + behind + 1 and after.skipped == skipped
        runs = {r.run_id: r for r in await store.list_runs()}
        assert set(runs) == {tick_run_id("every", first + i) for i in fired}
        assert all(r.status == "queued" and r.queue == "default" for r in runs.values())
        assert await sched.run_once(now=first + behind + late) == []  # nothing due twice

    run(main())


def test_competing_schedulers_fire_each_tick_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        stores = [SQLiteStore(path) for _ in range(3)]
        row = await add(stores[0], "all")
        schedulers = [Scheduler(Engine(s)) for s in stores]
        now = row.next_tick + 9.5
        done = await asyncio.gather(*(s.run_once(now=now) for s in schedulers))
        ticks = sorted(t.tick - row.next_tick for d in done for t in d)
        assert ticks == list(range(10))  # ten ticks, each fired by one of them
        runs = await stores[0].list_runs(limit=100)
        assert len(runs) == 10 and all(r.run_id.startswith("s-every-") for r in runs)
        for s in stores:
            await s.close()

    run(main())


def test_a_tick_its_claimer_left_is_fired_by_another_with_the_same_run_id(
    store: Store,
) -> None:
    async def main() -> None:
        row = await add(store)
        tick = row.next_tick
        lapsed = TickClaim(
            "every", tick, tick + 1, "gone:1:x", time.time() - 1, tick, tick_run_id("every", tick)
        )
        assert await store.claim_tick(lapsed)  # type: ignore[attr-defined]
        (done,) = await Scheduler(Engine(store)).run_once(now=tick + 0.5)
        assert (done.tick, done.run_id, done.state) == (tick, tick_run_id("every", tick), "fired")
        assert done.claims == 2
        (r,) = await store.list_runs()
        assert r.run_id == done.run_id

    run(main())


def test_a_retried_fire_finds_its_run_started_and_starts_none(store: Store) -> None:
    async def main() -> None:
        row = await add(store)
        tick = row.next_tick
        engine = Engine(store)
        run_id = tick_run_id("every", tick)
        claim = TickClaim("every", tick, tick + 1, "gone:1:x", time.time() - 1, tick, run_id)
        assert await store.claim_tick(claim)  # type: ignore[attr-defined]
        from erpoz.flow import load_flow

        await engine.submit(load_flow(STAMP), {"who": "ops"}, run_id=run_id)  # it got that far
        (done,) = await Scheduler(engine).run_once(now=tick + 0.5)
        assert done.state == "fired" and done.run_id == run_id
        assert [r.run_id for r in await store.list_runs()] == [run_id]

    run(main())


def test_a_paused_schedule_fires_nothing_and_resumes_from_now(store: Store) -> None:
    async def main() -> None:
        row = await add(store, "all")
        await pause_schedule(store, "every")
        assert await Scheduler(Engine(store)).run_once(now=row.next_tick + 5) == []
        resumed = await pause_schedule(store, "every", paused=False)
        assert not resumed.paused and resumed.next_tick > time.time()

    run(main())


def test_a_flow_gone_at_its_tick_fails_the_tick_saying_why(store: Store, tmp_path: Path) -> None:
    flow = tmp_path / "gone.py"
    flow.write_text(FLOWS.read_text())  # its source is where it is: gone.py

    async def main() -> None:
        row = await add_schedule(
            store, Schedule("gone", f"{flow}:stamp", EVERY_SECOND, {"who": "x"})
        )
        flow.unlink()
        (done,) = await Scheduler(Engine(store)).run_once(now=row.next_tick)
        assert done.state == "failed" and "no such file" in (done.error or "")
        (t,) = await store.schedule_ticks("gone")  # type: ignore[attr-defined]
        assert t.state == "failed" and t.error == done.error
        assert await store.list_runs() == []

    run(main())


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule("bad name", STAMP, EVERY_SECOND), "schedule name 'bad name'"),
        (Schedule("s", STAMP, "61 * * * *"), "cron '61 * * * *'"),
        (Schedule("s", STAMP, "* * *"), "expected 5 fields"),
        (Schedule("s", STAMP, EVERY_SECOND, timezone="Mars/Base"), "unknown time zone"),
        (Schedule("s", STAMP, EVERY_SECOND, catchup="some"), "catchup 'some'"),
        (Schedule("s", STAMP, EVERY_SECOND, {"who": 3}), "inputs of flow 'stamp'"),
        (Schedule("s", STAMP, EVERY_SECOND, {}), "inputs of flow 'stamp'"),
        (Schedule("s", "nope.py:f", EVERY_SECOND), "no such file"),
    ],
)
def test_a_schedule_that_could_never_fire_is_refused(schedule: Schedule, message: str) -> None:
    store = open_store("memory")
    with pytest.raises((ConfigError, FlowError)) as info:
        run(add_schedule(store, schedule))
    assert message in str(info.value)
    assert run(store.list_schedules()) == []  # type: ignore[attr-defined]


def test_adding_a_name_twice_needs_replace(store: Store) -> None:
    async def main() -> None:
        await add(store)
        with pytest.raises(ConfigError, match="exists"):
            await add(store)
        replaced = await add(store, "all", replace=True)
        assert replaced.catchup == "all"

    run(main())


CONFIG = f"""\
models: {{}}
schedules:
  nightly:
    flow: {STAMP}
    cron: "0 2 * * *"
    inputs: {{who: night}}
    catchup: all
  hourly:
    flow: {STAMP}
    cron: "0 * * * *"
    timezone: Europe/Paris
    inputs: {{who: hour}}
"""


def test_schedules_in_the_project_file_sync_idempotently(store: Store) -> None:
    async def main() -> None:
        found = schedules_from_config(parse_config(CONFIG, file="erpoz.yaml"))
        assert [(s.name, s.catchup, s.timezone) for s in found] == [
            ("nightly", "all", "UTC"),
            ("hourly", "latest", "Europe/Paris"),
        ]
        first = await sync_schedules(store, found)
        assert first.added == ("nightly", "hourly")
        again = await sync_schedules(store, found)  # another worker starting: no change
        assert again.kept == ("nightly", "hourly") and not again.added
        fewer = await sync_schedules(store, found[:1])
        assert fewer.removed == ("hourly",)
        rows = await store.list_schedules()  # type: ignore[attr-defined]
        assert [(r.name, r.origin) for r in rows] == [("nightly", "config")]

    run(main())


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("schedules:\n  n:\n    flow: f.py:x\n    cron: '99 * * * *'\n", 4, "cron '99 * * * *'"),
        (
            "schedules:\n  n:\n    flow: f.py:x\n    cron: '* * * * *'\n    every: 1\n",
            5,
            "unknown key 'every'",
        ),
        ("schedules:\n  n:\n    cron: '* * * * *'\n", 2, "'flow' is required"),
        (
            "schedules:\n  n:\n    flow: f.py:x\n    cron: '* * * * *'\n    catchup: most\n",
            5,
            "catchup 'most'",
        ),
        (
            "schedules:\n  n:\n    flow: f.py:x\n    cron: '* * * * *'\n    inputs: [1]\n",
            5,
            "inputs is a mapping",
        ),
        ("schedules: [1]\n", 1, "expected a mapping of schedule names"),
    ],
)
def test_a_bad_schedules_section_names_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        schedules_from_config(parse_config(text, file="erpoz.yaml"))
    assert (info.value.file, info.value.line) == ("erpoz.yaml", line)
    assert message in str(info.value)


DOC = Path(__file__).resolve().parents[2] / "docs" / "schedules.md"


def test_the_docs_python_example_prints_what_the_page_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib
    import io
    import re

    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    monkeypatch.chdir(DOC.parents[1])  # the page's paths are the repository's
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(blocks[index][1], str(DOC), "exec", dont_inherit=True), {"__name__": "doc"})
    assert blocks[index + 1][0] == "text"
    assert printed.getvalue().strip() == blocks[index + 1][1].strip()


def test_the_docs_project_file_parses_and_its_error_is_erpozs() -> None:
    import re

    text = DOC.read_text(encoding="utf-8")
    yaml = re.search(r"^```yaml\n(.*?)^```$", text, re.S | re.M)
    assert yaml is not None
    found = schedules_from_config(parse_config(yaml.group(1), file="erpoz.yaml"))
    assert [(s.name, s.timezone, s.catchup) for s in found] == [
        ("nightly", "Europe/Paris", "all"),
        ("digest", "UTC", "latest"),
    ]
    broken = yaml.group(1).replace('"0 2 * * *"', '"0 2 * *"')
    with pytest.raises(ConfigError) as info:
        schedules_from_config(parse_config(broken, file="erpoz.yaml"))
    assert f"error: {info.value}" in text  # the page shows the message erpoz gives
