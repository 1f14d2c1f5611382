"""The learned router: a logistic-regression classifier on embeddings, and a router that sends
a request to the strong model when the classifier's score reaches its threshold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz.errors import ConfigError, ModelError
from erpoz.models import ChatRequest, Classifier, Message, Metered, ModelSpec
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.routing import CascadeRouter
from erpoz.routing.learned import ClassifierRouter, LogisticClassifier, fit_logistic
from erpoz.testing import FunctionModel
from eval._data import HashEmbed

pytest.importorskip("numpy", reason="the learned router needs numpy (erpoz[local])")

HARD = ["prove the theorem about primes", "integrate this hard function", "prove the lemma"]
EASY = ["say hello to me", "what colour is the sky", "say thanks"]


def fitted() -> LogisticClassifier:
    clf = LogisticClassifier("difficulty", HashEmbed(), l2=0.1)
    return asyncio.run(clf.fit(HARD + EASY, [True] * 3 + [False] * 3))


def test_logistic_regression_separates_and_saves(tmp_path: Path) -> None:
    import numpy as np

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    w, b = fit_logistic(x, np.array([0, 0, 1, 1]), l2=0.01)
    assert w[0] > 0 and -b / w[0] == pytest.approx(1.5, abs=0.01)

    clf = fitted()
    assert isinstance(clf, Classifier)
    hard = asyncio.run(clf.classify("prove the theorem"))
    easy = asyncio.run(clf.classify("say hello"))
    assert hard.label == "strong" and easy.label == "weak"
    assert hard.scores["strong"] + hard.scores["weak"] == pytest.approx(1.0)

    path = tmp_path / "clf.json"
    clf.save(path)
    again = LogisticClassifier.load(path, HashEmbed())
    assert asyncio.run(again.classify("prove the theorem")).scores == pytest.approx(hard.scores)

    with pytest.raises(ModelError, match="not fitted"):
        asyncio.run(LogisticClassifier("raw", HashEmbed()).classify("x"))


def request(text: str) -> ChatRequest:
    return ChatRequest((Message.user(text),))


def test_classifier_router_routes_by_threshold_and_records_why() -> None:
    weak = Metered(FunctionModel(lambda r: "weak answer", name="weak"), ModelSpec("weak", "t"))
    strong = Metered(
        FunctionModel(lambda r: "strong answer", name="strong"),
        ModelSpec("strong", "t", price_in=10, price_out=30),
    )
    router = ClassifierRouter("learned", fitted(), weak, strong, threshold=0.5)
    events: list[tuple[str, dict[str, Any]]] = []
    token = bind(Recorder(lambda k, d: events.append((k, dict(d))), "run"))
    try:
        hard = asyncio.run(router.generate(request("prove the theorem about primes")))
        easy = asyncio.run(router.generate(request("say hello to me")))
    finally:
        unbind(token)
    assert (hard.model, hard.route) == ("strong", ("learned",))
    assert easy.model == "weak"
    decisions = [d for k, d in events if k == "route_decided"]
    assert [d["winner"] for d in decisions] == ["strong", "weak"]
    assert decisions[0]["kind"] == "classifier" and decisions[0]["threshold"] == 0.5
    assert "≥ threshold 0.5" in decisions[0]["reason"]
    assert decisions[0]["candidates"][1]["estimate_usd"] > 0

    # threshold 0: everything strong; above 1: nothing
    assert (
        asyncio.run(
            ClassifierRouter("all", fitted(), weak, strong, threshold=0.0).generate(request("hi"))
        ).model
        == "strong"
    )
    never = ClassifierRouter("none", fitted(), weak, strong, threshold=1.01)
    assert asyncio.run(never.generate(request("prove the lemma"))).model == "weak"


def test_classifier_router_nests_a_cascade_and_checks_its_inputs() -> None:
    weak = FunctionModel(lambda r: "no final answer", name="weak")
    strong = FunctionModel(lambda r: "#### 4", name="strong")
    cascade = CascadeRouter("cascade", [weak, strong], [lambda req, res: "####" in res.text])
    router = ClassifierRouter("combined", fitted(), cascade, strong, threshold=0.5)
    assert asyncio.run(router.generate(request("say hello"))).route == ("combined", "cascade")
    with pytest.raises(ConfigError, match="needs a classifier"):
        ClassifierRouter("bad", HashEmbed(), weak, strong)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="no score for label 'hard'"):
        asyncio.run(
            ClassifierRouter("x", fitted(), weak, strong, label="hard").generate(request("a"))
        )
