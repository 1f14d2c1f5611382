"""The prior-corrected online router (``PriorRouter``) as a project runs it: it starts as the
static router it is given (a classifier fitted on another task, a threshold) and, from the
feedback its flows record, corrects it on the kinds of prompt where this traffic says the
prior is wrong -- and only there. Models are ``erpoz.testing`` doubles behind ``Metered``
(real prices); the prior is a real ``LogisticClassifier`` fitted on another synthetic task;
the store is SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.errors import ConfigError, ModelError
from erpoz.models import ChatRequest, ClassifyResult, Message, Metered, ModelHub, ModelSpec
from erpoz.routing import PriorRouter
from erpoz.routing.learned import ClassifierRouter, LogisticClassifier
from erpoz.routing.online import HashingEmbed, feedback
from erpoz.routing.prior import quantized
from erpoz.store import SQLiteStore
from erpoz.testing import FunctionModel

pytest.importorskip("numpy", reason="the online routers need numpy (erpoz[local])")

CHAT = ["say hello to {k}", "greet my friend {k}", "say thanks to {k}", "wish {k} a good day"]
MATH = ["compute the integral of x^{k}", "solve the equation x^2 = {k}", "simplify x + {k}x"]
LEGAL = ["draft a tax exemption clause {k}", "explain the tax exemption rule {k}"]


def stream(n: int, kinds: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """``n`` prompts cycling through ``kinds``: (text, kind)."""
    out = []
    for k in range(n):
        kind, templates = kinds[k % len(kinds)]
        out.append((templates[(k // len(kinds)) % len(templates)].format(k=k % 7), kind))
    return out


def models() -> tuple[Metered, Metered]:
    """A cheap model whose answers to anything with an ``x`` in it are wrong; a dear one that
    is right on everything."""
    cheap = Metered(
        FunctionModel(lambda r: "WRONG" if "x" in r.messages[-1].text else "fine", name="cheap"),
        ModelSpec("cheap", "test", price_in=0.1, price_out=0.1),
    )
    dear = Metered(
        FunctionModel(lambda r: "fine", name="dear"),
        ModelSpec("dear", "test", price_in=10.0, price_out=30.0),
    )
    return cheap, dear


async def prior_from(strong_kinds: list[list[str]], weak_kinds: list[list[str]]) -> Any:
    """The static router's classifier, fitted on another task where the prompts of
    ``strong_kinds`` needed the strong model and those of ``weak_kinds`` did not."""
    texts, labels = [], []
    for templates, label in [(t, True) for t in strong_kinds] + [(t, False) for t in weak_kinds]:
        for k in range(12):
            texts.append(templates[k % len(templates)].format(k=k + 20))
            labels.append(label)
    clf = LogisticClassifier("other-task", HashingEmbed(), labels=("strong", "weak"))
    await clf.fit(texts, labels)
    return clf


@step
async def answer(q: str, ctx: Context) -> dict[str, Any]:
    r = await ctx.models.chat("learning", q)
    ctx.emit("feedback", feedback(0.0 if r.text == "WRONG" else 1.0))
    return {"model": r.model, "right": r.text != "WRONG"}


async def serve(router: Any, store: SQLiteStore, items: list[tuple[str, str]]) -> list[Any]:
    """Each prompt as one run of a flow that records the user's verdict on the answer."""
    hub = ModelHub()
    hub.add(router)
    engine = Engine(store, services={ModelHub: hub})
    f = Flow("ask", inputs={"q": str})
    f.output(f.add(answer, q=f.input("q")))
    return [(await engine.run(f, {"q": q})).output for q, _ in items]


def on(kind: str, items: list[tuple[str, str]], out: list[Any]) -> list[Any]:
    return [o for (_, k), o in zip(items, out, strict=True) if k == kind]


def test_where_the_prior_trusts_the_cheap_model_wrongly_it_learns_to_escalate(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        # on the other task, maths was as easy as chat; legal prompts needed the strong model
        clf = await prior_from([LEGAL], [CHAT, MATH])
        items = stream(240, [("chat", CHAT), ("maths", MATH), ("legal", LEGAL)])
        store = SQLiteStore(tmp_path / "erpoz.db")
        cheap, dear = models()
        router = PriorRouter(
            "learning", cheap, dear, HashingEmbed(), clf, threshold=0.5, store=store, refresh_s=0
        )
        out = await serve(router, store, items)
        static = ClassifierRouter("learning", clf, *models(), threshold=0.5)
        fixed = await serve(static, SQLiteStore(tmp_path / "static.db"), items)

        maths, maths_static = on("maths", items, out), on("maths", items, fixed)
        # the static router sends maths to the cheap model throughout, and it is wrong there
        assert all(o["model"] == "cheap" and not o["right"] for o in maths_static)
        # the online one starts the same, then learns from the feedback to escalate maths
        assert [o["model"] for o in maths[:5]] == ["cheap"] * 5
        late = maths[-30:]
        assert sum(o["model"] == "dear" for o in late) >= 0.8 * len(late), late
        assert sum(o["right"] for o in maths) > sum(o["right"] for o in maths_static) + 30
        # and only there: chat stays with the cheap model, legal with the dear one
        chat = on("chat", items, out)[-30:]
        assert sum(o["model"] == "cheap" for o in chat) >= 0.9 * len(chat), chat
        legal = on("legal", items, out)[-30:]  # the cheap one only within the exploration budget
        assert sum(o["model"] == "dear" for o in legal) >= 0.8 * len(legal), legal

    asyncio.run(main())


def test_where_the_prior_overspends_exploring_finds_the_cheap_model_good_enough(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        # on the other task, chat and maths both needed the strong model; here chat does not
        clf = await prior_from([CHAT, MATH], [LEGAL])
        items = stream(300, [("chat", CHAT), ("maths", MATH), ("legal", LEGAL)])
        store = SQLiteStore(tmp_path / "erpoz.db")
        cheap, dear = models()
        router = PriorRouter(
            "learning",
            cheap,
            dear,
            HashingEmbed(),
            clf,
            threshold=0.5,
            explore=0.1,
            store=store,
            refresh_s=0,
        )
        out = await serve(router, store, items)
        chat = on("chat", items, out)
        first, last = chat[:20], chat[-30:]
        assert sum(o["model"] == "dear" for o in first) >= 16, first
        # it learns only from what it tried, within its exploration budget: slowly, but the
        # cost on chat falls (a static router would send all of it to the dear model)
        assert sum(o["model"] == "cheap" for o in last) >= 0.4 * len(last), last
        # maths keeps the dear model (the cheap one only within the exploration budget)
        maths = on("maths", items, out)[-30:]
        assert sum(o["model"] == "dear" for o in maths) >= 0.8 * len(maths), maths
        assert router.state.explored <= 0.1 * router.state.decisions + 1  # the budget holds

        # its decisions carry the prior's score and are rebuilt by a new process from the log
        await router.sync()
        again = PriorRouter("learning", *models(), HashingEmbed(), clf, store=store)
        assert await again.sync() > 0
        assert again.state.decisions == router.state.decisions
        assert again.state.weight == pytest.approx(router.state.weight)

    asyncio.run(main())


def test_keeping_the_thresholds_share_it_learns_which_prompts_get_the_strong_model(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        # on the other task chat needed the strong model and maths did not; here it is the
        # other way round: the share (half) is right, the choice of prompts wrong
        clf = await prior_from([CHAT], [MATH])
        items = stream(240, [("chat", CHAT), ("maths", MATH)])
        store = SQLiteStore(tmp_path / "erpoz.db")
        cheap, dear = models()
        router = PriorRouter(
            "learning",
            cheap,
            dear,
            HashingEmbed(),
            clf,
            threshold=0.5,
            keep_share=True,
            store=store,
            refresh_s=0,
        )
        out = await serve(router, store, items)
        chat, maths = on("chat", items, out), on("maths", items, out)
        # it starts as the static router...
        assert [o["model"] for o in chat[:2]] == ["dear"] * 2
        assert [o["model"] for o in maths[:2]] == ["cheap"] * 2
        # ...and ends with the strong model where it is needed; chat moves to the cheap one
        # as far as the prior's weight lets it (the static router: all chat to the dear one)
        assert sum(o["model"] == "dear" for o in maths[-30:]) >= 0.7 * 30, maths[-30:]
        assert sum(o["model"] == "cheap" for o in chat[-30:]) >= 0.4 * 30, chat[-30:]
        late = out[-60:]
        assert sum(o["model"] == "dear" for o in late) / len(late) <= 0.8

        # its decisions carry the prompts' embeddings: a new process rebuilds the same state
        await router.sync()
        again = PriorRouter(
            "learning", *models(), HashingEmbed(), clf, keep_share=True, store=store
        )
        assert await again.sync() > 0
        assert again.state.gains.weight == pytest.approx(router.state.gains.weight)
        probe = quantized(HashingEmbed().vector("solve the equation x^2 = 3"))
        assert again.state.gains.evidence(probe)[0] == pytest.approx(
            router.state.gains.evidence(probe)[0]
        )
        # a router in the default mode does not read them as its own
        plain = PriorRouter("learning", *models(), HashingEmbed(), clf, store=store)
        assert await plain.sync() == 0

    asyncio.run(main())


def test_bad_settings_and_a_classifier_without_the_label_are_clear_errors() -> None:
    class Labels:
        """A classifier that knows other labels."""

        name = "topics"

        async def classify(self, text: str) -> ClassifyResult:
            return ClassifyResult({"sport": 0.9}, self.name)

    cheap, dear = models()
    with pytest.raises(ConfigError, match="threshold is between 0 and 1"):
        PriorRouter("r", cheap, dear, HashingEmbed(), Labels(), threshold=1.5)
    with pytest.raises(ConfigError, match="vector_shrink > 0"):
        PriorRouter("r", cheap, dear, HashingEmbed(), Labels(), keep_share=True, vector_shrink=0)
    with pytest.raises(ConfigError, match="needs a classifier"):
        PriorRouter("r", cheap, dear, HashingEmbed(), object())  # type: ignore[arg-type]
    router = PriorRouter("r", cheap, dear, HashingEmbed(), Labels())
    request = ChatRequest((Message.user("hello"),))
    with pytest.raises(ModelError, match=r"no score for label 'strong'.*sport"):
        asyncio.run(router.generate(request))
