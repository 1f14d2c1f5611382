"""The storage floor under erpoz's ``sync`` durability: a bare SQLite commit of one step's events.

``python -m bench.sqlite_floor`` times ``BEGIN IMMEDIATE; INSERT 2 rows; COMMIT`` on a file in WAL
mode with the same table and exactly-once index as erpoz's store, with no erpoz code involved.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE events (run_id TEXT, seq INT, ts REAL, kind TEXT, step TEXT, attempt INT, "
    "data TEXT, payload TEXT, blob TEXT, prev_hash TEXT, hash TEXT, PRIMARY KEY (run_id, seq)) "
    "WITHOUT ROWID",
    "CREATE UNIQUE INDEX one_success ON events (run_id, step) WHERE kind = 'step_succeeded'",
)


def commit_us(synchronous: str = "NORMAL", n: int = 5000) -> float:
    """Mean µs per commit of a step_started + step_succeeded pair."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(str(Path(tmp) / "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        for sql in _SCHEMA:
            db.execute(sql)
        h = "0" * 64
        insert = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        t0 = time.perf_counter()
        for i in range(n):
            rows = [
                ("r1", 2 * i + 1, time.time(), "step_started", f"s{i}", 1, "{}", None, None, h, h),
                ("r1", 2 * i + 2, time.time(), "step_succeeded", f"s{i}", 1, "{}", "1", None, h, h),
            ]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(insert, rows)
            db.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        db.close()
    return elapsed / n * 1e6


if __name__ == "__main__":
    for mode in ("NORMAL", "OFF"):
        print(f"synchronous={mode}: {commit_us(mode):.1f} µs per commit")
