"""Conversations on PostgreSQL: the :class:`~erpoz.memory.TurnStore` of a
:class:`PostgresMemoryDB` (table ``memory_turns``). Windows and summaries are worked out by
:class:`~erpoz.memory.Conversation`, as for SQLite.

Appends to one session are numbered under a transaction-level advisory lock on the session,
so that workers in several processes appending to it at once never take the same ``seq``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ._conversation import TURN_COLS, Turn, metadata_json, turn_from_row
from ._postgres import _text

if TYPE_CHECKING:
    from ._postgres_db import Conn, PostgresMemoryDB

__all__ = ["PostgresTurns"]

_LOCK_SESSION = (
    "SELECT pg_advisory_xact_lock(hashtext('erpoz.memory.turns.' || "
    "coalesce(current_schema(), '')), hashtext(%s))"
)
_APPEND = (
    f"INSERT INTO memory_turns ({TURN_COLS}, key) "
    "SELECT %s, coalesce(max(seq), 0) + 1, %s, %s, %s, %s::integer, %s::double precision, "
    "%s::integer, %s, %s FROM memory_turns WHERE session = %s RETURNING seq"
)
_KEYED = f"SELECT {TURN_COLS} FROM memory_turns WHERE session = %s AND key = %s"
_ACTIVE = (
    "WITH s AS (SELECT seq, covers FROM memory_turns WHERE session = %s AND kind = 'summary' "
    f"ORDER BY seq DESC LIMIT 1) SELECT {TURN_COLS} FROM memory_turns WHERE session = %s AND "
    "(seq = (SELECT seq FROM s) OR (kind = 'turn' AND seq > coalesce((SELECT covers FROM s), 0)))"
    " ORDER BY seq"
)


class PostgresTurns:
    """The turns of every session, in ``memory_turns``."""

    def __init__(self, db: PostgresMemoryDB) -> None:
        self.db = db

    def append(self, turn: Turn, key: str | None = None) -> Turn:
        text = _text(turn.text)

        def write(conn: Conn) -> int | Turn:
            conn.execute(_LOCK_SESSION, (turn.session,))
            if key is not None:
                stored = conn.execute(_KEYED, (turn.session, key)).fetchone()
                if stored is not None:
                    return turn_from_row(stored)
            row = conn.execute(
                _APPEND,
                (
                    turn.session,
                    turn.role,
                    text,
                    turn.kind,
                    turn.tokens,
                    turn.ts,
                    turn.covers,
                    metadata_json(turn),
                    key,
                    turn.session,
                ),
            ).fetchone()
            assert row is not None
            return int(row[0])

        done = self.db.run(f"cannot append to session {turn.session!r}", write, "write")
        if isinstance(done, Turn):
            return done
        return dataclasses.replace(turn, seq=done, text=text)

    def turns(self, session: str) -> list[Turn]:
        rows = self.db.run(
            f"cannot read session {session!r}",
            lambda conn: conn.execute(
                f"SELECT {TURN_COLS} FROM memory_turns WHERE session = %s ORDER BY seq",
                (session,),
            ).fetchall(),
        )
        return [turn_from_row(r) for r in rows]

    def active(self, session: str) -> tuple[Turn | None, list[Turn]]:
        rows = self.db.run(
            f"cannot read session {session!r}",
            lambda conn: conn.execute(_ACTIVE, (session, session)).fetchall(),
        )
        found = [turn_from_row(r) for r in rows]
        summary = next((t for t in found if t.kind == "summary"), None)
        return summary, [t for t in found if t.kind == "turn"]

    def delete(self, session: str) -> int:
        def write(conn: Conn) -> int:
            return conn.execute("DELETE FROM memory_turns WHERE session = %s", (session,)).rowcount

        return self.db.run(f"cannot delete session {session!r}", write, "write")
