"""An erpoz serve flow as a LangChain Runnable (through erpoz.client), and a LangChain chat
model configured in the server's erpoz.yaml (``provider: langchain``), streaming."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")

from erpoz import RunResult, StepFailed
from erpoz.client import AsyncClient, Client
from erpoz.errors import ErpozError, WaitingForReview
from erpoz.integrations.langchain import as_runnable

from .conftest import KEY, Served

pytestmark = pytest.mark.slow


def test_invoke_batch_and_review_through_the_server(served: Served) -> None:
    with Client(served.url, api_key=KEY) as c:
        r = as_runnable("echo", client=c)
        assert r.invoke(" a  b ") == "A B"
        assert r.batch(["x", {"text": "y"}]) == ["X", "Y"]
        assert asyncio.run(r.ainvoke("z")) == "Z"  # a sync client, in a worker thread
        with pytest.raises(WaitingForReview) as waiting:
            as_runnable("review", client=c).invoke("Ann")
        assert c.get(waiting.value.run_id).status == "waiting"
        with pytest.raises(StepFailed) as failed:
            as_runnable("fail", client=c).invoke("x")
        assert failed.value.step == "explode"
        full = as_runnable("echo", client=c, full_result=True).invoke("q")
        assert isinstance(full, RunResult) and full.output == "Q"
        tags = c.events(full.run_id).events[0].data
        assert tags is not None and tags["tags"]["via"] == "langchain"


def test_stream_a_langchain_model_configured_in_the_server(served: Served) -> None:
    """lcstory's step streams from ``provider: langchain`` (ChatOpenAI → the stub): the
    tokens cross the model, the engine, the server, the client and the runnable."""
    with Client(served.url, api_key=KEY) as c:
        r = as_runnable("lcstory", client=c)
        pieces = list(r.stream("owls"))
        assert len(pieces) > 3
        assert "".join(pieces) == "echo: Tell a story about owls"
        [run] = [x for x in c.runs(flow="lcstory") if x.inputs == {"topic": "owls"}]
        called = [e for e in c.events(run.run_id).events if e.kind == "model_called"]
        assert called[0].data is not None and called[0].data["provider"] == "langchain"


def test_an_async_client_runnable(served: Served) -> None:
    async def main() -> tuple[str, list[str]]:
        async with AsyncClient(served.url, api_key=KEY) as c:
            r = as_runnable("story", client=c)
            out = await r.ainvoke("tea")
            pieces = [p async for p in r.astream("tea")]
            with pytest.raises(ErpozError, match="made with an AsyncClient"):
                r.invoke("tea")
            return out, pieces

    out, pieces = asyncio.run(main())
    assert out == "echo: Tell a story about a story about tea" == "".join(pieces)
    assert len(pieces) > 3
