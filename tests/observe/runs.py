"""Real runs for the observability tests: a real engine, test-double models in a ModelHub
(behind a fallback router), a tool granted by policy, a PII guard, a map, a retry, a review
and a failure."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from erpoz import Context, Engine, Flow, RetryPolicy, step
from erpoz.engine import Listener
from erpoz.errors import ModelError
from erpoz.guards import Check, Guardrails, PIIDetector
from erpoz.models import EmbedResult, ModelHub, ModelSpec, Usage
from erpoz.policy import parse_policy
from erpoz.routing import FallbackRouter
from erpoz.store import Store
from erpoz.testing import FunctionModel, ScriptedModel
from erpoz.tools import ToolRegistry, tool

POLICY = parse_policy("""
rules:
  - {name: invoices may be read, tool: lookup, action: allow}
  - {name: mask e-mail for models, data: pii.email, at: [model_input], action: redact}
""")


@tool
def lookup(invoice: int) -> dict[str, Any]:
    """Look an invoice up."""
    return {"invoice": invoice, "total": 49.0}


class Embedder:
    """An EmbedModel double: a vector of the text's length."""

    name = "vec"

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        return EmbedResult(tuple((float(len(t)),) for t in texts), self.name, Usage(len(texts), 0))


FLAKY: list[int] = []


@step
async def answer(question: str, ctx: Context) -> str:
    found = await ctx.tools.call("lookup", invoice=1042)
    await ctx.models.embed("vec", [question])
    reply = await ctx.models.chat("fb", f"{question} (total {found['total']})")
    return reply.text


@step
def split(text: str) -> list[str]:
    return text.split()[:3]


@step
async def shout(word: str, ctx: Context) -> str:
    return (await ctx.models.chat("mini", word)).text.upper()


@step(retry=RetryPolicy(attempts=2, backoff=0.0))
async def settle(words: list[str]) -> str:
    FLAKY.append(1)
    if len(FLAKY) % 2 == 1:
        raise ConnectionError("upstream hiccup")
    await asyncio.sleep(0.03)
    return " ".join(words)


@step(review=True)
def approve(text: str) -> str:
    return text


@step
async def doomed(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("broken", question)).text


def hub(extra: Sequence[tuple[str, str]] = ()) -> ModelHub:
    """``mini`` answers, ``flaky`` is down, ``fb`` falls back from flaky to mini, ``broken``
    fails for good; ``extra`` adds answering models ``(name, provider)``."""
    h = ModelHub()
    flaky = h.add(
        ScriptedModel([ModelError("down", retryable=True)] * 50, name="flaky"),
        ModelSpec("flaky", "scripted", price_in=1.0, price_out=2.0),
    )
    mini = h.add(
        FunctionModel(lambda r: "ok " + r.messages[-1].text, name="mini"),
        ModelSpec("mini", "function", price_in=0.15, price_out=0.60),
    )
    h.add(FallbackRouter("fb", [flaky, mini]))  # type: ignore[list-item]
    h.add(
        ScriptedModel([ModelError("bad request", status=400)] * 50, name="broken"),
        ModelSpec("broken", "scripted"),
    )
    h.add(Embedder())
    for name, provider in extra:
        h.add(FunctionModel(lambda r: "fine", name=name), ModelSpec(name, provider))
    return h


def services(models: ModelHub | None = None) -> dict[type, object]:
    rails = Guardrails([Check(PIIDetector(), frozenset({"model_input"}))], POLICY)
    return {ModelHub: models or hub(), ToolRegistry: ToolRegistry([lookup]), Guardrails: rails}


def support_flow(review: bool = False) -> Flow:
    flow = Flow("support", inputs={"question": str})
    text = flow.add(answer, question=flow.input("question"))
    words = flow.add(split, text=text)
    shouted = flow.map(shout, over=words, item="word", concurrency=1)
    settled = flow.add(settle, words=shouted)
    if review:
        flow.add(approve, text=settled)
    return flow


def failing_flow() -> Flow:
    flow = Flow("doomed", inputs={"question": str})
    flow.add(doomed, question=flow.input("question"))
    return flow


def engine(
    store: Store, listeners: Sequence[Listener] = (), models: ModelHub | None = None
) -> Engine:
    return Engine(store, services=services(models), listeners=list(listeners))


QUESTION = "Where is my refund? Write to ana@example.com"
