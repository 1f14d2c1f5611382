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
