"""``verify`` of a large store in parts, each in a process of its own.

Recomputing hash chains and leaves is CPU work (two SHA-256 and a message per event, in C with
the extension, :mod:`erpoz.speedups`, after ``sqlite3`` has made a row of ten values of it); one
core does about 130,000–200,000 events a second in pure Python, 240,000 with the extension. A
store of 100,000 events or more is cut into ranges of runs (:meth:`AuditShards.run_split`);
each range is read and checked by a forked child (:func:`check_shard`) that sends back its
problems and its leaves (positions and hashes, packed), and this process checks a range of its
own meanwhile. Then it builds the tree over every leaf (it needs them all, in commit order, so
it cannot be cut by runs): its range is the smaller by :data:`TREE_SHARE` per child, so that it
finishes its range and the tree when the children finish theirs, and no core waits (the
children's leaves are the stored ones, checked; reading them again in commit order costs this
process more than the tree itself).

Children are forked, so they start in milliseconds and inherit the store object, from which
each opens a store of its own (:meth:`AuditShards.reopened`). Where fork is not available, or
this process runs other threads (forking them is unsafe), the check runs here, in one part.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .. import speedups
from ..store import AuditShards, RecordedHead
from ._verify import Problem, Shard, _Paired, check_range, check_shard

PARALLEL_FROM = 100_000
"""Below this many events, one process (forking costs more than it saves)."""
MAX_WORKERS = 4
TREE_SHARE = 0.15
"""What building the tree here costs per leaf (putting it in place, ~1 node hash), against
checking an event (reading it and its leaf, its chain hash and its leaf hash): ≈ 1 µs against
7 µs in ``python -m bench.audit_bench --phases`` (a split of 0.2 left this process 7% less
CPU than its child at 10⁶ events)."""
TREE_SHARE_C = 0.08
"""The same with the C extension (:mod:`erpoz.speedups`): ≈ 0.3 µs (leaves unpacked and put in
place, a node hash in C) against ≈ 4 µs (mostly ``sqlite3`` making the rows)."""
SLICES = 20
"""The store is cut into this many ranges of runs per part, which are then dealt out."""

_STORE: AuditShards | None = None  # what forked children inherit
_RECORDED: dict[str, RecordedHead] = {}


def workers_for(requested: int | None, events: int) -> int:
    """How many processes check a store of ``events`` events."""
    if requested is not None:
        n = max(1, requested)
    elif events < PARALLEL_FROM:
        return 1
    else:
        n = min(os.cpu_count() or 1, MAX_WORKERS)
    if n > 1 and ("fork" not in multiprocessing.get_all_start_methods() or _threaded()):
        return 1
    return n


def _threaded() -> bool:
    return threading.active_count() > 1


Packed = tuple[int, int, list[Problem], list[str], bytes, bytes, bytes, bool]


def _check_part(first: str | None, last: str | None, size: int) -> Packed:
    """In a child: read and check the runs ``first <= run_id < last``; the result packed."""
    assert _STORE is not None

    async def read(keys: bool) -> Any:
        store = _STORE.reopened()
        try:
            assert isinstance(store, AuditShards)
            return await store.audit_rows(first, last, keys=keys, as_of=size)
        finally:
            await store.close()

    rows, placed = asyncio.run(read(False))
    s = check_shard(rows, placed, _RECORDED, size)
    if s is None:  # leaves and events do not match one to one: read the leaves' keys
        rows, leaves = asyncio.run(read(True))
        s = check_shard(rows, leaves, _RECORDED, size)
    assert s is not None
    p = s.paired
    ours = b"".join(p.ours)
    stored = b"" if not s.differ else b"".join(p.stored)
    positions = array.array("q", p.positions).tobytes()
    return s.runs, s.events, s.problems, sorted(s.seen), positions, ours, stored, s.differ


def _unpacked(packed: Packed) -> Shard:
    runs, events, problems, seen, positions, ours, stored, differ = packed
    pos = array.array("q")
    pos.frombytes(positions)
    mine = [ours[i : i + 32] for i in range(0, len(ours), 32)]
    theirs = [stored[i : i + 32] for i in range(0, len(stored), 32)] if differ else mine
    paired = _Paired(pos.tolist(), mine, theirs, lambda i: ("", 0))
    return Shard(runs, events, problems, set(seen), paired, differ)


def dealt(
    ranges: list[tuple[str | None, str | None]], parts: int
) -> list[tuple[str | None, str | None]]:
    """``ranges`` (consecutive, ordered) joined into ``parts`` ranges, the first (checked here,
    which also builds the tree) smaller by :data:`TREE_SHARE` of an event per event of each
    child's: the first gets ``(1 - TREE_SHARE * (parts - 1)) / parts`` of them."""
    n = len(ranges)
    share = TREE_SHARE if speedups.C is None else TREE_SHARE_C
    here = max(0.0, (1 - share * (parts - 1)) / parts)
    ends = [round(here * n)]
    for k in range(1, parts):
        ends.append(ends[0] + round((n - ends[0]) * k / (parts - 1)))
    starts = [0, *ends[:-1]]
    return [(ranges[a][0], ranges[b - 1][1]) for a, b in zip(starts, ends, strict=True) if b > a]


async def in_parallel(
    store: AuditShards, parts: int, recorded: dict[str, RecordedHead], size: int
) -> list[Shard]:
    """The store checked in ``parts`` ranges of runs: the first here, each other in a forked
    child meanwhile; the parts' results in the ranges' order."""
    global _STORE, _RECORDED
    cuts = await store.run_split(parts * SLICES)
    bounds: list[str | None] = [None, *cuts, None]
    ranges = dealt(list(itertools.pairwise(bounds)), parts)
    _STORE, _RECORDED = store, recorded
    loop = asyncio.get_running_loop()
    try:
        with ProcessPoolExecutor(
            max_workers=max(1, len(ranges) - 1), mp_context=multiprocessing.get_context("fork")
        ) as pool:
            futures = [loop.run_in_executor(pool, _check_part, a, b, size) for a, b in ranges[1:]]
            try:
                first, last = ranges[0]
                here = await check_range(store, recorded, size, first, last)
            finally:
                done = await asyncio.gather(*futures)
    finally:
        _STORE, _RECORDED = None, {}
    return [here, *(_unpacked(p) for p in done)]
