"""Property: on any DAG, every step runs exactly once and only after all its dependencies."""

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import erpoz
from erpoz import Flow


@st.composite
def dags(draw, max_nodes: int = 25) -> list[list[int]]:
    """deps[i]: the (sorted) earlier nodes node i depends on."""
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    return [
        sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=i))) if i else []
        for i in range(n)
    ]


def build(
    deps: list[list[int]],
    log: list[tuple[str, int]],
    yields: list[int],
    got: dict[int, list[int]],
) -> Flow:
    """One step per node; each records when it starts and finishes, and what it was given."""

    async def node(me: int, deps: list[int]) -> int:
        log.append(("start", me))
        got[me] = deps
        for _ in range(yields[me % len(yields)]):
            await asyncio.sleep(0)
        log.append(("finish", me))
        return me

    flow = Flow("dag")
    refs: list = []
    for i, ds in enumerate(deps):
        refs.append(flow.add(node, id=f"n{i}", me=i, deps=[refs[d] for d in ds]))
    # one result: a collector over every node nothing else depends on
    used = {d for ds in deps for d in ds}
    sinks = [refs[i] for i in range(len(deps)) if i not in used]

    async def collect(xs: list[int]) -> list[int]:
        return xs

    flow.output(flow.add(collect, id="sink", xs=sinks))
    return flow


def check_order(deps: list[list[int]], log: list[tuple[str, int]]) -> None:
    n = len(deps)
    starts = [me for kind, me in log if kind == "start"]
    finishes = [me for kind, me in log if kind == "finish"]
    assert sorted(starts) == list(range(n)), "every step starts exactly once"
    assert sorted(finishes) == list(range(n)), "every step finishes exactly once"
    pos = {entry: k for k, entry in enumerate(log)}
    for i, ds in enumerate(deps):
        for d in ds:
            assert pos[("finish", d)] < pos[("start", i)], f"n{i} started before n{d} finished"


@settings(max_examples=60, deadline=None)
@given(deps=dags(), yields=st.lists(st.integers(0, 3), min_size=1, max_size=5))
def test_every_step_runs_once_after_its_dependencies(deps, yields):
    log: list[tuple[str, int]] = []
    got: dict[int, list[int]] = {}
    result = erpoz.run(build(deps, log, yields, got))
    assert result.ok, result.error
    check_order(deps, log)
    assert got == dict(enumerate(deps))  # each got its dependencies' outputs, in order
    used = {d for ds in deps for d in ds}
    assert result.output == [i for i in range(len(deps)) if i not in used]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deps=dags(max_nodes=12))
def test_every_step_succeeds_once_in_the_sqlite_log(deps):
    log: list[tuple[str, int]] = []
    flow = build(deps, log, [1], {})

    async def go(path: Path):
        store = erpoz.open_store(path)
        try:
            result = await erpoz.Engine(store).run(flow)
            return result, await store.events(result.run_id)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        result, events = asyncio.run(go(Path(tmp) / "runs.db"))
    assert result.ok, result.error
    check_order(deps, log)
    succeeded = [e.step for e in events if e.kind == "step_succeeded"]
    assert sorted(succeeded) == sorted([f"n{i}" for i in range(len(deps))] + ["sink"])
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    seq_of = {e.step: e.seq for e in events if e.kind == "step_succeeded"}
    started = {e.step: e.seq for e in events if e.kind == "step_started"}
    for i, ds in enumerate(deps):
        for d in ds:
            assert seq_of[f"n{d}"] < started[f"n{i}"]
