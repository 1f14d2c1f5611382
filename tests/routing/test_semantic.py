"""The semantic router: in a flow with the real MiniLM, and its logic with an offline embedder."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import erpoz
from erpoz import Engine
from erpoz.errors import ConfigError, ModelError
from erpoz.models import ChatModel, ChatRequest, Message, ModelHub, ModelSpec
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.models.local_embed import MiniLMEmbed
from erpoz.routing.semantic import SemanticRouter
from erpoz.store import MemoryStore
from erpoz.testing import FunctionModel
from models.local_fixtures import WordsEmbed, minilm


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbed:
    return minilm()


BILLING = [
    "I was charged twice for my subscription",
    "How do I get a refund for my invoice?",
    "Update the credit card on my account",
    "Why is my bill higher this month?",
]
CODE = [
    "My Python script raises a KeyError",
    "How do I fix a segmentation fault in C?",
    "The build fails with a compiler error",
    "Write a function that reverses a linked list",
]


def test_in_a_flow_billing_and_code_questions_go_to_their_routes(embedder: MiniLMEmbed) -> None:
    hub = ModelHub()
    billing = hub.add(
        FunctionModel(lambda r: "billing answer", name="billing-bot"),
        ModelSpec("billing-bot", "test", price_in=1.0, price_out=2.0),
    )
    code = hub.add(
        FunctionModel(lambda r: "code answer", name="code-bot"),
        ModelSpec("code-bot", "test"),
    )
    assert isinstance(billing, ChatModel) and isinstance(code, ChatModel)
    hub.add(
        SemanticRouter("support", embedder, {"billing": (billing, BILLING), "code": (code, CODE)})
    )

    async def answer(question: str, ctx: erpoz.Context) -> list[str]:
        result = await ctx.models.chat("support", question)
        return [result.text, result.model, *result.route]

    flow = erpoz.Flow("support", inputs={"question": str})
    flow.output(flow.add(answer, question=flow.input("question")))

    async def scenario() -> list[tuple[Any, list[Any]]]:
        store = MemoryStore()
        engine = Engine(store, services={ModelHub: hub})
        out = []
        for question in (
            "My card was billed two times for the same order, can I get my money back?",
            "Getting TypeError: 'NoneType' object is not subscriptable in my Python code",
        ):
            result = await engine.run(flow, {"question": question})
            out.append((result.unwrap(), await store.events(result.run_id)))
        await store.close()
        return out

    (billing_out, billing_events), (code_out, code_events) = run(scenario())
    assert billing_out == ["billing answer", "billing-bot", "support"]
    assert code_out == ["code answer", "code-bot", "support"]

    for events, winner, model in (
        (billing_events, "billing", "billing-bot"),
        (code_events, "code", "code-bot"),
    ):
        (decision,) = [e.data for e in events if e.kind == "route_decided"]
        assert decision["router"] == "support" and decision["kind"] == "semantic"
        assert decision["winner"] == winner and decision["model"] == model
        assert decision["candidates"][0]["route"] == winner
        assert {c["model"] for c in decision["candidates"]} == {"billing-bot", "code-bot"}
        assert decision["candidates"][0]["score"] > decision["candidates"][1]["score"]
        assert winner in decision["reason"]
        (called,) = [e.data for e in events if e.kind == "model_called"]
        assert called["model"] == model and called["status"] == "ok"
        kinds = [e.kind for e in events]
        assert kinds.index("route_decided") < kinds.index("model_called")


# --- the logic, with an offline embedder ---------------------------------------------------------
def echo(name: str) -> FunctionModel:
    return FunctionModel(lambda r: f"{name}: {r.messages[-1].text}", name=name)


def router(**options: Any) -> tuple[SemanticRouter, WordsEmbed]:
    words = WordsEmbed()
    routes = {
        "fruit": (echo("fruit-bot"), ["apple banana", "ripe banana bread", "apple pie"]),
        "cars": (echo("car-bot"), ["fast red car", "car engine oil", "electric car battery"]),
    }
    return SemanticRouter("topics", words, routes, **options), words


def decide(r: SemanticRouter, text: str | ChatRequest) -> tuple[Any, list[dict[str, Any]]]:
    """Generate through the router with a recorder bound; returns the result and events."""
    events: list[dict[str, Any]] = []
    request = text if isinstance(text, ChatRequest) else ChatRequest((Message.user(text),))

    async def go() -> Any:
        token = bind(Recorder(lambda kind, data: events.append({"kind": kind, **data})))
        try:
            return await r.generate(request)
        finally:
            unbind(token)

    return run(go()), events


def test_examples_are_embedded_once_and_the_prompt_once_per_request() -> None:
    r, words = router()
    for _ in range(3):
        result, _ = decide(r, "banana please")
        assert result.model == "fruit-bot" and result.route == ("topics",)
    assert len(words.calls) == 1 + 3
    assert len(words.calls[0]) == 6  # all examples, in one call


def test_the_last_user_message_is_what_gets_routed() -> None:
    r, _ = router()
    request = ChatRequest(
        (
            Message.system("You are a helpful assistant about apple banana pie."),
            Message.user("an apple"),
            Message.assistant("noted"),
            Message.user("my car engine makes noise"),
        )
    )
    result, _ = decide(r, request)
    assert result.model == "car-bot"


def test_below_min_score_the_default_route_answers() -> None:
    r, _ = router(default="fruit", min_score=0.5)
    result, events = decide(r, "quantum chromodynamics")
    assert result.model == "fruit-bot"
    (event,) = events
    assert event["winner"] == "fruit" and "default" in event["reason"]

    other = echo("fallback-bot")
    r2, _ = router(default=other, min_score=0.5)
    result, events = decide(r2, "quantum chromodynamics")
    assert result.model == "fallback-bot"
    assert events[0]["winner"] == "default" and events[0]["model"] == "fallback-bot"
    assert events[0]["candidates"][-1] == {
        "route": "default",
        "model": "fallback-bot",
        "score": None,
    }
    assert other in r2.models


def test_below_min_score_without_a_default_it_fails_and_says_why() -> None:
    r, _ = router(min_score=0.5)
    with pytest.raises(ModelError, match=r"no route reached min_score 0\.5") as info:
        decide(r, "quantum chromodynamics")
    assert info.value.model == "topics"


def test_top3_scoring_averages_a_routes_best_three_examples() -> None:
    words = WordsEmbed()
    routes = {
        # one example matches exactly, the rest not at all
        "one-hit": (echo("a"), ["zebra stripes", "x", "y", "z"]),
        # three examples each share a word with the prompt
        "steady": (echo("b"), ["zebra", "stripes pattern", "zebra stripes pattern thing"]),
    }
    best = SemanticRouter("r", words, routes)
    steady = SemanticRouter("r", words, routes, scoring="top3")
    assert decide(best, "zebra stripes")[0].model == "a"
    assert decide(steady, "zebra stripes")[0].model == "b"


def test_streaming_goes_through_the_chosen_route() -> None:
    r, _ = router()

    async def go() -> list[Any]:
        request = ChatRequest((Message.user("electric car"),))
        return [c async for c in r.stream(request)]

    chunks = run(go())
    final = chunks[-1].result
    assert final is not None and final.model == "car-bot" and final.route == ("topics",)


def test_outside_a_run_nothing_is_recorded_and_choose_explains() -> None:
    r, _ = router()
    match = run(r.choose(ChatRequest((Message.user("apple"),))))
    assert match.route == "fruit" and match.model.name == "fruit-bot"
    assert match.score is not None and match.score > match.scores["cars"]
    assert "fruit" in match.reason


@pytest.mark.parametrize(
    ("routes", "options", "problem"),
    [
        ({}, {}, "at least one route"),
        ({"a": (echo("a"), [])}, {}, "example prompts"),
        ({"a": (echo("a"), "one string")}, {}, "example prompts"),
        ({"a": (object(), ["x"])}, {}, "chat model"),
        ({"a": (echo("a"), ["x"])}, {"default": "nope"}, "default route 'nope'"),
        ({"a": (echo("a"), ["x"])}, {"scoring": "mean"}, "scoring"),
        ({"default": (echo("a"), ["x"])}, {"default": echo("b")}, "already called 'default'"),
    ],
)
def test_a_misconfigured_router_is_refused_when_built(
    routes: dict[str, Any], options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        SemanticRouter("r", WordsEmbed(), routes, **options)


def test_the_embedder_must_embed() -> None:
    with pytest.raises(ConfigError, match="embedding model"):
        SemanticRouter("r", echo("not-an-embedder"), {"a": (echo("a"), ["x"])})  # type: ignore[arg-type]
