"""Flows that the client tests' ``erpoz serve`` exposes (named as ``_flows.py:NAME``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from erpoz import Flow, step
from erpoz.flow import Context


@step
def shout(text: str) -> str:
    return " ".join(text.split()).upper()


echo = Flow("echo", inputs={"text": str})
echo.add(shout, text=echo.input("text"))


@step(review=True)
def draft(name: str) -> str:
    return f"Dear {name}, your refund is approved."


@step
def send(body: str) -> str:
    return "sent: " + body


review = Flow("review", inputs={"name": str})
review.add(send, body=review.add(draft, name=review.input("name")))


@step
def first(gate: str) -> str:
    return gate


@step
async def hold(gate: str) -> str:
    """Waits until the file ``gate`` exists (the test creates it when it has seen what it
    needed to see), at most 60 s."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        await asyncio.sleep(0.02)
    return "opened"


@step
def after(state: str) -> str:
    return state + " and done"


gated = Flow("gated", inputs={"gate": str})
gated.add(after, state=gated.add(hold, gate=gated.add(first, gate=gated.input("gate"))))


@step
def explode(text: str) -> str:
    raise ValueError(f"cannot handle {text!r}")


fail = Flow("fail", inputs={"text": str})
fail.add(explode, text=fail.input("text"))


@step
async def tell(topic: str, ctx: Context) -> str:
    """Streams the model's answer (each token reaches callers that follow the run)."""
    parts: list[str] = []
    async for chunk in ctx.models.stream("writer", f"Tell a story about {topic}"):
        if chunk.result is None:
            parts.append(chunk.text)
    return "".join(parts)


@step
def outline(topic: str) -> str:
    return f"a story about {topic}"


story = Flow("story", inputs={"topic": str})
story.add(tell, topic=story.add(outline, topic=story.input("topic")))


@step
async def tell_lc(topic: str, ctx: Context) -> str:
    """The same through a LangChain chat model (``provider: langchain`` in erpoz.yaml)."""
    parts: list[str] = []
    async for chunk in ctx.models.stream("lc-writer", f"Tell a story about {topic}"):
        if chunk.result is None:
            parts.append(chunk.text)
    return "".join(parts)


lcstory = Flow("lcstory", inputs={"topic": str})
lcstory.add(tell_lc, topic=lcstory.input("topic"))
