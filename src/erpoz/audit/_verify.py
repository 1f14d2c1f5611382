"""``verify``: recompute every run's hash chain, check that finished runs are sealed, recompute
the Merkle tree over the whole log, and prove the log extends the signed checkpoints given.

What each check catches (docs/governance.md has the whole threat model):

* the **chain** (per run): an event changed, removed, moved or replaced;
* the **recorded heads** and **seals**: events cut off a run, a head moved, an event appended
  after a run's terminal event (a finished run's last event is its ``run_succeeded``,
  ``run_failed`` or ``run_cancelled``; nothing may follow it);
* the **tree** (store-wide): an event that is not in the tree (added behind the store's back),
  a leaf whose event is gone (a deleted event or run), an event whose leaf records another hash
  (rewritten after it was recorded), a tree state or stored node that does not match its
  leaves;
* a **checkpoint** (outside the database, signed): anything before it rewritten, re-chained,
  reordered, removed or rolled back, even when everything in the database was made to agree.

Reads are ordered so that a store being written meanwhile does not look tampered with: the
tree's head first, then the recorded heads, then the events with their leaves (in one
transaction on SQLite and PostgreSQL; each read sees at least what the one before it saw, and
events and their leaves commit together). A large store is checked in parts by forked
processes (:mod:`._shards`).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import speedups
from ..store import (
    GENESIS,
    NODE_STRIDE,
    AuditShards,
    ChainRow,
    Leaf,
    MerkleLog,
    RecordedHead,
    Store,
    TreeHead,
    chain_hash,
    fold_right,
    heads_digest,
)
from ._proofs import (
    ProofError,
    consistency_ranges,
    inclusion_ranges,
    perfect_parts,
    root_from_inclusion,
    subtree_hash,
    verify_consistency,
)
from .checkpoints import Checkpoint, PublicKey

TERMINAL_KINDS = {
    "run_succeeded": "succeeded",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}
"""A run's terminal events and the status each leaves it in: nothing may follow one."""
_MANY = 3
"""Problems of one kind shown one by one before the rest are counted."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Where the log does not check out: the run and its first bad sequence number (or, for
    the log as a whole, an empty ``run_id`` and ``seq`` 0), what happened and how we know."""

    run_id: str
    seq: int
    what: str
    """``changed`` | ``removed`` | ``reordered`` | ``truncated`` | ``missing`` | ``unsealed``
    | ``head moved`` | ``untracked`` | ``tree`` | ``rewritten`` | ``rolled back`` |
    ``signature`` | ``other log``."""
    detail: str

    def __str__(self) -> str:
        if not self.run_id:
            return f"the log: {self.what}: {self.detail}"
        return f"run {self.run_id}, event {self.seq}: {self.what}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "what": self.what, "detail": self.detail}


@dataclass(slots=True)
class CheckpointResult:
    """How one checkpoint fared: ``ok`` when it is signed by the trusted key and the log
    extends it; ``proof`` is the RFC 9162 consistency proof from it to the current tree."""

    checkpoint: Checkpoint
    ok: bool
    detail: str
    proof: list[bytes] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        cp = self.checkpoint
        return {
            "ok": self.ok,
            "size": cp.size,
            "root": cp.root.hex(),
            "time": cp.time,
            "key_id": cp.key_id,
            "detail": self.detail,
            "consistency_proof": [h.hex() for h in self.proof],
        }


@dataclass(slots=True)
class AuditReport:
    runs: int = 0
    events: int = 0
    seconds: float = 0.0
    heads_digest: str = ""
    problems: list[Problem] = field(default_factory=list)
    origin: str | None = None
    tree_size: int | None = None
    root: str | None = None
    checkpoints: list[CheckpointResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "events_per_second": round(self.events / self.seconds) if self.seconds else None,
            "heads_digest": self.heads_digest,
            "tree": None
            if self.tree_size is None
            else {"origin": self.origin, "size": self.tree_size, "root": self.root},
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "problems": [p.to_json() for p in self.problems],
        }


# --- the chains --------------------------------------------------------------------------------
def _recompute(rows: Sequence[ChainRow]) -> list[str]:
    """Every event's chain hash, recomputed from its content and its stored ``prev_hash`` (the
    links are checked apart): :func:`erpoz.store.chain_hash`, inlined for speed (one f-string
    per event: ``str`` of an int and ``format(x, "")`` are the same text, and ``!r`` is the
    ``repr`` the writer hashed)."""
    sha = hashlib.sha256
    return [
        sha(
            f"{prev}\x1f{run}\x1f{seq}\x1f{ts!r}\x1f{kind}\x1f{step or ''}\x1f{attempt}\x1f"
            f"{data}\x1f{payload or ''}".encode()
        ).hexdigest()
        for run, seq, ts, kind, step, attempt, data, payload, prev, _ in rows
    ]


def _check_run(run_id: str, rows: Sequence[ChainRow]) -> tuple[Problem | None, int, str]:
    """Recompute one run's chain event by event; the first problem, and the (seq, hash) the
    good part ends at."""
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        _, seq, ts, kind, step, attempt, data, payload, prev_hash, stored = row
        if seq != expected_seq:
            what = "removed" if seq > expected_seq else "reordered"
            detail = f"expected event {expected_seq}, found {seq} next in the log"
            return Problem(run_id, expected_seq, what, detail), expected_seq - 1, prev
        if prev_hash != prev:
            detail = (
                "its prev_hash does not name the event before it (events were moved or replaced)"
            )
            return Problem(run_id, seq, "reordered", detail), seq - 1, prev
        if chain_hash(prev, run_id, seq, ts, kind, step, attempt, data, payload) != stored:
            what = f"{kind}{f' of step {step}' if step else ''}"
            detail = f"{what}: its content no longer matches its hash"
            return Problem(run_id, seq, "changed", detail), seq - 1, prev
        prev = stored
        expected_seq += 1
    return None, expected_seq - 1, prev


def _chains_ok(rows: Sequence[ChainRow], hashes: list[str], runs: list[_Run]) -> bool:
    """Whether every run's events are 1…n, each linked to the one before and matching its
    hash: checked for all the runs at once, with list comparisons (C loops, no Python code per
    event); any difference sends the caller to :func:`_check_run`, which names it."""
    stored = [r[9] for r in rows]
    if stored != hashes:
        return False
    expected_seqs = list(itertools.chain.from_iterable(range(1, e - s + 1) for _, s, e in runs))
    if [r[1] for r in rows] != expected_seqs:
        return False
    links = [GENESIS, *stored[:-1]]  # each event names the one before it …
    for _, start, _ in runs:
        links[start] = GENESIS  # … but a run's first names none
    return [r[8] for r in rows] == links


_Run = tuple[str, int, int]
"""``(run_id, start, end)``: a run's slice of the rows."""


def _by_run(rows: Sequence[ChainRow]) -> list[_Run]:
    """``(run_id, start, end)`` of each run's slice of ``rows`` (ordered by run)."""
    out: list[_Run] = []
    start = 0
    for rid, group in itertools.groupby(map(_RUN_ID, rows)):
        end = start + len(list(group))
        out.append((rid, start, end))
        start = end
    return out


_RUN_ID = operator.itemgetter(0)
_KIND = operator.itemgetter(3)
_TERMINAL = frozenset(TERMINAL_KINDS)


def _sealing(run_id: str, rows: Sequence[ChainRow], head: RecordedHead | None) -> Problem | None:
    """A run's log against the head its runs row recorded, and the seal of a finished run."""
    last_seq, last_hash = rows[-1][1], rows[-1][9]
    if head is None:
        return Problem(run_id, 1, "missing", "events of a run the runs table does not know")
    _, _, head_seq, head_hash, status = head
    if head_seq > last_seq:
        detail = f"the run recorded {head_seq} events, the log ends at {last_seq}"
        return Problem(run_id, last_seq + 1, "truncated", detail)
    if head_seq == last_seq and head_hash != last_hash:
        detail = "the last event's hash differs from the head the run recorded"
        return Problem(run_id, last_seq, "changed", detail)
    early = () if _TERMINAL.isdisjoint(map(_KIND, rows[:-1])) else rows[:-1]
    for i, r in enumerate(early):
        if r[3] in TERMINAL_KINDS:
            detail = (
                f"event {r[1]} ({r[3]}) ended the run; {len(rows) - 1 - i} more follow it "
                "(appended to a finished run)"
            )
            return Problem(run_id, r[1] + 1, "unsealed", detail)
    if status in TERMINAL_KINDS.values():
        kind = rows[-1][3]
        if TERMINAL_KINDS.get(kind) != status:
            detail = (
                f"the run is recorded as {status}, but its log ends with {kind} (event "
                f"{last_seq}): its end was cut off and the head moved, or the status changed"
            )
            return Problem(run_id, last_seq, "unsealed", detail)
        if head_seq != last_seq:
            detail = (
                f"the finished run's recorded head is event {head_seq}, its log ends at {last_seq}"
            )
            return Problem(run_id, head_seq, "head moved", detail)
    if head_seq < last_seq and head_seq > 0 and rows[head_seq - 1][9] != head_hash:
        detail = f"the recorded head names event {head_seq} with a hash it does not have"
        return Problem(run_id, head_seq, "head moved", detail)
    return None


# --- the tree ----------------------------------------------------------------------------------
class _Findings:
    """Problems of the tree, at most one per run (runs already named are left alone) and a few
    of each kind for the log as a whole."""

    def __init__(self, report: AuditReport, named: set[str]) -> None:
        self.report = report
        self.named = named
        self.counts: dict[str, int] = {}

    def run(self, run_id: str, seq: int, what: str, detail: str) -> None:
        if run_id in self.named:
            return
        self.named.add(run_id)
        self.report.problems.append(Problem(run_id, seq, what, detail))

    def log(self, what: str, detail: str) -> None:
        n = self.counts[what] = self.counts.get(what, 0) + 1
        if n <= _MANY:
            self.report.problems.append(Problem("", 0, what, detail))

    def close(self) -> None:
        for what, n in self.counts.items():
            if n > _MANY:
                self.report.problems.append(
                    Problem("", 0, what, f"and {n - _MANY} more like the above")
                )


class _Paired:
    """Every leaf with its event: positions, the leaf recomputed from the event (or the stored
    one, when the event is gone), the stored leaf, and (``key``) which event each is."""

    __slots__ = ("key", "ours", "positions", "stored")

    def __init__(
        self,
        positions: list[int],
        ours: list[bytes],
        stored: list[bytes],
        key: Callable[[int], tuple[str, int]],
    ) -> None:
        self.positions, self.ours, self.stored, self.key = positions, ours, stored, key


def _row_key(rows: Sequence[ChainRow]) -> Callable[[int], tuple[str, int]]:
    return lambda i: (rows[i][0], rows[i][1])


def _leaves(rows: Sequence[ChainRow]) -> list[bytes]:
    """Every event's leaf (:func:`erpoz.store.leaf_hash`, inlined: one f-string per event)."""
    sha = hashlib.sha256
    return [sha(f"\x00{r[0]}\x1f{r[1]}\x1f{r[9]}".encode()).digest() for r in rows]


def _pair_fast(
    rows: Sequence[ChainRow],
    placed: Sequence[tuple[int, bytes]],
    computed: list[bytes] | None = None,
) -> _Paired | None:
    """Events and ``(position, leaf)`` pairs read in the same order: when every leaf is the one
    its event hashes to (the leaf covers the run id and sequence number, so this also shows
    they belong together), the pairing; else ``None`` (read the leaves with their keys).
    ``computed``: the events' leaves, when already computed."""
    if computed is None:
        computed = _leaves(rows)
    if len(rows) != len(placed) or computed != [p[1] for p in placed]:
        return None
    return _Paired([p[0] for p in placed], computed, computed, _row_key(rows))


def _pair(
    rows: Sequence[ChainRow],
    leaves: Sequence[Leaf],
    size: int,
    found: _Findings,
    computed: list[bytes] | None = None,
) -> _Paired:
    """Match every event with its leaf (both come ordered by run and sequence); events without
    a leaf, and leaves of the first ``size`` whose event is gone, are problems."""
    if computed is None:
        computed = _leaves(rows)
    if (
        len(rows) == len(leaves)
        and [r[1] for r in rows] == [leaf[1] for leaf in leaves]
        and [r[0] for r in rows] == [leaf[0] for leaf in leaves]
    ):
        positions = [leaf[2] for leaf in leaves]
        return _Paired(positions, computed, [leaf[3] for leaf in leaves], _row_key(rows))
    by_key = {(leaf[0], leaf[1]): leaf for leaf in leaves}
    keys: list[tuple[str, int]] = []
    out = _Paired([], [], [], keys.__getitem__)
    for r, mine in zip(rows, computed, strict=True):
        leaf = by_key.pop((r[0], r[1]), None)
        if leaf is None:
            detail = (
                f"{r[3]} is not in the Merkle tree: it was written into the database "
                "behind the store's back"
            )
            found.run(r[0], r[1], "untracked", detail)
            continue
        out.positions.append(leaf[2])
        out.ours.append(mine)
        out.stored.append(leaf[3])
        keys.append((r[0], r[1]))
    for (run_id, seq), leaf in sorted(by_key.items()):
        if leaf[2] >= size:
            continue  # recorded after the events were read
        detail = f"the Merkle tree holds this event (leaf {leaf[2]}); the log no longer does"
        found.run(run_id, seq, "removed", detail)
        out.positions.append(leaf[2])
        out.ours.append(leaf[3])
        out.stored.append(leaf[3])
        keys.append((run_id, seq))
    return out


def _rewritten(paired: _Paired, found: _Findings) -> bool:
    """Name the events whose stored leaf is not the one they hash to; whether there are any."""
    if paired.ours == paired.stored:
        return False
    for i, (a, b) in enumerate(zip(paired.ours, paired.stored, strict=True)):
        if a != b:
            run_id, seq = paired.key(i)
            detail = (
                f"its leaf in the Merkle tree (leaf {paired.positions[i]}) records another "
                "hash: the event was rewritten after it was recorded"
            )
            found.run(run_id, seq, "changed", detail)
    return True


def _placed(
    positions: list[int], hashes: list[bytes], size: int, found: _Findings
) -> list[bytes] | None:
    """The first ``size`` leaves in the order of their positions; ``None`` (and a problem)
    unless every position is there exactly once."""
    slots: list[bytes | None] = [None] * size
    inside = 0
    for p, h in zip(positions, hashes, strict=True):
        if p < size:
            slots[p] = h
            inside += 1
    if inside == size and None not in slots:
        return slots  # type: ignore[return-value]  # no None left
    gone = [i for i, h in enumerate(slots) if h is None]
    if inside > size - len(gone):
        found.log("tree", f"{inside - size + len(gone)} leaves share a position with another")
    if gone:
        found.log(
            "tree",
            f"{len(gone)} of the tree's {size} leaves are gone (the first: leaf {gone[0]}): "
            "the tree was cut",
        )
    return None


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree's hash, level by level (level 0: the leaves)."""
    sha = hashlib.sha256
    c = speedups.C
    levels = [leaves]
    level = leaves
    while len(level) > 1:
        if c is not None:
            level = c.parents(level)  # the same pairs and hashes, in C
        else:
            pairs = zip(level[0::2], level[1::2], strict=False)  # an odd last one waits a level
            level = [sha(b"\x01" + a + b).digest() for a, b in pairs]
        levels.append(level)
    return levels


def _root(levels: list[list[bytes]], size: int) -> bytes:
    """The root of the tree of the first ``size`` leaves, from the complete subtrees."""
    return fold_right([levels[lvl][start >> lvl] for start, lvl in perfect_parts(0, size)])


async def _check_tree(
    store: MerkleLog,
    head: TreeHead,
    paired: _Paired,
    differ: bool,
    found: _Findings,
) -> list[list[bytes]] | None:
    """The whole tree against the events (``paired``: every leaf, recomputed and stored) and
    against its stored state. Returns the complete subtrees of the leaves recomputed from the
    events (what checkpoints are checked against), ``None`` when leaves are missing and no root
    can be computed."""
    size = head.size
    stored = _placed(paired.positions, paired.stored, size, found)
    if stored is None:
        return None
    state = _levels(stored)
    if _root(state, size) != head.root:
        found.log("tree", "the tree's stored state (its frontier) does not match its leaves")
    for level in range(NODE_STRIDE, len(state), NODE_STRIDE):
        want = state[level]
        have = await store.tree_hashes(level, 0, len(want))
        if have != want:
            first = next(
                (i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b),
                min(len(have), len(want)),
            )
            found.log(
                "tree",
                f"the tree's stored nodes of level {level} do not match its leaves (from node "
                f"{first}; {len(have)} stored, {len(want)} expected)",
            )
    if not differ:
        return state
    ours = _placed(paired.positions, paired.ours, size, found)
    return None if ours is None else _levels(ours)


# --- checkpoints -----------------------------------------------------------------------------
def _check_signature(cp: Checkpoint, key: PublicKey, head: TreeHead) -> str | None:
    if cp.key_id != key.key_id:
        return (
            f"signed by another key (key id {cp.key_id}; the trusted key is {key.key_id}): "
            "not a checkpoint of yours, or a forged one"
        )
    if not cp.signed_by(key):
        return "its signature does not verify: the checkpoint was altered or forged"
    if cp.origin != head.origin:
        return (
            f"a checkpoint of another log (origin {cp.origin}); this store is log "
            f"{head.origin}: the database was replaced, or the checkpoint is another store's"
        )
    return None


async def _check_checkpoints(
    store: MerkleLog,
    head: TreeHead,
    checkpoints: Sequence[Checkpoint],
    key: PublicKey,
    levels: list[list[bytes]] | None,
    report: AuditReport,
) -> None:
    for cp in checkpoints:
        when = f"the checkpoint of {cp.time} ({cp.size} events)"
        bad = _check_signature(cp, key, head)
        what = "other log" if bad and bad.startswith("a checkpoint of another log") else "signature"
        if bad is None and cp.size > head.size:
            what = "rolled back"
            bad = (
                f"{when} covers more than the log holds now ({head.size} events): events were "
                "removed, or the database was replaced by an older copy"
            )
        proof: list[bytes] = []
        if bad is None:
            try:
                proof = await _consistency(store, cp.size, head.size)
            except ProofError as exc:
                proof = []
                bad, what = f"{when}: no consistency proof can be made ({exc})", "tree"
            if bad is None and levels is not None and _root(levels, cp.size) != cp.root:
                what = "rewritten"
                bad = (
                    f"the log's first {cp.size} events no longer hash to the root signed in "
                    f"{when.removeprefix('the ')}: events before it were changed, removed, "
                    "reordered or re-chained"
                )
            elif bad is None and not verify_consistency(
                cp.size, head.size, cp.root, head.root, proof
            ):
                what = "rewritten"
                bad = (
                    f"the store's tree is not an extension of {when}: the consistency proof "
                    "fails (events before it were rewritten, or the tree was rebuilt)"
                )
        if bad is None:
            detail = f"{when}: the log extends it ({head.size} events now)"
            report.checkpoints.append(CheckpointResult(cp, True, detail, proof))
        else:
            report.checkpoints.append(CheckpointResult(cp, False, bad, proof))
            report.problems.append(Problem("", 0, what, bad))


async def _consistency(store: MerkleLog, old: int, new: int) -> list[bytes]:
    cache: dict[tuple[int, int], bytes] = {}
    return [await _cached(store, a, b, cache) for a, b in consistency_ranges(old, new)]


async def _cached(
    store: MerkleLog, start: int, end: int, cache: dict[tuple[int, int], bytes]
) -> bytes:
    got = cache.get((start, end))
    if got is None:
        got = cache[(start, end)] = await subtree_hash(store, start, end)
    return got


async def _check_run_leaves(
    store: MerkleLog,
    head: TreeHead,
    paired: _Paired,
    checkpoints: Sequence[Checkpoint],
    key: PublicKey | None,
    found: _Findings,
    report: AuditReport,
) -> None:
    """One run: its leaves are in the stored tree (inclusion proofs); with checkpoints, the
    tree extends each and the run's older leaves are in it."""
    cache: dict[tuple[int, int], bytes] = {}
    pairs = list(enumerate(zip(paired.positions, paired.ours, strict=True)))
    try:
        for i, (pos, leaf) in pairs:
            if pos < head.size and not await _included(
                store, pos, head.size, leaf, head.root, cache
            ):
                run_id, seq = paired.key(i)
                found.run(run_id, seq, "tree", f"leaf {pos} is not in the tree the store holds")
        if key is None:
            return
        await _check_checkpoints(store, head, checkpoints, key, None, report)
        for result in report.checkpoints:
            cp = result.checkpoint
            for i, (pos, leaf) in pairs:
                if (
                    result.ok
                    and pos < cp.size
                    and not await _included(store, pos, cp.size, leaf, cp.root, cache)
                ):
                    run_id, seq = paired.key(i)
                    result.ok = False
                    result.detail = f"event {seq} of run {run_id} is not in it"
                    found.run(run_id, seq, "rewritten", f"not in the checkpoint of {cp.time}")
    except ProofError as exc:
        found.log("tree", str(exc))


async def _included(
    store: MerkleLog,
    pos: int,
    size: int,
    leaf: bytes,
    root: bytes,
    cache: dict[tuple[int, int], bytes],
) -> bool:
    path = [await _cached(store, a, b, cache) for a, b in inclusion_ranges(pos, size)]
    return root_from_inclusion(pos, size, leaf, path) == root


# --- verify --------------------------------------------------------------------------------------
@dataclass(slots=True)
class Shard:
    """What the check of a part of the log (a range of runs) found: its counts, its runs'
    problems, the runs it saw, and every leaf with its position (recomputed from its event,
    and as stored)."""

    runs: int
    events: int
    problems: list[Problem]
    seen: set[str]
    paired: _Paired
    differ: bool


def check_shard(
    rows: Sequence[ChainRow],
    leaves: Sequence[Leaf] | Sequence[tuple[int, bytes]] | None,
    recorded: dict[str, RecordedHead],
    size: int,
) -> Shard | None:
    """Chains, heads and seals of the runs in ``rows``, and their events against their
    leaves: ``Leaf`` rows, or (quicker) ``(position, leaf)`` pairs in the events' order, for
    which ``None`` means they do not match one to one (check again with ``Leaf`` rows to name
    what differs); ``None`` leaves: the store keeps no tree."""
    c = speedups.C
    computed: list[bytes] | None = None
    if c is not None:  # chains, links and leaves in C: the first row that does not check out
        bad, computed, runs = c.scan(rows, GENESIS, leaves is not None)
        hashes: list[str] = []
    paired: _Paired | None = None
    if leaves and len(leaves[0]) == 2:
        paired = _pair_fast(rows, leaves, computed)  # type: ignore[arg-type]
        if paired is None:
            return None
    report = AuditReport()
    named: set[str] = set()
    if c is None:
        hashes = _recompute(rows)
        runs = _by_run(rows)
        bad = -1 if _chains_ok(rows, hashes, runs) else 0  # the usual case: they all check out
    for rid, start, end in runs:
        run_rows = rows[start:end]
        report.runs += 1
        report.events += end - start
        if (
            bad < 0
            or end <= bad
            or (
                c.scan(run_rows, GENESIS, False)[0] < 0  # the extension recomputes the hashes
                if c is not None
                else _chains_ok(run_rows, hashes[start:end], [(rid, 0, end - start)])
            )
        ):
            problem = _sealing(rid, run_rows, recorded.get(rid))
        else:
            problem, good, _ = _check_run(rid, run_rows)
            if problem is None:  # pragma: no cover - the two checks recompute the same
                problem = Problem(rid, good + 1, "changed", "the chain does not recompute")
        if problem is not None:
            report.problems.append(problem)
            named.add(rid)
    seen = {rid for rid, _, _ in runs}
    found = _Findings(report, named)
    if paired is None:
        if leaves is None:
            paired = _Paired([], [], [], _row_key(rows))
        else:
            paired = _pair(rows, leaves, size, found, computed)  # type: ignore[arg-type]
    differ = _rewritten(paired, found)
    found.close()
    return Shard(report.runs, report.events, report.problems, seen, paired, differ)


async def check_range(
    store: AuditShards,
    recorded: dict[str, RecordedHead],
    size: int,
    first: str | None = None,
    last: str | None = None,
    run_id: str | None = None,
) -> Shard:
    """The runs ``first <= run_id < last`` (or one run, or all) checked in this process: events
    and leaves read together, as the log stood at the tree size the heads were read with;
    quickly when they match, with their keys when they do not."""
    rows, placed = await store.audit_rows(first, last, keys=False, as_of=size, run_id=run_id)
    shard = check_shard(rows, placed, recorded, size)
    if shard is None:
        rows, leaves = await store.audit_rows(first, last, as_of=size, run_id=run_id)
        shard = check_shard(rows, leaves, recorded, size)
    assert shard is not None
    return shard


async def verify(
    store: Store,
    run_id: str | None = None,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    public_key: PublicKey | None = None,
    workers: int | None = None,
) -> AuditReport:
    """Check one run (or every run): chains, recorded heads, seals, the Merkle tree (the whole
    tree for every run; a run's own leaves and their inclusion for one) and, given
    ``checkpoints`` and the ``public_key`` they must be signed with, that the log extends them.

    ``workers``: how many processes check a large store in parts (default: one per CPU, up
    to 4, for stores of 100,000 events or more on SQLite or PostgreSQL; 1: this process only).
    """
    if checkpoints and public_key is None:
        raise ValueError("checkpoints are checked against a trusted public key: pass public_key")
    t0 = time.perf_counter()
    tree = store if isinstance(store, MerkleLog) else None
    head, heads = await _heads(store, tree)
    size = head.size if head is not None else 0
    recorded = {h[0]: h for h in heads}
    shards = await _shards_of(store, tree, recorded, size, run_id, workers)
    report = AuditReport()
    named = _tally(report, shards, heads, run_id)
    if tree is not None and head is not None:
        report.origin, report.tree_size, report.root = head.origin, head.size, head.root.hex()
        found = _Findings(report, named)
        paired = _merged([s.paired for s in shards])
        if run_id is None:
            differ = any(s.differ for s in shards)
            levels = await _check_tree(tree, head, paired, differ, found)
            if public_key is not None:
                await _check_checkpoints(tree, head, checkpoints, public_key, levels, report)
                if levels is None:
                    _unverifiable(report.checkpoints)
        else:
            await _check_run_leaves(tree, head, paired, checkpoints, public_key, found, report)
        found.close()
    report.heads_digest = heads_digest(heads)
    report.seconds = time.perf_counter() - t0
    return report


async def _heads(
    store: Store, tree: MerkleLog | None
) -> tuple[TreeHead | None, list[RecordedHead]]:
    """The tree's head and the runs' recorded heads (in one snapshot when the store can)."""
    if tree is not None and isinstance(store, AuditShards):
        return await store.audit_head()  # the log is read as of then
    head = await tree.tree_head() if tree is not None else None
    return head, await store.recorded_heads()


async def _shards_of(
    store: Store,
    tree: MerkleLog | None,
    recorded: dict[str, RecordedHead],
    size: int,
    run_id: str | None,
    workers: int | None,
) -> list[Shard]:
    """The chains checked: in parts (processes) for a large store that can be read so."""
    if tree is not None and isinstance(store, AuditShards):
        if run_id is not None:
            return [await check_range(store, recorded, size, run_id=run_id)]
        from . import _shards  # it checks parts of the log with check_shard

        parts = _shards.workers_for(workers, size)
        if parts > 1:
            return await _shards.in_parallel(store, parts, recorded, size)
        return [await check_range(store, recorded, size)]
    rows = await store.chain_rows(run_id)
    some = await tree.tree_leaves(run_id) if tree is not None else None
    one = check_shard(rows, some, recorded, size)
    assert one is not None
    return [one]


def _tally(
    report: AuditReport, shards: list[Shard], heads: list[RecordedHead], run_id: str | None
) -> set[str]:
    """Add up the shards, and name the runs whose head is recorded but whose events are gone;
    the runs named in a problem."""
    named: set[str] = set()
    for shard in shards:
        report.runs += shard.runs
        report.events += shard.events
        report.problems += shard.problems
        named.update(p.run_id for p in shard.problems)
    seen = set().union(*(s.seen for s in shards))
    for h in heads:
        if (run_id is None or h[0] == run_id) and h[0] not in seen and h[2] > 0:
            report.runs += 1
            if h[0] not in named:
                named.add(h[0])
                report.problems.append(
                    Problem(h[0], 1, "removed", f"the run recorded {h[2]} events; none are left")
                )
    return named


def _unverifiable(results: list[CheckpointResult]) -> None:
    for c in results:
        if c.ok:
            c.ok = False
            c.detail = "cannot be checked: the tree's leaves are not all there"


def _merged(parts: list[_Paired]) -> _Paired:
    if len(parts) == 1:
        return parts[0]
    out = _Paired([], [], [], lambda i: ("", 0))  # the parts named their problems themselves
    for p in parts:
        out.positions += p.positions
        out.ours += p.ours
        out.stored += p.stored
    return out
