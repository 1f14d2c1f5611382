"""The contract every turn store of memory must pass: conversations kept through
``open_memory(url)``, whatever database ``url`` names.

A backend's test module subclasses :class:`ConversationContract` and gives the ``url`` fixture
(a fresh, empty memory per test). Import as ``memory.conversation_contract``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from erpoz.memory import Conversation, Memory, QueryError, Turn, open_memory
from memory.helpers import words_count


class ConversationContract:
    """What ``memory.conversation(session)`` must keep, whatever database holds it."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError("a backend's test class gives the url of an empty memory")

    def test_turns_survive_reopening_and_sessions_are_separate(self, url: str) -> None:
        with open_memory(url, count_tokens=words_count) as memory:
            c = memory.conversation("s1").sync
            c.append("user", "Where is my parcel?")
            c.append("assistant", "It left the warehouse today.", {"model": "m"})
            memory.conversation("s2").sync.append("user", "other session")
        with open_memory(url, count_tokens=words_count) as memory:
            turns = memory.conversation("s1").sync.turns()
            assert [(t.seq, t.role, t.text, t.tokens) for t in turns] == [
                (1, "user", "Where is my parcel?", 4),
                (2, "assistant", "It left the warehouse today.", 5),
            ]
            assert turns[1].metadata == {"model": "m"} and turns[0].ts <= turns[1].ts
            assert [m.role for m in memory.conversation("s1").sync.messages()] == [
                "user",
                "assistant",
            ]
            assert len(memory.conversation("s2").sync.turns()) == 1
            assert memory.conversation("s2").sync.delete() == 1
            assert memory.conversation("s2").sync.turns() == []
            assert memory.conversation("s2").sync.delete() == 0
            assert len(memory.conversation("s1").sync.turns()) == 2

    def test_a_keyed_turn_is_written_once_per_session(self, url: str) -> None:
        # a step that runs again writes under the same key: the turn stored first comes back
        with open_memory(url, count_tokens=words_count) as memory:
            c = memory.conversation("s1").sync
            first = c.append("user", "refund INV-1", key="k-1")
            again = c.append("user", "refund INV-1", key="k-1")
            other = memory.conversation("s2").sync.append("user", "refund INV-1", key="k-1")
            summary = c.add_summary("asked for a refund", [first], key="k-2")
            assert c.add_summary("asked for a refund", [first], key="k-2") == summary
            unkeyed = [c.append("user", "same text"), c.append("user", "same text")]
        assert again == first and first.seq == 1 and other.seq == 1
        assert [t.seq for t in unkeyed] == [3, 4]
        with open_memory(url, count_tokens=words_count) as memory:
            turns = memory.conversation("s1").sync.turns()
            assert [(t.seq, t.kind, t.text) for t in turns] == [
                (1, "turn", "refund INV-1"),
                (2, "summary", "asked for a refund"),
                (3, "turn", "same text"),
                (4, "turn", "same text"),
            ]

    def test_window_by_last_turns_and_by_tokens(self, url: str) -> None:
        with open_memory(url, count_tokens=words_count) as memory:
            c = memory.conversation("s").sync
            for i, n in enumerate([3, 1, 4, 1, 5]):
                c.append("user" if i % 2 == 0 else "assistant", " ".join(["w"] * n))
            assert [t.seq for t in c.window()] == [1, 2, 3, 4, 5]
            assert [t.seq for t in c.window(last=2)] == [4, 5]
            assert [t.seq for t in c.window(max_tokens=10)] == [3, 4, 5]
            assert [t.seq for t in c.window(last=2, max_tokens=5)] == [5]
            assert c.window(last=0) == [] and c.window(max_tokens=0) == []
            assert c.tokens() == 14
            with pytest.raises(QueryError, match="last must be ≥ 0"):
                c.window(last=-1)
            with pytest.raises(QueryError, match="unknown role 'bot'"):
                c.append("bot", "hi")
            with pytest.raises(QueryError, match="needs a session id"):
                Conversation(memory.turns, "")

    def test_summaries_fold_old_turns_and_are_stored_as_such(self, url: str) -> None:
        folded: list[list[tuple[str, int]]] = []

        def fold(turns: Sequence[Turn]) -> str:
            folded.append([(t.kind, t.seq) for t in turns])
            return "summary of " + ",".join(str(t.seq) for t in turns if t.kind == "turn")

        with open_memory(url, count_tokens=words_count) as memory:
            c = memory.conversation("s").sync
            for i in range(6):
                c.append("user", f"turn {i + 1}")
            first = c.summarize(fold, keep_last=2)
            assert first is not None and (first.kind, first.covers, first.seq) == ("summary", 4, 7)
            assert first.text == "summary of 1,2,3,4" and first.metadata == {"folded": 4}
            window = c.window()
            assert [(t.kind, t.seq) for t in window] == [("summary", 7), ("turn", 5), ("turn", 6)]
            assert window[0].message().role == "system"
            assert c.summarize(fold, keep_last=2) is None  # nothing old enough to fold
            c.append("assistant", "turn 8")
            second = c.summarize(fold, keep_last=1)
            assert second is not None and second.covers == 6
            assert folded[-1] == [("summary", 7), ("turn", 5), ("turn", 6)]
        with open_memory(url, count_tokens=words_count) as memory:
            c = memory.conversation("s").sync
            assert [(t.kind, t.seq) for t in c.window()] == [("summary", 9), ("turn", 8)]
            assert len(c.turns()) == 9  # append-only: the folded turns are still there
            # a tight window keeps the newest turn before the summary
            assert [t.seq for t in c.window(max_tokens=3)] == [8]

    def test_async_conversation_with_an_automatic_async_summarizer(self, url: str) -> None:
        async def fold(turns: Sequence[Turn]) -> str:
            await asyncio.sleep(0)
            return f"{len(turns)} turns folded"

        async def main(memory: Memory) -> list[Turn]:
            session = memory.conversation("chat", summarizer=fold, summarize_after=6, keep_last=1)
            for i in range(5):
                await session.append("user", f"hello number {i}")  # 3 tokens each
            return await session.window()

        with open_memory(url, count_tokens=words_count) as memory:
            window = asyncio.run(main(memory))
            assert [(t.kind, t.text) for t in window] == [
                ("summary", "2 turns folded"),  # the previous summary and one turn
                ("turn", "hello number 4"),
            ]
            turns = memory.conversation("chat").sync.turns()
            assert [t.kind for t in turns].count("summary") == 3  # after turns 3, 4 and 5

    def test_writers_appending_to_one_session_at_once_get_distinct_seqs(self, url: str) -> None:
        """Four memories on one database (as four processes would be), one session."""
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                with open_memory(url, count_tokens=words_count) as memory:
                    chat = memory.conversation("shared").sync
                    for n in range(10):
                        chat.append("user", f"writer {i} turn {n}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with open_memory(url, count_tokens=words_count) as memory:
            turns = memory.conversation("shared").sync.turns()
        assert [t.seq for t in turns] == list(range(1, 41))
        for i in range(4):  # each writer's turns in the order it wrote them
            mine = [t.text for t in turns if t.text.startswith(f"writer {i} ")]
            assert mine == [f"writer {i} turn {n}" for n in range(10)]
