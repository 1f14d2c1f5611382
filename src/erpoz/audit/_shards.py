"""``verify`` of a large store in parts, each in a process of its own.

Recomputing hash chains and leaves is CPU work in Python (two or three SHA-256 and a few
string operations per event); one core does about 200,000 events a second. A store of 100,000
events or more is cut into ranges of runs (:meth:`AuditShards.run_split`, about as many events
each); each range is read and checked by a forked child (:func:`check_shard`) that sends back
its problems and its leaves (positions and hashes, packed). Meanwhile this process builds the
tree over the stored leaves (it needs every leaf, in commit order, so it cannot be cut by runs);
when the parts' leaves are those, it compares its root and stored nodes and checks the
checkpoints without building it again.

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
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from ..store import AuditShards, RecordedHead
from ._verify import Problem, Shard, _Paired, check_shard

T = TypeVar("T")

PARALLEL_FROM = 100_000
"""Below this many events, one process (forking costs more than it saves)."""
MAX_WORKERS = 4

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


async def in_parallel(
    store: AuditShards,
    parts: int,
    recorded: dict[str, RecordedHead],
    size: int,
    meanwhile: Callable[[], Awaitable[T]],
) -> tuple[list[Shard], T]:
    """The store checked in ``parts`` ranges of runs, each in a forked child; ``meanwhile``
    runs here while they work (the tree over the stored leaves, which needs every leaf and
    so cannot be cut by runs), and its result is returned with the parts'."""
    global _STORE, _RECORDED
    cuts = await store.run_split(parts)
    bounds: list[str | None] = [None, *cuts, None]
    ranges = list(itertools.pairwise(bounds))
    _STORE, _RECORDED = store, recorded
    loop = asyncio.get_running_loop()
    try:
        with ProcessPoolExecutor(
            max_workers=len(ranges), mp_context=multiprocessing.get_context("fork")
        ) as pool:
            futures = [loop.run_in_executor(pool, _check_part, a, b, size) for a, b in ranges]
            try:
                here = await meanwhile()
            finally:
                done = await asyncio.gather(*futures)
    finally:
        _STORE, _RECORDED = None, {}
    return [_unpacked(p) for p in done], here
