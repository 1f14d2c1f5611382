"""What the SQLite and PostgreSQL writers share: chaining an event and buffering it (and its
large payload) for the store's next commit."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

from ._model import RUN_FAILED, RUN_SUCCEEDED, RUN_WAITING, STATUS_OF, chain_hash, dumps

#: Payloads larger than this are stored once, as content-addressed blobs.
BLOB_THRESHOLD = 64 * 1024


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
    if payload is not None and len(payload) > BLOB_THRESHOLD:
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
        w.output = payload
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
