"""Language guard: what is flagged and with what, short and unsure texts, bad codes, the
per-process detector cache, and precision/recall floors on the labelled set in
``labelled.py``."""

from __future__ import annotations

import threading

import pytest
from labelled import LANGUAGE, flag_scores

from erpoz.guards import LanguageGuard
from erpoz.guards import language as language_module

pytest.importorskip("lingua", reason="needs erpoz[local]")

GUARD = LanguageGuard()


def test_a_text_in_another_language_is_one_finding_over_all_of_it() -> None:
    text = "Das Treffen wurde auf Donnerstag verschoben."
    (finding,) = GUARD.check(text)
    assert (finding.detector, finding.kind) == ("language", "language:de")
    assert (finding.start, finding.end, finding.text) == (0, len(text), text)
    assert 0.5 <= finding.score <= 1.0
    assert "German" in finding.detail and "allowed: en" in finding.detail


@pytest.mark.parametrize(
    "text",
    [
        "The meeting has been moved to Thursday afternoon.",
        "Let's grab lunch at Café Müller tomorrow.",  # foreign names, still English
        "Danke schön!",  # German, but under min_chars
        "1234 5678 9012 3456 7890 !!! ???",  # no letters: nothing to judge
        "",
    ],
)
def test_english_short_and_letterless_texts_are_not_flagged(text: str) -> None:
    assert GUARD.check(text) == ()


def test_allowed_languages_and_the_confidence_floor() -> None:
    german = "Kannst du mir bitte bei der Rechnung helfen?"
    assert LanguageGuard(allowed=["en", "de"]).check(german) == ()
    assert LanguageGuard(allowed="de").check(german) == ()  # one code as a string
    detected = GUARD.detect(german)
    assert detected is not None and detected[0] == "de"
    strict = LanguageGuard(min_confidence=min(detected[1] + 0.001, 1.0))
    assert strict.check(german) == ()
    assert LanguageGuard(min_chars=100).check(german) == ()


def test_candidates_always_include_the_allowed_languages() -> None:
    guard = LanguageGuard(allowed=("en", "fi"), candidates=["de", "fr"])
    assert guard.candidates == frozenset({"en", "fi", "de", "fr"})
    assert "ca" not in LanguageGuard().candidates


@pytest.mark.parametrize(
    ("allowed", "candidates", "bad"),
    [(["en", "xx"], None, "xx"), (["en"], ["de", "klingon"], "klingon"), (["no"], None, "no")],
)
def test_unknown_codes_are_named(
    allowed: list[str], candidates: list[str] | None, bad: str
) -> None:
    with pytest.raises(ValueError, match=f"unknown language code '{bad}'"):
        LanguageGuard(allowed, candidates)


def test_one_detector_per_language_set_per_process() -> None:
    codes = frozenset({"en", "de", "fr"})
    built: list[object] = []

    def build() -> None:
        built.append(language_module._detector(codes))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 4 and all(d is built[0] for d in built)
    a = LanguageGuard(candidates=["de", "fr"])
    b = LanguageGuard(allowed=["fr", "en"], candidates=["de"])
    a.load()
    assert language_module._detector(a.candidates) is language_module._detector(b.candidates)


def test_precision_and_recall_on_the_labelled_set() -> None:
    items = [(text, code != "en") for text, code in LANGUAGE]
    precision, recall, fp, fn = flag_scores(lambda t: bool(GUARD.check(t)), items)
    assert precision == 1.0 and recall >= 0.8, (precision, recall, fp, fn)
    # among texts in a candidate language and long enough to judge, the detected code is right
    judged = [
        (text, code)
        for text, code in LANGUAGE
        if code in GUARD.candidates and len(text.strip()) >= GUARD.min_chars
    ]
    right = sum(1 for text, code in judged if (GUARD.detect(text) or ("", 0.0))[0] == code)
    assert right / len(judged) >= 0.85, (right, len(judged))
