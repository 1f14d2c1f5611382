"""Numbered SQL migrations on PostgreSQL, for every part that keeps tables there (the run store,
the memory): a version table per part, each migration recorded as it is applied. Callers hold
the advisory lock and the transaction (they know whose tables these are)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]


def schema_version(db: Conn, table: str) -> int:
    """The version recorded in ``table`` in the connection's schema (0: none yet)."""
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not row or not row[0]:
        return 0
    row = db.execute(f"SELECT coalesce(max(version), 0) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(
    db: Conn,
    known: Sequence[tuple[int, str]],
    table: str,
    *,
    too_new: Callable[[int, int], Exception],
) -> None:
    """Apply the migrations of ``known`` newer than ``table``'s version, in order, recording
    each; ``too_new(current, latest)`` is raised when the schema is newer than erpoz."""
    current = schema_version(db, table)
    latest = known[-1][0]
    if current > latest:
        raise too_new(current, latest)
    if current == 0:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, "
            "applied DOUBLE PRECISION NOT NULL)"
        )
    for number, text in known:
        if number > current:
            db.execute(text)  # several statements: sent as one simple query
            db.execute(
                f"INSERT INTO {table} (version, applied) VALUES (%s, %s)", (number, time.time())
            )
