"""Context budgeting by priority, and conversation memory kept in the memory database:
persistence across reopening, windows, summaries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from erpoz.memory import (
    ContextBudgetError,
    Conversation,
    Hit,
    Memory,
    QueryError,
    Turn,
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


# --- conversations ------------------------------------------------------------------------------
def test_turns_survive_reopening_and_sessions_are_separate(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    with open_memory(db, count_tokens=words_count) as memory:
        c = memory.conversation("s1").sync
        c.append("user", "Where is my parcel?")
        c.append("assistant", "It left the warehouse today.", {"model": "m"})
        memory.conversation("s2").sync.append("user", "other session")
    with open_memory(db, count_tokens=words_count) as memory:
        turns = memory.conversation("s1").sync.turns()
        assert [(t.seq, t.role, t.text, t.tokens) for t in turns] == [
            (1, "user", "Where is my parcel?", 4),
            (2, "assistant", "It left the warehouse today.", 5),
        ]
        assert turns[1].metadata == {"model": "m"} and turns[0].ts <= turns[1].ts
        assert [m.role for m in memory.conversation("s1").sync.messages()] == ["user", "assistant"]
        assert len(memory.conversation("s2").sync.turns()) == 1
        assert memory.conversation("s2").sync.delete() == 1
        assert memory.conversation("s2").sync.turns() == []


def test_window_by_last_turns_and_by_tokens(tmp_path: Path) -> None:
    with open_memory("memory", count_tokens=words_count) as memory:
        c = memory.conversation("s").sync
        for i, n in enumerate([3, 1, 4, 1, 5]):
            c.append("user" if i % 2 == 0 else "assistant", " ".join(["w"] * n))
        assert [t.seq for t in c.window()] == [1, 2, 3, 4, 5]
        assert [t.seq for t in c.window(last=2)] == [4, 5]
        assert [t.seq for t in c.window(max_tokens=10)] == [3, 4, 5]
        assert [t.seq for t in c.window(last=2, max_tokens=5)] == [5]
        assert c.window(last=0) == [] and c.window(max_tokens=0) == []
        with pytest.raises(QueryError, match="last must be ≥ 0"):
            c.window(last=-1)
        with pytest.raises(QueryError, match="unknown role 'bot'"):
            c.append("bot", "hi")
        with pytest.raises(QueryError, match="needs a session id"):
            Conversation(memory.db, "")


def test_summaries_fold_old_turns_and_are_stored_as_such(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    folded: list[list[tuple[str, int]]] = []

    def fold(turns: Sequence[Turn]) -> str:
        folded.append([(t.kind, t.seq) for t in turns])
        return "summary of " + ",".join(str(t.seq) for t in turns if t.kind == "turn")

    with open_memory(db, count_tokens=words_count) as memory:
        c = memory.conversation("s").sync
        for i in range(6):
            c.append("user", f"turn {i + 1}")
        first = c.summarize(fold, keep_last=2)
        assert first is not None and (first.kind, first.covers, first.seq) == ("summary", 4, 7)
        assert first.text == "summary of 1,2,3,4" and first.metadata == {"folded": 4}
        assert [(t.kind, t.seq) for t in c.window()] == [("summary", 7), ("turn", 5), ("turn", 6)]
        assert c.window()[0].message().role == "system"
        assert c.summarize(fold, keep_last=2) is None  # nothing old enough to fold
        c.append("assistant", "turn 8")
        second = c.summarize(fold, keep_last=1)
        assert second is not None and second.covers == 6
        assert folded[-1] == [("summary", 7), ("turn", 5), ("turn", 6)]
    with open_memory(db, count_tokens=words_count) as memory:
        c = memory.conversation("s").sync
        assert [(t.kind, t.seq) for t in c.window()] == [("summary", 9), ("turn", 8)]
        assert len(c.turns()) == 9  # append-only: the folded turns are still there
        # a tight window keeps the newest turn before the summary
        assert [t.seq for t in c.window(max_tokens=3)] == [8]


def test_async_conversation_with_an_automatic_async_summarizer() -> None:
    async def fold(turns: Sequence[Turn]) -> str:
        await asyncio.sleep(0)
        return f"{len(turns)} turns folded"

    async def main(memory: Memory) -> list[Turn]:
        session = memory.conversation("chat", summarizer=fold, summarize_after=6, keep_last=1)
        for i in range(5):
            await session.append("user", f"hello number {i}")  # 3 tokens each
        return await session.window()

    with open_memory("memory", count_tokens=words_count) as memory:
        window = asyncio.run(main(memory))
        assert [(t.kind, t.text) for t in window] == [
            ("summary", "2 turns folded"),  # the previous summary and one turn
            ("turn", "hello number 4"),
        ]
        turns = memory.conversation("chat").sync.turns()
        assert [t.kind for t in turns].count("summary") == 3  # after turns 3, 4 and 5
