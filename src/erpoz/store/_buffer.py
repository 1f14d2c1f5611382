"""What the SQLite and PostgreSQL writers share: chaining an event and buffering it (and its
large payload) for the store's next commit."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

from ._model import RUN_FAILED, RUN_SUCCEEDED, RUN_WAITING, STATUS_OF, chain_hash, dumps
from ._pieces import MIN_SPLIT, split_payload

#: Payloads larger than this (and not split into pieces) are stored once, as content-addressed
#: blobs.
BLOB_THRESHOLD = 64 * 1024
SEEN_PIECES = 1 << 20
"""How many piece keys a store remembers having buffered (to skip writing them again)."""

DURABILITIES = ("sync", "batch", "effects")
"""What the durable stores take: ``sync`` commits a step's success before any dependent
starts; ``batch`` every 50 ms / 512 events; ``effects`` before something leaves the process."""
EFFECTS_ROWS = 4096
"""``effects`` durability commits when this many events are held, to bound memory..."""
EFFECTS_SECONDS = 1.0
"""... and the heartbeat commits what was held this long, to bound what a crash makes redo."""
BATCH_ROWS = 512
BATCH_SECONDS = 0.05
"""``batch`` durability commits when this many events are held or this long after the last
commit."""


class _Buffers(Protocol):
    _pending: list[tuple[Any, ...]]
    _pending_blobs: dict[str, str]


class BufferedWriter(Protocol):
    run_id: str
    seq: int
    head: str
    status: str
    output: str | None
    error: str | None
    waiting_step: str | None
    wake_at: float | None
    wake_on: str | None


class _WriterStore(_Buffers, Protocol):
    """What :class:`StoreWriter` needs of its store (SQLite's, PostgreSQL's)."""

    durability: str
    _last_commit: float
    _dirty: dict[str, Any]
    _owned: dict[str, Any]
    _releasing: list[Any]
    _refused: dict[str, str]

    def _lost_error(self, run_id: str) -> Exception: ...

    def _check_refused(self, run_id: str) -> None: ...


class StoreWriter:
    """A run's writer on a durable store: events are chained and buffered (:func:`buffer_event`)
    and committed as the store's durability says. What differs between stores is how a commit
    is made (:meth:`_commit_run`, :meth:`_commit_batch`) and what stands for the run's row
    until the commit (:meth:`_projection`)."""

    __slots__ = (
        "_store",
        "cancel_requested",
        "error",
        "head",
        "lost",
        "output",
        "owner",
        "run_id",
        "seq",
        "status",
        "waiting_step",
        "wake_at",
        "wake_on",
    )

    _store: _WriterStore

    def __init__(
        self, store: Any, run_id: str, owner: str | None, seq: int, head: str, status: str
    ) -> None:
        self._store = store
        self.run_id = run_id
        self.owner = owner
        self.seq = seq
        self.head = head
        self.status = status
        self.output: str | None = None
        self.error: str | None = None
        self.waiting_step: str | None = None
        self.wake_at: float | None = None
        self.wake_on: str | None = None
        self.cancel_requested = False
        self.lost = False

    def _projection(self) -> Any:
        """What the store's next commit writes the run's row from."""
        raise NotImplementedError

    async def _commit_run(self) -> None:
        """Commit what the store holds (with this run's events), now."""
        raise NotImplementedError

    async def _commit_batch(self) -> None:
        """Commit what the store holds: ``batch`` durability's size or time has come."""
        raise NotImplementedError

    def append(
        self,
        kind: str,
        step: str | None = None,
        attempt: int = 0,
        data: dict[str, Any] | None = None,
        payload: str | None = None,
    ) -> None:
        if self.lost:
            return  # another process runs it now: nothing of this one's is recorded
        if buffer_event(self, self._store, kind, step, attempt, data, payload):
            # the runs row is a projection: refresh it when the status moves, not per event
            self._store._dirty[self.run_id] = self._projection()

    async def flush(self) -> None:
        store = self._store
        mode = store.durability
        if mode == "sync":
            await self._commit_run()
        elif mode == "batch":
            if (
                len(store._pending) >= BATCH_ROWS
                or time.monotonic() - store._last_commit >= BATCH_SECONDS
            ):
                await self._commit_batch()
        elif len(store._pending) >= EFFECTS_ROWS:  # effects: only to bound what is held
            await self._commit_run()
        self._check()

    async def settle(self) -> None:
        store = self._store
        if store.durability == "effects" and (store._pending or store._dirty):
            await self._commit_run()
        self._check()

    async def commit(self) -> None:
        await self._commit_run()
        self._check()

    def _check(self) -> None:
        store = self._store
        if self.lost:
            store._refused.pop(self.run_id, None)
            raise store._lost_error(self.run_id)
        store._check_refused(self.run_id)

    async def release(self) -> None:
        store = self._store
        store._owned.pop(self.run_id, None)
        if self.lost:
            raise store._lost_error(self.run_id)
        store._releasing.append((self.run_id, self.owner))
        store._dirty[self.run_id] = self._projection()
        await self._commit_run()
        store._check_refused(self.run_id)


def buffer_event(
    w: BufferedWriter,
    store: _Buffers,
    kind: str,
    step: str | None,
    attempt: int,
    data: dict[str, Any] | None,
    payload: str | None,
) -> bool:
    """Chain the event onto ``w``'s head and buffer its row; returns whether the run's
    status moved (then the store must refresh the run's row: a projection of its log)."""
    seq = w.seq = w.seq + 1
    ts = time.time()
    dj = dumps(data) if data else "{}"
    h = chain_hash(w.head, w.run_id, seq, ts, kind, step, attempt, dj, payload)
    blob = None
    stored = payload
    if payload is not None and len(payload) >= MIN_SPLIT:
        stored = _split(store, payload)
        if stored is payload and len(payload) > BLOB_THRESHOLD:
            blob = hashlib.sha256(payload.encode()).hexdigest()
            store._pending_blobs[blob] = payload
            stored = None
    store._pending.append((w.run_id, seq, ts, kind, step, attempt, dj, stored, blob, w.head, h))
    w.head = h
    status = STATUS_OF.get(kind)
    if status is None:
        return False
    w.status = status
    if kind == RUN_SUCCEEDED:
        w.output = payload if stored is None else stored  # split: the runs row refers too
    elif kind == RUN_FAILED:
        w.error = (data or {}).get("error")
    if kind == RUN_WAITING and data:
        w.waiting_step, w.wake_at, w.wake_on = (
            data.get("step"),
            data.get("wake_at"),
            data.get("wake_on"),
        )
    else:
        w.waiting_step = w.wake_at = w.wake_on = None
    return True


def _split(store: _Buffers, payload: str) -> str:
    """The payload's stored text (:func:`split_payload`); its pieces join the store's pending
    blobs, but for those this store buffered before (pieces are never deleted)."""
    pieces: dict[str, str] = {}
    stored = split_payload(payload, pieces)
    seen: set[str] | None = getattr(store, "_seen_pieces", None)
    if seen is None:
        store._pending_blobs.update(pieces)
        return stored
    if len(seen) > SEEN_PIECES:
        seen.clear()
    pending = store._pending_blobs
    for key, text in pieces.items():
        if key not in seen:
            pending[key] = text
            seen.add(key)
    return stored
