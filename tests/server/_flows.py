"""Small flows the server tests expose (importable as ``tests/server/_flows.py:NAME``, which
is how the subprocess test names them to ``erpoz serve``)."""

from __future__ import annotations

import asyncio

from erpoz import Flow, step
from erpoz.flow import Context


@step
def clean(text: str) -> str:
    return " ".join(text.split())


@step
def shout(text: str, times: int) -> str:
    return " ".join([text.upper()] * times)


echo = Flow("echo", inputs={"text": str, "times": int}, defaults={"times": 1})
echo.add(shout, text=echo.add(clean, text=echo.input("text")), times=echo.input("times"))


@step(review=True)
def draft(name: str) -> str:
    return f"Dear {name}, your refund is approved."


@step
def send(body: str) -> str:
    return "sent: " + body


review = Flow("review", inputs={"name": str})
review.add(send, body=review.add(draft, name=review.input("name")))


@step
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@step
def after_nap(seconds: float) -> str:
    return f"slept {seconds}"


slow = Flow("slow", inputs={"seconds": float})
slow.add(after_nap, seconds=slow.add(nap, seconds=slow.input("seconds")))


@step
def explode(text: str) -> str:
    raise ValueError(f"cannot handle {text!r}")


fail = Flow("fail", inputs={"text": str})
fail.add(explode, text=fail.input("text"))


@step
async def ask_model(question: str, ctx: Context) -> str:
    result = await ctx.models.chat("echo-model", question)
    return result.text


ask = Flow("ask", inputs={"question": str})
ask.add(ask_model, question=ask.input("question"))

ALL = (echo, review, slow, fail, ask)
