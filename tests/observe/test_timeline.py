"""The step timeline shared by ``erpoz runs show``, the runs API and the demo."""

from __future__ import annotations

import asyncio

from erpoz import Engine, Flow, RetryPolicy, step
from erpoz.engine import top_step as engine_top_step
from erpoz.observe.timeline import step_story, timeline, top_step
from erpoz.store import MemoryStore


def test_top_step_is_the_engines() -> None:
    for sid in ("answer", "answer[3]", "revise#2", "sub/inner", "sub/inner[2]", "a[1]/b#3", ""):
        assert top_step(sid) == engine_top_step(sid), sid


@step
def double(x: int) -> int:
    return 2 * x


@step
def boom(x: list[int]) -> int:
    raise ValueError(f"no {x}")


def test_a_run_s_timeline_and_story() -> None:
    flow = Flow("t", inputs={"xs": list[int]})
    doubled = flow.map(double, over=flow.input("xs"), item="x")
    flow.add(boom, id="fails", x=doubled, retry=RetryPolicy(attempts=2, backoff=0))
    flow.output(doubled)

    async def go() -> list[object]:
        st = MemoryStore()
        engine = Engine(st)
        result = await engine.run(flow, {"xs": [1, 2]})
        assert result.status == "failed"
        return list(await st.events(result.run_id))

    events = asyncio.run(go())
    rows = {r["step"]: r for r in timeline(events)}  # type: ignore[arg-type]
    assert rows["double[0]"]["top"] == "double" and rows["double[1]"]["status"] == "succeeded"
    assert rows["fails"]["status"] == "failed" and rows["fails"]["attempts"] == 2
    assert "no [2, 4]" in str(rows["fails"]["error"])
    assert rows["fails"]["ms"] is not None and rows["fails"]["ended"] >= rows["fails"]["started"]
    story = {r["step"]: r for r in step_story(events)}
    assert story["fails"]["status"] == "failed" and story["fails"]["notes"]
