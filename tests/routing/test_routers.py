"""Routers as steps use them: each decision recorded as ``route_decided`` in the run, each
underlying call metered once; fallback with cool-down, cheapest-capable filtering, cascade
escalation, load balancing. All offline: the models are ``erpoz.testing`` doubles."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.errors import ConfigError, ModelError
from erpoz.models import (
    Budget,
    ChatModel,
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    Metered,
    ModelHub,
    ModelSpec,
    StreamChunk,
)
from erpoz.routing import (
    CascadeRouter,
    CheapestCapableRouter,
    FallbackRouter,
    LoadBalanceRouter,
    Verdict,
)
from erpoz.routing._decision import Member
from erpoz.store import Event, MemoryStore
from erpoz.testing import FunctionModel, ScriptedModel


# --- helpers ------------------------------------------------------------------------------------
def spec(name: str, price: float = 1.0, **kw: Any) -> ModelSpec:
    return ModelSpec(name, "test", price_in=price, price_out=2 * price, **kw)


def metered(name: str, reply: Any = "ok", price: float = 1.0, **kw: Any) -> Metered:
    """A metered double answering ``reply`` (text, a function of the request, or a list)."""
    if isinstance(reply, list):
        inner: ChatModel = ScriptedModel(reply, name=name)
    elif callable(reply):
        inner = FunctionModel(reply, name=name)
    else:
        inner = FunctionModel(lambda r: reply, name=name)
    return Metered(inner, spec(name, price, **kw))


def calls(model: Metered) -> int:
    inner: Any = model.inner
    return len(inner.calls)


def request(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest((Message.user(text),), **kw)


def down(status: int = 503) -> ModelError:
    return ModelError(f"upstream {status}", retryable=status >= 500 or status == 429, status=status)


def generate(model: ChatModel, req: ChatRequest | None = None) -> ChatResult:
    return asyncio.run(model.generate(req or request()))


class Clock:
    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@step
async def ask(q: str, ctx: Context) -> dict[str, Any]:
    r = await ctx.models.chat("router", q)
    return {"text": r.text, "model": r.model, "route": list(r.route)}


def run_router(router: ChatModel, q: str = "hello", budget: Budget | None = None) -> Any:
    """Run ``ask`` through ``router`` (registered as "router") in a one-step flow; returns the
    run's result and its events."""
    hub = ModelHub(budget=budget)
    hub.add(router)
    flow = Flow("routed", inputs={"q": str})
    flow.output(flow.add(ask, q=flow.input("q")))

    async def main() -> tuple[Any, list[Event]]:
        store = MemoryStore()
        result = await Engine(store, services={ModelHub: hub}).run(flow, {"q": q})
        return result, await store.events(result.run_id)

    return asyncio.run(main())


def decisions(events: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == "route_decided"]


def called(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.data["model"], e.data["status"]) for e in events if e.kind == "model_called"]


def by_model(decision: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["model"]: c for c in decision["candidates"]}


# --- fallback -----------------------------------------------------------------------------------
def test_fallback_first_choice_answers_and_the_decision_is_recorded_in_the_run() -> None:
    a, b = metered("a", "from a"), metered("b", "from b", price=5.0)
    result, events = run_router(FallbackRouter("router", [a, b]))
    assert result.output == {"text": "from a", "model": "a", "route": ["router"]}
    assert calls(b) == 0
    (d,) = decisions(events)
    assert d["router"] == "router" and d["kind"] == "fallback" and d["winner"] == "a"
    assert d["reason"] == "first choice a answered"
    assert [c["model"] for c in d["candidates"]] == ["a", "b"]
    assert by_model(d)["a"]["status"] == "answered"
    assert by_model(d)["b"]["status"] == "not_tried"
    assert by_model(d)["b"]["estimate_usd"] > by_model(d)["a"]["estimate_usd"] > 0
    # the underlying call is recorded once, by the metered model, in the same step
    assert called(events) == [("a", "ok")]
    assert {e.step for e in events if e.kind in ("route_decided", "model_called")} == {"ask"}


def test_fallback_moves_on_and_cools_the_failing_model_down() -> None:
    clock = Clock()
    a, b = metered("a", [down(503), "a again"]), metered("b", ["b1", "b2", "b3"])
    router = FallbackRouter("router", [a, b], cooldown_s=30, clock=clock)
    result, events = run_router(router)
    assert result.output["text"] == "b1"
    assert called(events) == [("a", "error"), ("b", "ok")]
    (d,) = decisions(events)
    assert d["winner"] == "b" and "a failed (retryable)" in d["reason"]
    assert by_model(d)["a"]["status"] == "failed" and by_model(d)["a"]["retryable"] is True
    assert "upstream 503" in by_model(d)["a"]["error"]
    assert router.cooling() == ["a"]

    clock.now += 10  # still cooling: a is skipped
    result, events = run_router(router)
    assert result.output["text"] == "b2" and calls(a) == 1
    (d,) = decisions(events)
    assert by_model(d)["a"]["status"] == "cooling"
    assert "skipped a (cooling down)" in d["reason"]

    clock.now += 25  # cool-down over: a is first choice again
    result, _ = run_router(router)
    assert result.output["text"] == "a again" and router.cooling() == []


def test_a_non_retryable_error_falls_through_but_says_so_and_does_not_cool_down() -> None:
    a, b = metered("a", [down(400), "a fine"]), metered("b", "b fine")
    router = FallbackRouter("router", [a, b])
    result, events = run_router(router)
    assert result.output["text"] == "b fine"
    (d,) = decisions(events)
    assert "a failed with a non-retryable error (status 400), fell through anyway" in d["reason"]
    assert by_model(d)["a"]["retryable"] is False
    assert router.cooling() == []  # the request was at fault, not the model
    assert generate(router).text == "a fine"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_model_at_fault_cools_down_even_when_not_retryable(status: int) -> None:
    router = FallbackRouter("r", [metered("a", [down(status)]), metered("b", "b")])
    assert generate(router).text == "b"
    assert router.cooling() == ["a"]


def test_a_timeout_falls_through_and_cools_down() -> None:
    def slow(r: ChatRequest) -> str:
        raise TimeoutError("read timed out")

    router = FallbackRouter("r", [metered("a", slow), metered("b", "b")])
    assert generate(router).text == "b"
    assert router.cooling() == ["a"]


def test_budget_exceeded_does_not_fall_through_to_other_models() -> None:
    pricey = metered("pricey", "expensive", price=1000.0)
    cheap = metered("cheap", "cheap", price=0.0)
    result, events = run_router(
        FallbackRouter("router", [pricey, cheap]), budget=Budget(per_run_usd=0.01)
    )
    assert result.status == "failed" and "BudgetExceeded" in (result.error or "")
    assert calls(pricey) == 0 and calls(cheap) == 0  # refused before sending; no fallback
    (d,) = decisions(events)
    assert d["winner"] is None and "not falling through" in d["reason"]
    assert by_model(d)["pricey"]["status"] == "budget_exceeded"
    assert by_model(d)["cheap"]["status"] == "not_tried"


def test_when_all_fail_the_error_lists_each_and_is_retryable_if_any_was() -> None:
    router = FallbackRouter("r", [metered("a", [down(400)]), metered("b", [down(503)])])
    with pytest.raises(ModelError) as info:
        generate(router)
    err = info.value
    assert err.retryable is True and err.model == "r"
    assert "all 2 models failed" in str(err)
    assert "upstream 400" in str(err) and "upstream 503" in str(err)

    router = FallbackRouter("r", [metered("a", [down(400)]), metered("b", [down(422)])])
    with pytest.raises(ModelError) as info:
        generate(router)
    assert info.value.retryable is False


def test_when_all_are_cooling_the_least_recently_failed_is_tried_first() -> None:
    clock = Clock(step=1.0)  # every reading is a second later
    a = metered("a", [down(), down(), "a back"])
    b = metered("b", ["b1", down(), "b back"])
    c = metered("c", [down(), "c back"])
    router = FallbackRouter("r", [a, b, c], cooldown_s=60, clock=clock)
    assert generate(router).text == "b1"  # a fails first
    with pytest.raises(ModelError):
        generate(router)  # then b, c, and a (asked last, as it cools) fail in that order
    assert sorted(router.cooling()) == ["a", "b", "c"]
    assert generate(router).text == "b back"  # b failed longest ago
    assert (calls(a), calls(b), calls(c)) == (2, 3, 1)


def test_a_cooling_model_is_the_last_resort_when_the_others_fail() -> None:
    clock = Clock()
    a, b = metered("a", [down(), "a back"]), metered("b", ["b1", down()])
    router = FallbackRouter("r", [a, b], cooldown_s=60, clock=clock)
    assert generate(router).text == "b1"  # a fails and cools down
    assert generate(router).text == "a back"  # b fails now; a, though cooling, is asked
    assert router.cooling() == ["b"]


class _Breaks:
    """Streams ``before`` chunks, then fails."""

    def __init__(self, name: str, before: int) -> None:
        self.name = name
        self.before = before

    async def generate(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        for i in range(self.before):
            yield StreamChunk(f"part{i} ")
        raise ModelError("connection reset", model=self.name, retryable=True)


async def _collect(chunks: AsyncIterator[StreamChunk]) -> tuple[str, ChatResult | None]:
    text, final = "", None
    async for c in chunks:
        if c.result is not None:
            final = c.result
        else:
            text += c.text
    return text, final


def test_streaming_falls_back_before_the_first_chunk_only() -> None:
    b = metered("b", "streamed from b")
    router = FallbackRouter("r", [Metered(_Breaks("a", 0), spec("a")), b])
    text, final = asyncio.run(_collect(router.stream(request())))
    assert text.strip() == "streamed from b"
    assert final is not None and final.route == ("r",) and final.model == "b"
    assert router.cooling() == ["a"]

    late = FallbackRouter("r", [Metered(_Breaks("a", 2), spec("a")), metered("b", "unused")])
    with pytest.raises(ModelError, match="connection reset"):
        asyncio.run(_collect(late.stream(request())))
    assert late.cooling() == ["a"]


def test_routers_nest_and_the_route_names_each_router() -> None:
    inner = CheapestCapableRouter("inner", [metered("x", "from x", price=2), metered("y", "y")])
    outer = FallbackRouter("router", [inner, metered("z", "z")])
    result, events = run_router(outer)
    assert result.output == {"text": "y", "model": "y", "route": ["router", "inner"]}
    assert [d["router"] for d in decisions(events)] == ["inner", "router"]
    # a router's estimate is what its pick would cost
    assert outer.estimate(request()) == pytest.approx(metered("y", price=1).estimate(request()))


def test_a_router_needs_models_and_distinct_names() -> None:
    with pytest.raises(ConfigError, match="at least one model"):
        FallbackRouter("r", [])
    with pytest.raises(ConfigError, match="lists model 'a' twice"):
        FallbackRouter("r", [metered("a"), metered("a")])


# --- cheapest capable ---------------------------------------------------------------------------
def test_cheapest_picks_the_lowest_expected_cost() -> None:
    models = [metered("mid", "mid", 2.0), metered("low", "low", 0.5), metered("high", "hi", 9)]
    result, events = run_router(CheapestCapableRouter("router", models))
    assert result.output["text"] == "low"
    (d,) = decisions(events)
    assert d["kind"] == "cheapest" and d["winner"] == "low"
    costs = {c["model"]: c["estimate_usd"] for c in d["candidates"]}
    assert costs["low"] < costs["mid"] < costs["high"]
    assert costs["low"] == pytest.approx(models[1].estimate(request()))
    assert "cheapest of 3 capable" in d["reason"]


def test_the_router_estimate_is_the_metered_estimate() -> None:
    m = metered("m", price=3.7)
    for req in (request("x" * 999), request("y", max_tokens=7)):
        tokens = len(req.prompt_text) // 4 + 1
        assert Member(m).cost(req, tokens) == pytest.approx(m.estimate(req))
        assert Member(m).cost(req) == m.estimate(req)


def test_cheapest_filters_by_modality_context_window_and_tags() -> None:
    text_only = metered("text-only", "t", 0.1)
    small = metered("small", "s", 0.2, modalities=frozenset({"text", "image"}), context_window=50)
    vision = metered(
        "vision",
        "v",
        5.0,
        modalities=frozenset({"text", "image"}),
        tags=frozenset({"json", "vision"}),
    )
    router = CheapestCapableRouter("router", [text_only, small, vision])
    picture = ChatRequest((Message.user("what is this?", ImagePart(data=b"png")),))
    assert generate(router, picture).text == "s"  # the cheapest that takes images
    long_picture = ChatRequest((Message.user("word " * 100, ImagePart(data=b"png")),))
    assert generate(router, long_picture).text == "v"
    assert generate(router, request("q", tags=frozenset({"json"}))).text == "v"
    assert generate(router, request("q", max_tokens=60)).text == "t"
    assert calls(small) == 1


def test_cheapest_records_why_each_model_was_excluded() -> None:
    small = metered("small", "s", 0.1, context_window=10)
    tagged = metered("tagged", "t", 1.0, tags=frozenset({"json"}), context_window=10_000)
    _, events = run_router(CheapestCapableRouter("router", [small, tagged]), q="word " * 40)
    (d,) = decisions(events)
    assert d["winner"] == "tagged" and "1 excluded" in d["reason"]
    assert "context window (10)" in by_model(d)["small"]["excluded"]


def test_nothing_capable_is_a_model_error_naming_why_each_was_excluded() -> None:
    router = CheapestCapableRouter(
        "router",
        [
            metered("a", context_window=5),
            metered("b", tags=frozenset({"code"})),
        ],
    )
    req = request("a long enough prompt for a tiny window", tags=frozenset({"legal"}))
    with pytest.raises(ModelError) as info:
        generate(router, req)
    msg = str(info.value)
    assert "no model can take this request" in msg
    assert "a: the prompt (~10 tokens) does not fit its context window (5)" in msg
    assert "b: lacks required tag(s) legal" in msg
    tiny = CheapestCapableRouter("router", [metered("a", context_window=5)])
    result, events = run_router(tiny, q="x" * 100)
    assert result.status == "failed" and "no model can take" in (result.error or "")
    (d,) = decisions(events)
    assert d["winner"] is None and "excluded" in d["candidates"][0]


def test_cheapest_streams_from_its_pick() -> None:
    router = CheapestCapableRouter("r", [metered("a", "alpha beta", 3), metered("b", "b", 4)])
    text, final = asyncio.run(_collect(router.stream(request())))
    assert text.strip() == "alpha beta" and final is not None and final.route == ("r",)


# --- cascade ------------------------------------------------------------------------------------
def test_cascade_keeps_the_cheap_answer_when_validators_accept() -> None:
    cheap, strong = metered("cheap", "good enough", 0.1), metered("strong", "best", 10)
    router = CascadeRouter("router", [cheap, strong], [lambda req, res: True])
    result, events = run_router(router)
    assert result.output["text"] == "good enough" and calls(strong) == 0
    (d,) = decisions(events)
    assert d["kind"] == "cascade" and d["winner"] == "cheap"
    assert by_model(d)["cheap"]["status"] == "accepted"
    assert by_model(d)["strong"]["status"] == "not_tried"
    assert by_model(d)["strong"]["estimate_usd"] > by_model(d)["cheap"]["estimate_usd"]


def test_cascade_escalates_when_a_validator_rejects_and_says_which_and_why() -> None:
    def cites(req: ChatRequest, res: ChatResult) -> Verdict:
        ok = "[1]" in res.text
        return Verdict(ok, 1.0 if ok else 0.0, "" if ok else "no citation")

    def not_empty(req: ChatRequest, res: ChatResult) -> bool:
        return bool(res.text)

    cheap, strong = metered("cheap", "a guess", 0.1), metered("strong", "a fact [1]", 10)
    router = CascadeRouter("router", [cheap, strong], [not_empty, cites])
    result, events = run_router(router)
    assert result.output["text"] == "a fact [1]"
    assert called(events) == [("cheap", "ok"), ("strong", "ok")]
    (d,) = decisions(events)
    assert d["winner"] == "strong"
    rejected = by_model(d)["cheap"]
    assert rejected["status"] == "rejected"
    assert rejected["validator"].endswith("cites") and rejected["why"] == "no citation"
    assert rejected["score"] == 0.0
    assert "cheap rejected by" in d["reason"] and "no citation" in d["reason"]


def test_cascade_escalates_on_low_confidence() -> None:
    unsure = metered("unsure", lambda r: ChatResult("maybe", "unsure", confidence=0.2), 0.1)
    sure = metered("sure", lambda r: ChatResult("certainly", "sure", confidence=0.9), 0.5)
    strong = metered("strong", "unused", 10)
    router = CascadeRouter("router", [unsure, sure, strong], threshold=0.5)
    result, events = run_router(router)
    assert result.output["text"] == "certainly" and calls(strong) == 0
    (d,) = decisions(events)
    assert by_model(d)["unsure"]["validator"] == "confidence"
    assert "confidence 0.20 < threshold 0.5" in by_model(d)["unsure"]["why"]
    assert d["winner"] == "sure" and "after escalation" in d["reason"]


def test_cascade_takes_async_validators_and_scores() -> None:
    seen: list[str] = []

    async def judge(req: ChatRequest, res: ChatResult) -> float:
        await asyncio.sleep(0)
        seen.append(res.model)
        return 0.9 if res.model == "mid" else 0.3

    models = [metered("low", "l", 0.1), metered("mid", "m", 1), metered("top", "t", 10)]
    assert generate(CascadeRouter("r", models, [judge], threshold=0.6), None).text == "m"
    assert seen == ["low", "mid"]


def test_the_strongest_answer_is_taken_as_it_is() -> None:
    router = CascadeRouter(
        "router", [metered("a", "no"), metered("b", "no either")], [lambda q, r: False]
    )
    result, events = run_router(router)
    assert result.output["text"] == "no either"
    (d,) = decisions(events)
    assert by_model(d)["b"]["status"] == "final" and d["winner"] == "b"
    assert "taken as it is" in d["reason"]


def test_cascade_escalates_past_a_failing_model_but_not_past_a_budget() -> None:
    router = CascadeRouter("r", [metered("a", [down()]), metered("b", "b")])
    assert generate(router).text == "b"

    pricey = metered("pricey", "x", price=1000.0)
    result, events = run_router(
        CascadeRouter("router", [pricey, metered("cheap", "y", price=0.0)]),
        budget=Budget(per_run_usd=0.01),
    )
    assert result.status == "failed" and "BudgetExceeded" in (result.error or "")
    (d,) = decisions(events)
    assert "not escalating" in d["reason"] and d["winner"] is None


def test_a_validator_returning_nonsense_is_a_config_error() -> None:
    router = CascadeRouter("r", [metered("a"), metered("b")], [lambda q, r: "yes"])  # type: ignore[list-item,return-value]
    with pytest.raises(ConfigError, match="returns a Verdict, a bool or a float"):
        generate(router)


# --- load balance -------------------------------------------------------------------------------
def test_weighted_balance_follows_the_weights_and_is_repeatable_with_a_seed() -> None:
    def picks(seed: int) -> list[str]:
        models = [metered("a", "a"), metered("b", "b")]
        router = LoadBalanceRouter("r", models, weights=[3, 1], seed=seed)

        async def main() -> list[str]:
            return [(await router.generate(request())).text for _ in range(2000)]

        return asyncio.run(main())

    first = picks(7)
    counts = Counter(first)
    assert 0.70 < counts["a"] / 2000 < 0.80
    assert picks(7) == first and picks(8) != first


def test_a_zero_weight_model_is_never_picked() -> None:
    never = metered("never", "never")
    router = LoadBalanceRouter("r", [metered("a", "a"), never], weights=[1, 0], seed=1)
    for _ in range(50):
        generate(router)
    assert calls(never) == 0


def test_balance_records_its_decision() -> None:
    router = LoadBalanceRouter("router", [metered("a", "a"), metered("b", "b")], seed=3)
    result, events = run_router(router)
    (d,) = decisions(events)
    assert d["kind"] == "balance" and d["strategy"] == "weighted"
    assert d["winner"] == result.output["model"] and "weighted draw" in d["reason"]
    assert [c["weight"] for c in d["candidates"]] == [1.0, 1.0]


def test_least_latency_tries_unknown_models_first_then_the_fastest() -> None:
    async def slow(r: ChatRequest) -> str:
        await asyncio.sleep(0.03)
        return "slow"

    router = LoadBalanceRouter(
        "r", [metered("slow", slow), metered("fast", "fast")], strategy="least_latency"
    )

    async def main() -> list[str]:
        return [(await router.generate(request())).text for _ in range(6)]

    assert asyncio.run(main()) == ["slow", "fast", "fast", "fast", "fast", "fast"]
    lat = router.latencies()
    assert lat["slow"] is not None and lat["fast"] is not None and lat["fast"] < lat["slow"]


def test_least_latency_stops_picking_a_failing_model() -> None:
    broken = metered("broken", [down()])
    router = LoadBalanceRouter("r", [broken, metered("ok", "ok")], strategy="least_latency")
    with pytest.raises(ModelError):
        generate(router)
    for _ in range(5):
        assert generate(router).text == "ok"
    assert calls(broken) == 1


@pytest.mark.parametrize(
    ("weights", "strategy", "match"),
    [
        ([1], "weighted", "1 weights for 2 models"),
        ([0, 0], "weighted", "not all 0"),
        (None, "random", "strategy must be"),
    ],
)
def test_balance_options_are_checked(
    weights: Sequence[float] | None, strategy: Any, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        LoadBalanceRouter("r", [metered("a"), metered("b")], weights=weights, strategy=strategy)


# --- overhead -----------------------------------------------------------------------------------
def test_a_decision_costs_little() -> None:
    """A loose guard (the benchmark measures it properly): well under 1 ms per decision."""
    models = [metered(f"m{i}", "ok", float(i + 1)) for i in range(5)]
    router = CheapestCapableRouter("r", models)
    req = request()

    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(500):
            await router.generate(req)
        return (time.perf_counter() - t0) / 500

    assert asyncio.run(main()) < 1e-3
