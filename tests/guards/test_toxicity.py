"""Toxicity guard: sentence spans, the threshold, the fast path against the library's own
``predict_prob``, and precision/recall floors on the labelled set in ``labelled.py``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from labelled import TOXICITY, flag_scores

from erpoz.guards import Guard, ToxicityGuard, run_guards
from erpoz.guards import toxicity as toxicity_module
from erpoz.guards.toxicity import sentence_spans

pytest.importorskip("profanity_check", reason="needs erpoz[local]")

GUARD = ToxicityGuard()


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def test_sentences_keep_their_spans() -> None:
    text = '  Dr. Smith met J. Doe in the U.S. on Monday, e.g. at 4.2 p.m. Really?! "Yes."\n'
    text += "- first item\n\n- second item... done [1]."
    assert sentences(text) == [
        "Dr. Smith met J. Doe in the U.S. on Monday, e.g. at 4.2 p.m. Really?!",
        '"Yes."',
        "- first item",
        "- second item...",
        "done [1].",
    ]
    assert sentence_spans("") == [] and sentence_spans(" \n\t ") == []
    assert sentences("no end mark") == ["no end mark"]
    assert sentences("See example.com/a.b and v1.2. Next one") == [
        "See example.com/a.b and v1.2.",
        "Next one",
    ]


def test_a_toxic_sentence_is_found_where_it_is() -> None:
    text = "Thanks for the update. You are a complete idiot! See you on Monday."
    (finding,) = GUARD.check(text)
    assert (finding.detector, finding.kind) == ("toxicity", "toxic")
    assert finding.text == "You are a complete idiot!" == text[finding.start : finding.end]
    assert 0.8 <= finding.score <= 1.0
    assert finding.detail.startswith("toxic language (p=")
    guard: Guard = GUARD  # the protocol, checked by the type checker
    assert guard.name == "toxicity"
    assert run_guards(text, [GUARD]).flagged


@pytest.mark.parametrize(
    "text",
    [
        "This bug is killing me.",
        "Shoot me an email when you are free.",
        "Kill the process and restart the server.",
        "The bomb squad cleared the building within an hour.",
        "Thanks for your help yesterday, it was great.",
        "",
    ],
)
def test_ordinary_text_is_not_flagged(text: str) -> None:
    assert GUARD.check(text) == ()


def test_the_threshold_decides() -> None:
    text = "Damn, I forgot my keys again."  # mild: about 0.57
    ((_, _, p),) = GUARD.scores(text)
    assert 0.3 < p < 0.8
    assert GUARD.check(text) == ()
    assert ToxicityGuard(threshold=p).check(text)[0].score == p
    assert ToxicityGuard(threshold=min(p + 0.01, 1.0)).check(text) == ()
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="threshold"):
            ToxicityGuard(threshold=bad)


def test_all_sentences_are_scored_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = toxicity_module._load()
    batches: list[int] = []

    def counting(texts: Sequence[str]) -> list[float]:
        batches.append(len(texts))
        return real(texts)

    monkeypatch.setattr(toxicity_module, "_scorer", counting)
    found = GUARD.check("Hello there. You stupid moron. Fine weather today. Eat shit.")
    assert batches == [4]
    assert [f.text for f in found] == ["You stupid moron.", "Eat shit."]


def test_the_fast_path_computes_what_predict_prob_computes() -> None:
    import profanity_check

    fast = toxicity_module._fast_scorer()
    assert fast is not None, "the model is not the shape the fast path expects"
    assert toxicity_module._load() is not None
    texts = [t for t, _ in TOXICITY] + ["", "the and of", "ünïcödé wörds ☃"]
    want = profanity_check.predict_prob(texts)
    assert fast(texts) == pytest.approx(list(want), abs=1e-9)


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toxicity_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'erpoz\[local\]'"):
        ToxicityGuard()


def test_precision_and_recall_on_the_labelled_set() -> None:
    precision, recall, fp, fn = flag_scores(lambda t: bool(GUARD.check(t)), TOXICITY)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, fp, fn)
