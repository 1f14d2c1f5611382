"""Length guard: limits in characters and tokens, the spans beyond them, bad limits."""

from __future__ import annotations

import pytest

from erpoz.guards import LengthGuard
from erpoz.models._meter import count_tokens


def test_too_long_in_characters_covers_what_lies_beyond() -> None:
    text = "0123456789abcdef"
    (finding,) = LengthGuard(max_chars=10).check(text)
    assert (finding.detector, finding.kind) == ("length", "too_long")
    assert (finding.start, finding.end, finding.text) == (10, 16, "abcdef")
    assert finding.score == 1.0
    assert finding.detail == "16 characters, over the limit of 10"
    assert LengthGuard(max_chars=16).check(text) == ()


def test_too_short_covers_the_whole_text_and_ignores_outer_white_space() -> None:
    guard = LengthGuard(min_chars=5)
    (finding,) = guard.check("  ok \n")
    assert (finding.kind, finding.start, finding.end, finding.text) == (
        "too_short",
        0,
        6,
        "  ok \n",
    )
    assert finding.detail == "2 characters, under the minimum of 5"
    assert guard.check("") and guard.check("hello") == ()


def test_max_tokens_uses_the_project_estimate_by_default() -> None:
    text = "x" * 41  # 11 tokens at ~4 characters a token
    assert count_tokens(text) == 11
    (finding,) = LengthGuard(max_tokens=10).check(text)
    assert finding.kind == "too_long" and finding.detail == "11 tokens, over the limit of 10"
    assert count_tokens(text[: finding.start]) <= 10 < count_tokens(text[: finding.start + 1])
    assert finding.text == text[finding.start :]
    assert LengthGuard(max_tokens=11).check(text) == ()
    assert LengthGuard(max_tokens=0).check("") == ()


def test_a_tokenizer_of_ones_own() -> None:
    def words(text: str) -> int:
        return len(text.split())

    text = "one two three four five six"
    (finding,) = LengthGuard(max_tokens=4, tokenizer=words).check(text)
    assert finding.text == text[finding.start :]
    assert words(text[: finding.start]) == 4 and finding.text.strip().startswith("five")


def test_every_limit_broken_is_reported_in_order() -> None:
    guard = LengthGuard(max_chars=30, max_tokens=5)
    found = guard.check("a" * 40)
    assert [(f.kind, f.start) for f in found] == [("too_long", 20), ("too_long", 30)]
    assert [f.detail.split(",")[0] for f in found] == ["10 tokens", "40 characters"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "at least one"),
        ({"max_chars": -1}, "max_chars"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"min_chars": True}, "min_chars"),
        ({"min_chars": 10, "max_chars": 5}, "over max_chars"),
    ],
)
def test_bad_limits(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LengthGuard(**params)  # type: ignore[arg-type]
