"""The Ray executor against a real local Ray (``ray.init`` on this machine, started once for
the module): where steps run, resources, retries, timeouts, crashes, emitted events, workers.

Every assertion about *where* a step ran compares process ids: a step that Ray ran reports a
Ray worker's pid, a step that stayed in the orchestrator reports this test's pid.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'erpoz[ray]')")

from erpoz import Context, Engine, Flow, RetryPolicy, open_store, step  # noqa: E402
from erpoz.audit import verify  # noqa: E402
from erpoz.engine import RayExecutor, Worker  # noqa: E402
from erpoz.errors import ResourcesUnavailable  # noqa: E402
from erpoz.flow import Resources  # noqa: E402

ME = os.getpid()


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    ex = RayExecutor(num_cpus=2)
    ex.nodes()  # start Ray once for the module
    yield ex
    ex.shutdown()


def run(engine: Engine, flow: Flow, **inputs: Any) -> Any:
    return asyncio.run(engine.run(flow, inputs))


# --- steps (module level: Ray workers import them from here) ---------------------------------
@step
def where(x: int) -> dict[str, int]:
    return {"x": x, "pid": os.getpid()}


@step
def here_too(seen: dict[str, int], ctx: Context) -> dict[str, int]:
    ctx.emit("noted", {"remote_pid": seen["pid"]})
    return {"x": seen["x"], "pid": os.getpid(), "remote_pid": seen["pid"]}


def test_pure_steps_run_on_ray_and_ctx_steps_stay_here(executor: RayExecutor) -> None:
    flow = Flow("placement", inputs={"x": int})
    flow.add(here_too, seen=flow.add(where, x=flow.input("x")))
    store = open_store("memory")
    result = run(Engine(store, executor=executor), flow, x=4)
    assert result.ok, result.error
    out = result.output
    assert out["remote_pid"] != ME and out["pid"] == ME and out["x"] == 4
    events = asyncio.run(store.events(result.run_id))
    assert [e.kind for e in events if e.step == "here_too"] == [
        "step_started",
        "noted",
        "step_succeeded",
    ]
    assert asyncio.run(verify(store)).ok


@step
def square(n: int) -> int:
    return n * n


@step
def numbers(n: int) -> list[int]:
    return list(range(n))


@step
def total(parts: list[int]) -> int:
    return sum(parts)


def test_a_fan_out_runs_on_ray_with_results_in_order(executor: RayExecutor) -> None:
    flow = Flow("fan", inputs={"n": int})
    squares = flow.map(square, over=flow.add(numbers, n=flow.input("n")), item="n", concurrency=8)
    flow.add(total, parts=squares)
    result = run(Engine(open_store("memory"), executor=executor), flow, n=30)
    assert result.ok, result.error
    assert result.output == sum(i * i for i in range(30))


@step(resources={"cpus": 64})
def greedy(x: int) -> int:
    return x


def test_a_step_that_needs_more_than_the_cluster_has_fails_at_once(
    executor: RayExecutor,
) -> None:
    flow = Flow("greedy", inputs={"x": int})
    flow.add(greedy, x=flow.input("x"), retry=RetryPolicy(attempts=3, backoff=0))
    store = open_store("memory")
    t0 = time.monotonic()
    result = run(Engine(store, executor=executor), flow, x=1)
    assert result.status == "failed" and result.failed_step == "greedy"
    assert "ResourcesUnavailable" in (result.error or "") and "64 CPU" in (result.error or "")
    assert "2 CPU" in (result.error or "")  # what the cluster does have
    kinds = [e.kind for e in asyncio.run(store.events(result.run_id))]
    assert kinds.count("step_started") == 1  # never retried: waiting would never end
    assert time.monotonic() - t0 < 60  # it did not hang (Ray would keep it pending forever)
    with pytest.raises(ResourcesUnavailable):
        executor.check(Resources(gpus=1))


@step(resources={"cpus": 1, "memory": "64MiB"})
async def async_with_resources(x: int, ctx: Context) -> int:
    ctx.emit("progress", {"half": True})
    await asyncio.sleep(0.01)
    return os.getpid()


@step(resources={"cpus": 1})
def wants_models(x: int, ctx: Context) -> str:
    return str(ctx.models)


def test_a_step_with_resources_gets_a_remote_context(executor: RayExecutor) -> None:
    flow = Flow("remote-ctx", inputs={"x": int})
    flow.add(async_with_resources, x=flow.input("x"))
    store = open_store("memory")
    result = run(Engine(store, executor=executor), flow, x=1)
    assert result.ok, result.error
    assert result.output != ME  # even an async step goes to Ray when it declares resources
    events = asyncio.run(store.events(result.run_id))
    progress = [e for e in events if e.kind == "progress"]
    assert len(progress) == 1 and progress[0].step == "async_with_resources"
    assert progress[0].data == {"half": True}

    flow2 = Flow("remote-models", inputs={"x": int})
    flow2.add(wants_models, x=flow2.input("x"))
    failed = run(Engine(open_store("memory"), executor=executor), flow2, x=1)
    assert failed.status == "failed"
    assert "ctx.models is not available in step 'wants_models'" in (failed.error or "")


@step
def flaky(x: int, marker: str) -> int:
    if not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise ValueError("first attempt fails")
    return x + 1


@step
def dies_once(x: int, marker: str) -> int:
    if not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(3)  # the Ray worker process dies
    return x + 2


@step
def sleeper(x: int) -> int:
    time.sleep(30)
    return x


def test_retries_and_timeouts_keep_their_meaning_on_ray(
    executor: RayExecutor, tmp_path: Path
) -> None:
    engine = Engine(open_store("memory"), executor=executor)
    flow = Flow("flaky", inputs={"x": int, "marker": str})
    flow.add(
        flaky,
        x=flow.input("x"),
        marker=flow.input("marker"),
        retry=RetryPolicy(attempts=2, backoff=0, retry_on=(ValueError,)),
    )
    result = run(engine, flow, x=1, marker=str(tmp_path / "flaky"))
    assert result.ok and result.output == 2  # retry_on saw the step's own ValueError
    kinds = [e.kind for e in asyncio.run(engine.store.events(result.run_id))]
    assert kinds.count("step_retried") == 1

    crash = Flow("crash", inputs={"x": int, "marker": str})
    crash.add(
        dies_once,
        x=crash.input("x"),
        marker=crash.input("marker"),
        retry=RetryPolicy(attempts=2, backoff=0),
    )
    result = run(engine, crash, x=1, marker=str(tmp_path / "crash"))
    assert result.ok and result.output == 3
    events = asyncio.run(engine.store.events(result.run_id))
    retried = [e for e in events if e.kind == "step_retried"]
    assert len(retried) == 1 and "ExecutorError" in retried[0].data["error"]

    slow = Flow("slow", inputs={"x": int})
    slow.add(sleeper, x=slow.input("x"), timeout=1.0)
    t0 = time.monotonic()
    result = run(engine, slow, x=1)
    assert result.status == "failed" and "timed out after 1.0 s" in (result.error or "")
    assert time.monotonic() - t0 < 20  # the 30 s task was cancelled, not waited for


def test_workers_drive_queued_runs_on_ray(executor: RayExecutor, tmp_path: Path) -> None:
    from erpoz.flow._load import load_flow

    chain = load_flow(f"{Path(__file__).parent / 'queue_flows.py'}:chain5")
    flow = Flow("placed", inputs={"x": int}, source=f"{__file__}:placed_flow")
    del flow  # the queued runs need a loadable source: the module-level flow below

    async def main() -> None:
        store = open_store(tmp_path / "runs.db")
        engine = Engine(store, executor=executor)
        ids = [await engine.submit(placed_flow, {"x": i}) for i in range(6)]
        ids += [await engine.submit(chain, {"x": 0})]
        stats = await Worker(engine, burst=True, poll_s=0.05).run()
        assert stats.succeeded == 7
        outs = [(await store.get_run(r)).output for r in ids]  # type: ignore[union-attr]
        assert outs[-1] == "5"
        assert all('"pid"' in (o or "") for o in outs[:-1])
        assert (await verify(store)).ok
        await store.close()

    asyncio.run(main())


placed_flow = Flow("placed", inputs={"x": int}, source=f"{__file__}:placed_flow")
placed_flow.add(where, x=placed_flow.input("x"))
