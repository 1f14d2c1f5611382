"""The online router as a project runs it: flows call it through ``ctx.models``, steps emit
feedback and guards record their verdicts in the run store; the router learns which model is
good enough for which kind of prompt, and a new process rebuilds the same state from the store.
Models are ``erpoz.testing`` doubles behind ``Metered`` (real prices); the store is SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.errors import ConfigError
from erpoz.models import ChatRequest, Message, Metered, ModelHub, ModelSpec, parse_config
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.project import build_hub
from erpoz.routing.cascade import CascadeRouter
from erpoz.routing.online import BanditState, HashingEmbed, OnlineRouter, feedback
from erpoz.routing.validators import final_answer
from erpoz.store import Event, SQLiteStore
from erpoz.testing import FunctionModel

pytest.importorskip("numpy", reason="the online router needs numpy (erpoz[local])")

CHAT = ["say hello to {k}", "greet my friend {k}", "say thanks to {k}", "wish {k} a good day"]
MATH = [
    "compute the integral of x^{k}",
    "solve the equation x^2 = {k}",
    "prove lemma {k} on primes",
]


def prompts(n: int) -> list[tuple[str, bool]]:
    """``n`` prompts alternating kinds: (text, is it maths)."""
    out = []
    for k in range(n):
        if k % 2:
            out.append((MATH[k % len(MATH)].format(k=k % 5), True))
        else:
            out.append((CHAT[k % len(CHAT)].format(k=k % 7), False))
    return out


def models() -> tuple[Metered, Metered]:
    """A cheap model that does chat well and maths badly; a dear one good at both."""
    cheap = Metered(
        FunctionModel(lambda r: "WRONG" if "x" in r.messages[-1].text else "fine", name="cheap"),
        ModelSpec("cheap", "test", price_in=0.1, price_out=0.1),
    )
    dear = Metered(
        FunctionModel(lambda r: "fine", name="dear"),
        ModelSpec("dear", "test", price_in=10.0, price_out=30.0),
    )
    return cheap, dear


@step
async def answer(q: str, ctx: Context) -> dict[str, Any]:
    r = await ctx.models.chat("learning", q)
    # the user's verdict on the answer, recorded in the run as it would be by an app
    ctx.emit("feedback", feedback(0.0 if r.text == "WRONG" else 1.0))
    return {"model": r.model}


def flow() -> Flow:
    f = Flow("ask", inputs={"q": str})
    f.output(f.add(answer, q=f.input("q")))
    return f


def router(store: Any = None, **kw: Any) -> OnlineRouter:
    cheap, dear = models()
    return OnlineRouter(
        "learning", [cheap, dear], HashingEmbed(), target=0.95, store=store, refresh_s=0, **kw
    )


async def serve(r: OnlineRouter, store: SQLiteStore, items: list[tuple[str, bool]]) -> list[str]:
    """Each prompt as one run of the flow; the router syncs from the store before deciding."""
    hub = ModelHub()
    hub.add(r)
    engine = Engine(store, services={ModelHub: hub})
    chosen = []
    for q, _ in items:
        result = await engine.run(flow(), {"q": q})
        chosen.append(result.output["model"])
    return chosen


def test_learns_from_feedback_in_the_log_and_a_restart_rebuilds_it(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "erpoz.db")
        first = router(store)
        items = prompts(320)
        chosen = await serve(first, store, items)
        # at first it mostly asks the dear model (nothing is known; the cheap one only within
        # the exploration budget); by the end, chat goes cheap and maths mostly stays dear
        # (the cheap model is still tried on it, within the budget)
        assert chosen[:20].count("dear") >= 14, chosen[:20]
        late = list(zip(items[-80:], chosen[-80:], strict=True))
        chat = [m for (_, maths), m in late if not maths]
        maths_ = [m for (_, maths), m in late if maths]
        assert chat.count("cheap") >= 0.8 * len(chat), chat
        assert maths_.count("dear") >= 0.6 * len(maths_), maths_
        assert first.state.explored <= 0.1 * first.state.decisions + 1  # the budget holds

        await first.sync()  # what the last run recorded after its call
        # a new process: the same state, read from the store alone
        second = router(store)
        changed = await second.sync()
        assert changed > 0
        assert second.state.decisions == first.state.decisions
        assert second.state.signals == first.state.signals
        for a in range(2):
            assert second.state.weight[a] == pytest.approx(first.state.weight[a])
            assert sorted(second.state.obs[a]) == sorted(first.state.obs[a])
        # reading again learns nothing new (every event counts once)
        assert await second.sync() == 0
        for q, _ in items[-6:]:
            code = await second.code(ChatRequest((Message.user(q),)))
            a = first.state.choose(code, 0.9, 0.0, __import__("random").Random(0)).arm
            b = second.state.choose(code, 0.9, 0.0, __import__("random").Random(0)).arm
            assert a == b
        await store.close()

    asyncio.run(main())


def test_decisions_are_recorded_with_what_a_rebuild_needs(tmp_path: Path) -> None:
    async def main() -> list[Event]:
        store = SQLiteStore(tmp_path / "e.db")
        await serve(router(store), store, prompts(3))
        runs = await store.list_runs()
        events = await store.events(runs[0].run_id)
        await store.close()
        return events

    events = asyncio.run(main())
    decided = [e for e in events if e.kind == "route_decided"]
    assert len(decided) == 1
    d = decided[0].data
    assert d["kind"] == "online" and d["router"] == "learning"
    assert {"decision", "context", "tokens", "space", "explored", "cost_usd", "target"} <= set(d)
    assert isinstance(d["tokens"], int) and d["tokens"] > 0
    assert d["cost_usd"] > 0 and d["winner"] in ("cheap", "dear")
    assert [c["model"] for c in d["candidates"]] == ["cheap", "dear"]
    kinds = [e.kind for e in events]
    assert kinds.index("route_decided") < kinds.index("feedback")


def event(seq: int, kind: str, data: dict[str, Any], step: str = "s") -> Event:
    return Event("run", seq, 0.0, kind, step, 0, data, None, "", "")


def test_signals_from_guards_reviews_and_feedback_attach_to_their_decision() -> None:
    r = router()
    space = r.space
    decide = {"router": "learning", "kind": "online", "winner": "cheap", "space": space}
    log = [
        event(1, "route_decided", {**decide, "decision": "d1", "context": 5, "cost_usd": 0.01}),
        event(
            2, "guard_decided", {"checkpoint": "model_output", "model": "learning", "passed": False}
        ),
        event(
            3, "guard_decided", {"checkpoint": "model_input", "model": "learning", "passed": True}
        ),
        event(4, "review_resolved", {"decision": "approve"}),
        event(5, "feedback", {"score": 0.5}),
        event(6, "feedback", {"score": 1.0, "router": "other"}),  # another router's
        event(7, "route_decided", {**decide, "decision": "d2", "context": 9, "space": "elsewhere"}),
        event(8, "feedback", {"score": 1.0, "decision": "d1"}, step="later"),
    ]
    assert r.learn(log) == 5  # d1, the output guard, the review, two feedbacks
    assert r.state.decisions == 1 and r.state.signals == 4
    assert r.state.total[0] == pytest.approx(0.0 + 1.0 + 0.5 + 1.0)
    assert r.learn(log) == 0  # each event counts once
    # order does not matter: the same events backwards give the same sums (decisions first)
    other = router()
    other.learn([log[0]])
    other.learn(list(reversed(log[1:])))
    assert other.state.total == r.state.total
    assert sorted(other.state.obs[0]) == sorted(r.state.obs[0])


def test_validators_score_the_answer_and_abstain_without_effect() -> None:
    cheap = FunctionModel(lambda r: "The answer is B.", name="cheap")
    dear = FunctionModel(lambda r: "16 - 3 = 13\n#### 13", name="dear")
    r = OnlineRouter("v", [cheap, dear], HashingEmbed(), validators=[final_answer])
    events: list[tuple[str, dict[str, Any]]] = []
    token = bind(Recorder(lambda k, d: events.append((k, dict(d))), "run"))
    try:
        asyncio.run(r.generate(ChatRequest((Message.user("Tom has 16 eggs, eats 3?"),))))
    finally:
        unbind(token)
    d = next(d for k, d in events if k == "route_decided")
    if d["winner"] == "dear":
        assert d["quality"] == 1.0
    else:  # a multiple-choice answer: final_answer abstains, so no signal
        assert "quality" not in d


def test_relative_target_and_cold_start_are_safe() -> None:
    state = BanditState(2, 8)
    import random

    choice = state.choose(3, 0.9, 0.0, random.Random(0))
    assert choice.arm == 1  # nothing known: the strongest
    assert state.relative_target(0.95) == pytest.approx(0.95 * 0.5)


def test_configured_in_the_project_file(tmp_path: Path) -> None:
    text = f"""
models:
  cheap: {{provider: replay, params: {{path: {tmp_path / "c.jsonl"}}}, price: {{input: 0.1}}}}
  dear: {{provider: replay, params: {{path: {tmp_path / "d.jsonl"}}}, price: {{input: 10}}}}
routers:
  checked: {{type: cascade, models: [cheap, dear]}}
  learning:
    type: online
    models: [cheap, checked, dear]
    target: 0.95
    relative: true
    explore: 0.1
    validators: [erpoz.routing.validators:final_answer]
    store: {tmp_path / "erpoz.db"}
"""
    for name in ("c", "d"):
        (tmp_path / f"{name}.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    hub = build_hub(parse_config(text, file="erpoz.yaml", base=tmp_path))
    learning = hub.get("learning")
    assert isinstance(learning, OnlineRouter)
    assert [m.name for m in learning.models] == ["cheap", "checked", "dear"]
    assert learning.relative and learning.explore == 0.1 and learning.validators
    assert learning._open_store() is None  # no store file yet: nothing to learn, none created
    assert not (tmp_path / "erpoz.db").exists()
    bad = text.replace("target: 0.95", "target: 2")
    said = r"erpoz.yaml:\d+: routers.learning: 'target' must be a number between 0 and 1, got 2"
    with pytest.raises(ConfigError, match=said):
        parse_config(bad, file="erpoz.yaml", base=tmp_path)
    wrong_embed = text.replace("type: online", "type: online\n    embed: cheap")
    with pytest.raises(ConfigError, match="embed 'cheap' is a chat model"):
        parse_config(wrong_embed, file="erpoz.yaml", base=tmp_path)


def test_cascade_flags_costing_more_than_its_strongest_model() -> None:
    cheap = Metered(
        FunctionModel(lambda r: "no", name="cheap"), ModelSpec("cheap", "t", price_in=1.0)
    )
    dear = Metered(
        FunctionModel(lambda r: "yes", name="dear"), ModelSpec("dear", "t", price_in=2.0)
    )
    cascade = CascadeRouter(
        "c", [cheap, dear], [lambda req, res: False], cost_window=10, cost_min_calls=5
    )
    events: list[tuple[str, dict[str, Any]]] = []
    token = bind(Recorder(lambda k, d: events.append((k, dict(d))), "run"))
    try:
        for k in range(12):
            asyncio.run(cascade.generate(ChatRequest((Message.user(f"question {k}"),))))
    finally:
        unbind(token)
    alerts = [d for k, d in events if k == "quality_alert"]
    assert len(alerts) == 1  # once, when it crossed
    a = alerts[0]
    assert a["guard"] == "cascade_cost" and a["subject"] == "c" and a["escalation_rate"] == 1.0
    assert a["cost_ratio"] > 1 and "costs" not in a  # the message says it
    assert "cost" in a["message"] and cascade.costs.ratio is not None and cascade.costs.ratio > 1


def test_kinds_depart_from_the_overall_rate_as_far_as_their_evidence_carries() -> None:
    """The cheap model is right on one kind of prompt and wrong on another: with plenty of
    evidence each kind gets its own estimate; a kind seen twice stays near the model's
    overall rate; longer prompts can be learned to differ; and the estimates are sums, the
    same whatever order the signals come in."""
    good, bad, rare = 0b1111_0000, 0b0000_1111, 0b1100_0011

    def build(signals: list[tuple[str, int, float, int]]) -> BanditState:
        state = BanditState(2, 8)
        for d, code, _, tokens in signals:
            state.add_decision(d, 0, code, 0.001, None, False, tokens)
        for d, _, score, _ in signals:
            state.add_signal(d, score, 1.0, d)
        return state

    signals = [(f"g{k}", good, 1.0, 50) for k in range(150)]
    signals += [(f"b{k}", bad, 0.0, 50) for k in range(150)]
    signals += [("r0", rare, 0.0, 50), ("r1", rare, 0.0, 50)]
    state = build(signals)
    mean, low = state.estimates_of([good, bad, rare])
    assert mean[0, 0] > 0.85 and mean[1, 0] < 0.15  # each kind its own
    assert 0.25 < mean[2, 0] < 0.75  # two signals do not make a kind
    assert low[0, 0] < mean[0, 0] and low[0, 1] == mean[0, 1]  # strongest at its mean
    backwards = build(list(reversed(signals)))
    assert backwards.estimates_of([good, bad, rare])[0] == pytest.approx(mean)
    # the same codes, but long prompts are the ones the cheap model gets wrong
    by_length = build(
        [(f"s{k}", k % 256, 1.0, 20) for k in range(200)]
        + [(f"l{k}", k % 256, 0.0, 2000) for k in range(200)]
    )
    short, long = by_length.estimates_of([7, 7], [20, 2000])[0][:, 0]
    assert short > 0.8 and long < 0.2


def test_a_warm_start_from_another_task_routes_from_the_first_prompt_and_yields() -> None:
    """Another task's recorded grades (the cheap model right on chat, wrong on maths) are a
    prior: before any grade of its own, the router sends chat to the cheap model and maths
    to the dear one; this task's own evidence, where it disagrees, overrides the prior."""
    import random

    texts = [t for t, _ in prompts(40)]
    cheap_grades = [0.0 if is_math else 1.0 for _, is_math in prompts(40)]
    r = router(explore=0.0)
    asyncio.run(r.warm_start(texts, [cheap_grades, [1.0] * 40], weight=40))
    assert r.state.weight == [40.0, 40.0]
    rng = random.Random(0)

    async def arm(text: str) -> int:
        code = await r.code(ChatRequest((Message.user(text),)))
        return r.state.choose(code, 0.6, 0.0, rng, 5).arm

    chat, maths = texts[0], texts[1]
    for k, text in enumerate([chat, maths] * 4):  # traffic seen, no grade yet
        c = asyncio.run(r.code(ChatRequest((Message.user(text),))))
        r.state.add_decision(f"t{k}", k % 2, c, 0.01 if k % 2 else 0.0001, None, False, 5)
    assert asyncio.run(arm(chat)) == 0 and asyncio.run(arm(maths)) == 1
    # here, the cheap model turns out wrong on chat too: its own signals outweigh the prior
    code = asyncio.run(r.code(ChatRequest((Message.user(chat),))))
    for k in range(80):
        r.state.add_decision(f"d{k}", 0, code, 0.001, None, False, 5)
        r.state.add_signal(f"d{k}", 0.0, 1.0, f"d{k}")
    assert asyncio.run(arm(chat)) == 1
    with pytest.raises(ConfigError, match="a grade per model"):
        asyncio.run(r.warm_start(texts, [cheap_grades], weight=8))
    with pytest.raises(ConfigError, match=r"each in \[0, 1\]"):
        asyncio.run(r.warm_start(texts[:2], [[2.0, 0.0], [1.0, 1.0]], weight=8))
