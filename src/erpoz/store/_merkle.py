"""The Merkle tree over the log: RFC 9162 (Certificate Transparency v2) hashing, append-only,
kept up to date by every commit.

* **One leaf per event**, in the store-wide order events were committed (events committed
  together go in the order they were appended). An event's position in that order is its leaf
  index, recorded in ``merkle_leaves`` next to ``(run_id, seq)``.
* **A leaf** is ``SHA-256(0x00 ‖ UTF-8(run_id ␟ seq ␟ hash))``: the run, the sequence number
  and the event's chain hash (which covers its time, kind, step, attempt, data, payload and its
  predecessor's hash). ``␟`` is U+001F, as in the chain hash.
* **A node** is ``SHA-256(0x01 ‖ left ‖ right)``; the tree of ``n`` leaves is RFC 9162's
  ``MTH``: the left subtree holds the largest power of two below ``n``. The empty tree's root is
  ``SHA-256("")``.
* **The state** (``merkle_state``): the tree's size and its *compact range* (``frontier``): the
  roots of the perfect subtrees the tree is made of, largest first, 32 bytes each. An append
  merges the new leaf into the range like a binary counter, so it costs O(log n) at worst and
  two hashes on average, never a rebuild.
* **Stored nodes** (``merkle_nodes``): the roots of complete subtrees at every level that is a
  multiple of :data:`NODE_STRIDE` (16, 256, 4096 … leaves), one row per 15 leaves or so. Any
  subtree hash a proof needs is then one of them, or computed from at most 8 of them (or 8
  leaves): proofs cost O(log n) reads.

Each backend appends with the same arithmetic: :func:`sqlite_append` in the SQLite commit,
``erpoz_merkle_append`` (a PL/pgSQL function, migration ``0004_merkle``) in the PostgreSQL one,
:class:`CompactRange` in memory. The audit (``erpoz.audit``) recomputes all of it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import speedups
from ..errors import StoreError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree of no leaves (RFC 9162: the hash of an empty string)."""
NODE_STRIDE = 4
"""Complete subtrees are stored at the levels that are multiples of this (2**4 = 16 leaves)."""

Leaf = tuple[str, int, int, bytes]
"""``(run_id, seq, position, leaf_hash)``: an event's leaf."""
StoredNode = tuple[int, int, bytes]
"""``(level, index, hash)``: the root of the complete subtree of leaves
``[index * 2**level, (index + 1) * 2**level)``."""

_sha256 = hashlib.sha256


def leaf_hash(run_id: str, seq: int, event_hash: str) -> bytes:
    """The leaf of an event: its run, its sequence number and its chain hash."""
    c = speedups.C
    if c is not None:
        return c.leaf_hash(run_id, seq, event_hash)
    return _sha256(f"\x00{run_id}\x1f{seq}\x1f{event_hash}".encode()).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node of the tree (RFC 9162: ``HASH(0x01 || left || right)``)."""
    return _sha256(b"\x01" + left + right).digest()


def fold_right(parts: Sequence[bytes]) -> bytes:
    """The root over perfect subtrees given largest (leftmost) first: ``H(p0, H(p1, …))``."""
    if not parts:
        return EMPTY_ROOT
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = _sha256(b"\x01" + part + acc).digest()
    return acc


def split_frontier(frontier: bytes) -> list[bytes]:
    return [frontier[i : i + HASH_SIZE] for i in range(0, len(frontier), HASH_SIZE)]


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The tree as a store holds it: which log (``origin``, fixed when the store was created,
    carried by ``erpoz migrate``), how many leaves, and the compact range they hash to."""

    origin: str
    size: int
    frontier: bytes

    @property
    def root(self) -> bytes:
        return fold_right(split_frontier(self.frontier))

    def check(self) -> None:
        """A compact range of ``size`` leaves has one hash per bit set in ``size``."""
        if len(self.frontier) != HASH_SIZE * self.size.bit_count():
            raise StoreError(
                f"the Merkle tree's state is damaged: {self.size} leaves need "
                f"{self.size.bit_count()} hashes in its frontier, it holds "
                f"{len(self.frontier) / HASH_SIZE:g}"
            )


class CompactRange:
    """The right edge of a tree of ``size`` leaves: enough to append and to compute the root."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = hashes if hashes is not None else []

    @classmethod
    def of(cls, size: int, frontier: bytes) -> CompactRange:
        return cls(size, split_frontier(frontier))

    def append(self, leaves: Iterable[bytes], nodes: list[StoredNode] | None = None) -> None:
        """Append leaves; the complete subtrees that come into being at stored levels are
        added to ``nodes``."""
        hashes = self.hashes
        n = self.size
        sha = _sha256
        for leaf in leaves:
            carry = leaf
            k = n
            level = 0
            while k & 1:
                carry = sha(b"\x01" + hashes.pop() + carry).digest()
                k >>= 1
                level += 1
                if nodes is not None and level % NODE_STRIDE == 0:
                    nodes.append((level, n >> level, carry))
            hashes.append(carry)
            n += 1
        self.size = n

    @property
    def frontier(self) -> bytes:
        return b"".join(self.hashes)

    @property
    def root(self) -> bytes:
        return fold_right(self.hashes)


def as_of_tree(
    rows: list[Any],
    leaves: list[Any],
    late: Sequence[tuple[str, int]],
    size: int | None,
    *,
    keys: bool,
) -> tuple[list[Any], list[Any]]:
    """The events and leaves read in one transaction, as the log stood when the tree had
    ``size`` leaves: what was committed after that (every event with a leaf at ``size`` or
    later, ``late``) is left out, so that an audit compares them with the run heads read with
    that tree size, not with events written since. Events without a leaf stay (an audit names
    them: written behind the store's back)."""
    if size is None or not late:
        return rows, leaves
    after = set(late)
    kept = [r for r in rows if (r[0], r[1]) not in after]
    if keys:
        return kept, [leaf for leaf in leaves if leaf[2] < size]
    return kept, [placed for placed in leaves if placed[0] < size]


def run_range(
    first: str | None, last: str | None, mark: str, run_id: str | None = None
) -> tuple[str, list[str]]:
    """A WHERE clause (``{t}`` for the table's prefix, ``mark`` the driver's placeholder) for
    ``first <= run_id < last``, or for one run."""
    conds, args = [], []
    if run_id is not None:
        conds.append(f"{{t}}run_id = {mark}")
        args.append(run_id)
    if first is not None:
        conds.append(f"{{t}}run_id >= {mark}")
        args.append(first)
    if last is not None:
        conds.append(f"{{t}}run_id < {mark}")
        args.append(last)
    return ("WHERE " + " AND ".join(conds) if conds else ""), args


def split_runs(runs: Sequence[tuple[Any, ...]], parts: int) -> list[str]:
    """Run ids (from ``(run_id, events)`` rows in the store's order) that cut the runs into
    ``parts`` ranges of about as many events each."""
    total = sum(int(r[1]) for r in runs)
    cuts: list[str] = []
    done = 0
    for run_id, events in runs:
        if len(cuts) + 1 >= parts:
            break
        if done >= total * (len(cuts) + 1) / parts:
            cuts.append(run_id)
        done += int(events)
    return cuts


# --- SQLite ------------------------------------------------------------------------------------
_SQLITE_STATE = "SELECT origin, size, frontier FROM merkle_state WHERE id = 1"
_SQLITE_LEAF = "INSERT INTO merkle_leaves (run_id, seq, pos, leaf) VALUES (?,?,?,?)"
_SQLITE_NODE = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?,?,?)"
_SQLITE_SET = "UPDATE merkle_state SET size = ?, frontier = ? WHERE id = 1"


def sqlite_head(db: sqlite3.Connection) -> TreeHead:
    row = db.execute(_SQLITE_STATE).fetchone()
    if row is None:
        raise StoreError(
            "the Merkle tree's state row (merkle_state) is missing: the store was damaged or "
            "tampered with; see `erpoz audit verify --all`"
        )
    return TreeHead(str(row[0]), int(row[1]), bytes(row[2]))


def sqlite_append(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add the events just inserted (event rows in ``EVENT_COLUMNS`` order, in commit order)
    to the tree, inside the commit's write transaction."""
    if not rows:
        return
    head = sqlite_head(db)
    tree = CompactRange.of(head.size, head.frontier)
    start = head.size
    leaves = [(r[0], r[1], start + i, leaf_hash(r[0], r[1], r[10])) for i, r in enumerate(rows)]
    nodes: list[StoredNode] = []
    tree.append((leaf[3] for leaf in leaves), nodes)
    db.executemany(_SQLITE_LEAF, leaves)
    if nodes:
        db.executemany(_SQLITE_NODE, nodes)
    db.execute(_SQLITE_SET, (tree.size, tree.frontier))


def sqlite_backfill(db: sqlite3.Connection) -> int:
    """Put the events recorded before the tree existed into it (run by run, in the order the
    runs were created; each run's events in order). Returns how many."""
    rows = db.execute(
        "SELECT e.run_id, e.seq, e.hash FROM events e LEFT JOIN runs r ON r.run_id = e.run_id "
        "LEFT JOIN merkle_leaves l ON l.run_id = e.run_id AND l.seq = e.seq "
        "WHERE l.pos IS NULL ORDER BY r.created IS NULL, r.created, e.run_id, e.seq"
    ).fetchall()
    padded = [(r[0], r[1], None, None, None, None, None, None, None, None, r[2]) for r in rows]
    sqlite_append(db, padded)
    return len(rows)


def sqlite_hashes(db: sqlite3.Connection, level: int, start: int, end: int) -> list[bytes]:
    """Stored hashes of ``level`` (0: leaves) with index in ``[start, end)``, in order."""
    if level == 0:
        sql = "SELECT leaf FROM merkle_leaves WHERE pos >= ? AND pos < ? ORDER BY pos"
        rows = db.execute(sql, (start, end)).fetchall()
    else:
        check_level(level)
        sql = "SELECT hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx"
        rows = db.execute(sql, (level, start, end)).fetchall()
    return [bytes(r[0]) for r in rows]


def check_level(level: int) -> None:
    if level < 0 or level % NODE_STRIDE:
        raise StoreError(
            f"the Merkle tree stores leaves (level 0) and nodes at levels that are multiples of "
            f"{NODE_STRIDE}; level {level} is computed from them, not stored"
        )


# --- PostgreSQL ----------------------------------------------------------------------------------
PG_APPEND = "SELECT erpoz_merkle_append(%s::text[], %s::bigint[], %s::bytea[])"
"""Append leaves (run ids, sequence numbers, leaf hashes) in the order given; the function
locks the tree's state row until the transaction ends, so commits enter the tree one at a
time, in the order they commit."""
PG_WITH_APPEND = (
    "WITH inserted AS ({insert} RETURNING 1) SELECT erpoz_merkle_append("
    "%s::text[], %s::bigint[], %s::bytea[]) FROM (SELECT count(*) FROM inserted) AS n"
)
"""An INSERT of events and their leaves in one statement (one round trip, atomic)."""


def pg_leaves(rows: Sequence[tuple[Any, ...]]) -> tuple[list[str], list[int], list[bytes]]:
    """The arguments of ``erpoz_merkle_append`` for event rows in ``EVENT_COLUMNS`` order."""
    return (
        [r[0] for r in rows],
        [r[1] for r in rows],
        [leaf_hash(r[0], r[1], r[10]) for r in rows],
    )
