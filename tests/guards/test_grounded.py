"""Groundedness guard: the logic with an offline bag-of-words embedder (spans, verbatim
support, skipped fragments, no sources, the threshold), then MiniLM itself on the labelled
set in ``labelled.py``."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest
from labelled import GROUNDED, grounded_scores

from erpoz.errors import ModelError
from erpoz.guards import GroundednessGuard, Guard, run_guards
from models.local_fixtures import real_models_blocked


class WordsArray:
    """Offline ``embed_array``: one dimension per word seen, so texts sharing words are close.
    Records what it was asked to embed."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def embed_array(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        self.calls.append(list(texts))
        rows = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
        for words in rows:
            for w in words:
                self.vocab.setdefault(w, len(self.vocab))
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for i, words in enumerate(rows):
            for w in words:
                out[i, self.vocab[w]] += 1.0
        return out, sum(len(w) for w in rows)


SOURCE = "Paris is the capital and largest city of France. The Seine flows through it."
ANSWER = "Paris is the capital of France [1]. The moon is made of green cheese. Yes."


def test_unsupported_sentences_are_found_where_they_are() -> None:
    guard = GroundednessGuard(WordsArray())
    (finding,) = guard.check(ANSWER, [SOURCE])
    assert (finding.detector, finding.kind) == ("grounded", "unsupported")
    assert (
        finding.text == "The moon is made of green cheese." == ANSWER[finding.start : finding.end]
    )
    assert 0.45 < finding.score <= 1.0
    assert finding.detail.startswith("support 0.")
    assert "closest source sentence" in finding.detail
    # "[1]" is left out of what is compared; "Yes." is too short to judge
    (first, second) = guard.supports(ANSWER, [SOURCE])
    assert first[2] == pytest.approx(6 / (6 * 9) ** 0.5, abs=1e-6)
    assert second[:2] == (finding.start, finding.end)
    guard_type: Guard = guard
    assert run_guards(ANSWER, [guard_type]).findings[0].kind == "no_sources"


def test_a_sentence_found_in_a_source_is_not_embedded() -> None:
    embedder = WordsArray()
    guard = GroundednessGuard(embedder)
    answer = "The  SEINE flows through it! Paris is the capital of France."
    found = guard.supports(answer, [SOURCE])
    assert found[0][2] == 1.0
    assert embedder.calls[0][:1] == ["Paris is the capital of France."]
    assert guard.check("The Seine flows through it.", [SOURCE]) == ()
    assert len(embedder.calls) == 1


def test_the_threshold_and_the_score() -> None:
    embedder = WordsArray()
    support = 6 / (6 * 9) ** 0.5  # about 0.82
    text = "Paris is the capital of France."
    assert GroundednessGuard(embedder, threshold=support - 0.01).check(text, [SOURCE]) == ()
    (finding,) = GroundednessGuard(embedder, threshold=support + 0.01).check(text, [SOURCE])
    assert finding.score == pytest.approx(1 - support, abs=1e-6)
    guard = GroundednessGuard(embedder)
    moon = 3 / (7 * 9) ** 0.5  # "the", "is", "of" shared with the first source sentence
    assert guard.score(ANSWER, [SOURCE]) == pytest.approx((support + moon) / 2, abs=1e-6)
    assert guard.score(ANSWER, []) == 0.0
    assert guard.score("Yes. [2]", [SOURCE]) == 1.0
    for bad in (0.0, 1.2):
        with pytest.raises(ValueError, match="threshold"):
            GroundednessGuard(embedder, threshold=bad)


def test_without_sources_there_is_one_no_sources_finding() -> None:
    guard = GroundednessGuard(WordsArray())
    for sources in ([], ["", "  \n"]):
        (finding,) = guard.check(ANSWER, sources)
        assert (finding.kind, finding.start, finding.end, finding.score) == (
            "no_sources",
            0,
            len(ANSWER),
            1.0,
        )
    assert guard.check("", [SOURCE]) == () and guard.check("  ", []) == ()
    assert guard.check("Yes [1].", [SOURCE]) == ()


def test_misuse_is_refused() -> None:
    with pytest.raises(TypeError, match="not a str"):
        GroundednessGuard(WordsArray()).check(ANSWER, SOURCE)
    with pytest.raises(TypeError, match="embed_array"):
        GroundednessGuard(object())  # type: ignore[arg-type]


def test_the_default_embedder_is_minilm_and_obeys_the_test_block() -> None:
    guard = GroundednessGuard()
    assert type(guard.embedder).__name__ == "MiniLMEmbed"
    assert guard.embedder is GroundednessGuard().embedder
    if getattr(guard.embedder, "_loaded", None) is None:
        with real_models_blocked(), pytest.raises(ModelError, match="blocked"):
            guard.check(ANSWER, [SOURCE])


# -- MiniLM ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_guard() -> GroundednessGuard:
    from models.local_fixtures import minilm

    return GroundednessGuard(minilm())


def test_minilm_on_the_labelled_set(minilm_guard: GroundednessGuard) -> None:
    def flagged(sentence: str, source: str) -> bool:
        return any(f.kind == "unsupported" for f in minilm_guard.check(sentence, [source]))

    got = grounded_scores(flagged, GROUNDED)
    # Claims a source does not make are caught; contradictions in the source's own words
    # mostly are not (see docs/guards.md): the floors say so.
    assert got["precision"] >= 0.8 and got["recall_added"] >= 0.8, got
    assert got["recall"] >= 0.3, got


def test_minilm_on_an_answer_with_citations(minilm_guard: GroundednessGuard) -> None:
    sources = [
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Gustave Eiffel's company designed and built the tower. It is 330 metres tall.",
    ]
    answer = (
        "The tower was finished in 1889 for the World's Fair [1]. It was designed and built "
        "by Gustave Eiffel's company [2]. Tickets to the top cost 35 euros on weekdays."
    )
    found = minilm_guard.check(answer, sources)
    assert [f.text for f in found] == ["Tickets to the top cost 35 euros on weekdays."]
    assert minilm_guard.score(answer, sources) > 0.5
