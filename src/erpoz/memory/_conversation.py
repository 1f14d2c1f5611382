"""Conversation memory: the turns of a session, kept durably in the memory database.

The log is append-only: a turn, once written, is never changed. Summarising folds old turns
into a *summary turn*, appended like any other, that says which turns it covers (up to which
``seq``); the window a model sees starts from the latest summary. The turns it covers stay in
the log (for audit; :meth:`Conversation.turns` lists them all).

:class:`Conversation` works windows and summaries out over any
:class:`~erpoz.memory.TurnStore`; :class:`SQLiteTurns` is the embedded one (table
``mem_turns``).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..models import Message
from ._errors import QueryError
from ._models import estimate_tokens
from ._protocol import TurnStore

if TYPE_CHECKING:
    from ._db import MemoryDB

__all__ = [
    "TURN_COLS",
    "Conversation",
    "SQLiteTurns",
    "Summarizer",
    "Turn",
    "metadata_json",
    "turn_from_row",
]

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation, or a summary of older ones (``kind == "summary"``, which
    covers the turns up to ``seq == covers``)."""

    session: str
    seq: int
    role: str
    text: str
    kind: Literal["turn", "summary"] = "turn"
    tokens: int = 0
    ts: float = 0.0
    covers: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def message(self) -> Message:
        """As a chat message (a summary is a system message)."""
        if self.kind == "summary":
            return Message.system(f"Summary of the conversation so far: {self.text}")
        role = self.role if self.role in ROLES else "user"
        return Message(role, self.text)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "seq": self.seq,
            "role": self.role,
            "kind": self.kind,
            "text": self.text,
            "tokens": self.tokens,
            "ts": self.ts,
            "covers": self.covers,
            "metadata": dict(self.metadata),
        }


Summarizer = Callable[[Sequence[Turn]], str]
"""Folds turns (the previous summary first, when there is one) into the text of a summary."""

TURN_COLS = "session, seq, role, text, kind, tokens, ts, covers, metadata"
"""The columns :func:`turn_from_row` reads, in its order (both stores name them alike)."""


def turn_from_row(row: Sequence[Any]) -> Turn:
    return Turn(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], json.loads(row[8]))


def metadata_json(turn: Turn) -> str:
    return json.dumps(dict(turn.metadata), ensure_ascii=False, default=str)


class SQLiteTurns:
    """The embedded :class:`~erpoz.memory.TurnStore`: table ``mem_turns`` of a
    :class:`MemoryDB`."""

    def __init__(self, db: MemoryDB) -> None:
        self.db = db

    def append(self, turn: Turn, key: str | None = None) -> Turn:
        try:
            with self.db.transaction() as conn:
                if key is not None:
                    stored = conn.execute(
                        f"SELECT {TURN_COLS} FROM mem_turns WHERE session=? AND key=?",
                        (turn.session, key),
                    ).fetchone()
                    if stored is not None:
                        return turn_from_row(stored)
                row = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM mem_turns WHERE session=?",
                    (turn.session,),
                ).fetchone()
                seq = int(row[0]) + 1
                conn.execute(
                    f"INSERT INTO mem_turns ({TURN_COLS}, key) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        turn.session,
                        seq,
                        turn.role,
                        turn.text,
                        turn.kind,
                        turn.tokens,
                        turn.ts,
                        turn.covers,
                        metadata_json(turn),
                        key,
                    ),
                )
        except sqlite3.Error as exc:
            raise self.db.translate(exc, f"cannot append to session {turn.session!r}") from exc
        return dataclasses.replace(turn, seq=seq)

    def turns(self, session: str) -> list[Turn]:
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {TURN_COLS} FROM mem_turns WHERE session=? ORDER BY seq", (session,)
            ).fetchall()
        return [turn_from_row(r) for r in rows]

    def active(self, session: str) -> tuple[Turn | None, list[Turn]]:
        with self.db.lock:
            row = self.db.conn.execute(
                f"SELECT {TURN_COLS} FROM mem_turns WHERE session=? AND kind='summary' "
                "ORDER BY seq DESC LIMIT 1",
                (session,),
            ).fetchone()
            summary = None if row is None else turn_from_row(row)
            after = summary.covers or 0 if summary is not None else 0
            rows = self.db.conn.execute(
                f"SELECT {TURN_COLS} FROM mem_turns WHERE session=? AND kind='turn' AND seq>? "
                "ORDER BY seq",
                (session, after),
            ).fetchall()
        return summary, [turn_from_row(r) for r in rows]

    def delete(self, session: str) -> int:
        try:
            with self.db.transaction() as conn:
                cur = conn.execute("DELETE FROM mem_turns WHERE session=?", (session,))
                return int(cur.rowcount)
        except sqlite3.Error as exc:
            raise self.db.translate(exc, f"cannot delete session {session!r}") from exc


class Conversation:
    """The turns of one session in a :class:`~erpoz.memory.TurnStore` (blocking;
    :class:`~erpoz.memory.Memory` has the async handle). ``count_tokens`` sizes turns for
    windows by tokens."""

    def __init__(
        self, store: TurnStore, session: str, count_tokens: Callable[[str], int] | None = None
    ) -> None:
        if not isinstance(session, str) or not session:
            raise QueryError("a conversation needs a session id (a non-empty string)")
        self.store = store
        self.session = session
        self.count = count_tokens or estimate_tokens

    def _insert(
        self,
        role: str,
        text: str,
        kind: Literal["turn", "summary"],
        covers: int | None,
        metadata: Mapping[str, Any] | None,
        key: str | None = None,
    ) -> Turn:
        if not isinstance(text, str):
            raise QueryError(f"a turn's text is a str, not {type(text).__name__}")
        tokens = self.count(text) if text else 0
        turn = Turn(
            self.session, 0, role, text, kind, tokens, time.time(), covers, dict(metadata or {})
        )
        return self.store.append(turn, key)

    def append(
        self,
        role: str,
        text: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> Turn:
        """Add a turn (``role`` is ``user``, ``assistant``, ``system`` or ``tool``); with a
        ``key``, once per key (see :meth:`TurnStore.append`)."""
        if role not in ROLES:
            raise QueryError(f"unknown role {role!r}: use {', '.join(ROLES)}")
        return self._insert(role, text, "turn", None, metadata, key)

    def turns(self) -> list[Turn]:
        """Every turn and summary of the session, oldest first."""
        return self.store.turns(self.session)

    def window(self, last: int | None = None, max_tokens: int | None = None) -> list[Turn]:
        """What a model should see, oldest first: the latest summary (when there is one and it
        fits), then the latest turns after it: at most ``last`` of them, and as many as fit in
        ``max_tokens`` (newest first)."""
        if last is not None and last < 0:
            raise QueryError(f"last must be ≥ 0 turns, not {last}")
        if max_tokens is not None and max_tokens < 0:
            raise QueryError(f"max_tokens must be ≥ 0, not {max_tokens}")
        summary, turns = self.store.active(self.session)
        if last is not None:
            turns = turns[-last:] if last else []
        kept: list[Turn] = []
        used = 0
        for turn in reversed(turns):
            if max_tokens is not None and used + turn.tokens > max_tokens:
                break
            kept.append(turn)
            used += turn.tokens
        kept.reverse()
        if summary is not None and (max_tokens is None or used + summary.tokens <= max_tokens):
            kept.insert(0, summary)
        return kept

    def messages(self, last: int | None = None, max_tokens: int | None = None) -> list[Message]:
        """:meth:`window` as chat messages."""
        return [t.message() for t in self.window(last, max_tokens)]

    def tokens(self) -> int:
        """Tokens of the active conversation (the latest summary and the turns after it)."""
        summary, turns = self.store.active(self.session)
        return (summary.tokens if summary else 0) + sum(t.tokens for t in turns)

    def to_fold(self, keep_last: int = 4) -> list[Turn]:
        """What :meth:`summarize` would fold: the previous summary (when there is one) and the
        active turns but the last ``keep_last``; empty when there are no such turns."""
        if keep_last < 0:
            raise QueryError(f"keep_last must be ≥ 0, not {keep_last}")
        summary, turns = self.store.active(self.session)
        older = turns[: len(turns) - keep_last] if keep_last else turns
        if not older:
            return []
        return [summary, *older] if summary is not None else older

    def add_summary(self, text: str, folded: Sequence[Turn], *, key: str | None = None) -> Turn:
        """Append the summary of ``folded`` (as :meth:`to_fold` gave them); with a ``key``,
        once per key."""
        if not isinstance(text, str):
            raise QueryError(f"the summarizer returned {type(text).__name__}, not text")
        turns = [t for t in folded if t.kind == "turn"]
        if not turns:
            raise QueryError("a summary must fold at least one turn")
        return self._insert("system", text, "summary", turns[-1].seq, {"folded": len(turns)}, key)

    def summarize(self, fold: Summarizer, keep_last: int = 4) -> Turn | None:
        """Fold the active turns but the last ``keep_last`` (with the previous summary, first)
        into a new summary turn, made by ``fold``; ``None`` when there is nothing to fold."""
        older = self.to_fold(keep_last)
        if not older:
            return None
        return self.add_summary(fold(older), older)

    def delete(self) -> int:
        """Erase the session's turns (say, on a data-deletion request); how many there were."""
        return self.store.delete(self.session)
