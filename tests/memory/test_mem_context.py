"""Context budgeting by priority. Conversations are checked for every store by
``memory.conversation_contract``."""

from __future__ import annotations

import pytest

from erpoz.memory import (
    ContextBudgetError,
    Hit,
    fit_context,
    open_memory,
    token_counter,
)
from erpoz.models import Message, ModelSpec, count_tokens
from erpoz.models._meter import Metered
from erpoz.testing import FunctionModel
from memory.helpers import HashEmbed, words_count


def hit(text: str, score: float, n: int = 0) -> Hit:
    return Hit(f"doc#{n}", text, "doc", (), None, 0, len(text), score, "hybrid", n)


# --- fit_context --------------------------------------------------------------------------------
def test_fit_context_keeps_system_then_latest_turns_then_best_passages() -> None:
    turns = [Message.user("one two three"), Message.assistant("four five"), Message.user("six")]
    passages = [hit("p " * 5, 0.2, 0), hit("q " * 3, 0.9, 1), hit("r " * 8, 0.5, 2)]
    fit = fit_context(
        "sys tem", turns, passages, window=30, reserve=5, count_tokens=words_count, per_message=1
    )
    # budget 25: system 2+1, turns newest first: 1+1, 2+1, 3+1 (total 12); passages by score:
    # q 3 (15), r 8 (23), p 5 does not fit (2 left)
    assert fit.system == "sys tem"
    assert fit.messages == tuple(turns)
    assert [p.id for p in fit.passages] == ["doc#1", "doc#2"]
    assert fit.tokens == 23 and fit.budget == 25
    (dropped,) = fit.dropped
    assert (dropped.kind, dropped.index, dropped.tokens) == ("passage", 0, 5)
    assert dropped.reason == "did not fit (5 tokens, 2 left)"
    assert dropped.item is passages[0]
    assert "kept 3 turn(s), 2 passage(s); dropped 0 turn(s), 1 passage(s) (5 tokens)" in (
        fit.summary()
    )


def test_older_turns_go_before_newer_ones_and_leave_no_holes() -> None:
    turns = ["a " * 2, "b " * 10, "c " * 1, "d " * 3]  # oldest first
    fit = fit_context(None, turns, ["p " * 5], window=8, count_tokens=words_count, per_message=0)
    assert fit.messages == ("c ", "d " * 3)  # 'a' would fit, but 'b' before it did not
    assert [(d.kind, d.index, d.tokens) for d in fit.dropped] == [
        ("turn", 1, 10),
        ("turn", 0, 2),
        ("passage", 0, 5),
    ]
    assert fit.dropped[1].reason == "older than a turn that did not fit"
    assert fit.dropped_tokens == 17


def test_fit_context_refuses_a_system_prompt_larger_than_the_window() -> None:
    with pytest.raises(ContextBudgetError, match="the system prompt alone has 104 tokens"):
        fit_context("word " * 100, [], [], window=50, count_tokens=words_count)
    with pytest.raises(ContextBudgetError, match="takes the whole window"):
        fit_context(None, [], [], window=10, reserve=10)


def test_tokens_are_counted_with_the_models_tokenizer_when_there_is_one() -> None:
    assert token_counter(None) is count_tokens

    class Own:
        def count_tokens(self, text: str) -> int:
            return 7

    assert token_counter(Own())("anything") == 7
    spec = ModelSpec("chat", "test", context_window=64)
    metered = Metered(FunctionModel(lambda r: "ok"), spec, tokenizer=words_count)
    assert token_counter(metered)("three words here") == 3
    with open_memory("memory", embedder=HashEmbed()) as memory:
        fit = memory.fit_context("a b c", [], [hit("x y", 1.0)], model=metered)
        assert (fit.window, fit.tokens) == (64, 3 + 4 + 2)
