"""The records of the run store: events, runs, and the hash chain that links a run's events."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from .. import speedups

GENESIS = "0" * 64
"""``prev_hash`` of a run's first event."""

RUN_STARTED = "run_started"
RUN_SUCCEEDED = "run_succeeded"
RUN_FAILED = "run_failed"
RUN_WAITING = "run_waiting"
RUN_RESUMED = "run_resumed"
RUN_CANCELLED = "run_cancelled"
RUN_QUEUED = "run_queued"
STEP_STARTED = "step_started"
STEP_SUCCEEDED = "step_succeeded"
STEP_FAILED = "step_failed"
STEP_RETRIED = "step_retried"
STEP_SKIPPED = "step_skipped"
REVIEW_REQUESTED = "review_requested"
REVIEW_RESOLVED = "review_resolved"
TIMER_SET = "timer_set"
MESSAGE_RECEIVED = "message_received"
EVENT_SET = "event_set"

ENGINE_KINDS = frozenset(
    {
        RUN_STARTED,
        RUN_SUCCEEDED,
        RUN_FAILED,
        RUN_WAITING,
        RUN_RESUMED,
        RUN_CANCELLED,
        RUN_QUEUED,
        STEP_STARTED,
        STEP_SUCCEEDED,
        STEP_FAILED,
        STEP_RETRIED,
        STEP_SKIPPED,
        REVIEW_REQUESTED,
        REVIEW_RESOLVED,
        TIMER_SET,
        MESSAGE_RECEIVED,
        EVENT_SET,
    }
)
"""Kinds only the engine writes; steps emit their own kinds (``model_called`` …) via ``ctx``."""

STATUS_OF = {
    RUN_STARTED: "running",
    RUN_RESUMED: "running",
    RUN_SUCCEEDED: "succeeded",
    RUN_FAILED: "failed",
    RUN_WAITING: "waiting",
    RUN_CANCELLED: "cancelled",
    RUN_QUEUED: "queued",
}
"""The run status each run-level event leads to."""

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def chain_hash(
    prev_hash: str,
    run_id: str,
    seq: int,
    ts: float,
    kind: str,
    step: str | None,
    attempt: int,
    data: str,
    payload: str | None,
) -> str:
    """SHA-256 of an event chained to its predecessor; the audit part recomputes exactly this
    (in C with the extension: :mod:`erpoz.speedups`)."""
    c = speedups.C
    if c is not None:
        return c.chain_hash(prev_hash, run_id, seq, ts, kind, step, attempt, data, payload)
    msg = "\x1f".join(
        (prev_hash, run_id, str(seq), repr(ts), kind, step or "", str(attempt), data, payload or "")
    )
    return hashlib.sha256(msg.encode()).hexdigest()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
"""Built once: ``json.dumps`` with options builds a new encoder per call (about half its cost
for an event's small dict)."""


_C_ENCODE: Any = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
)
"""``_ENCODER``'s C encoder, made once: ``encode`` makes it again at every call (a third of
an event's JSON). Made without the circular-reference check (a cycle is a RecursionError)."""


def dumps(obj: Any) -> str:
    """Compact JSON for event data (small dicts of plain values)."""
    if _C_ENCODE is not None and type(obj) is dict:
        return "".join(_C_ENCODE(obj, 0))
    return _ENCODER.encode(obj)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's append-only log."""

    run_id: str
    seq: int
    ts: float
    kind: str
    step: str | None
    attempt: int
    data: dict[str, Any]
    payload: str | None
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "step": self.step,
            "attempt": self.attempt,
            "data": self.data,
            "payload": None if self.payload is None else json.loads(self.payload),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


ChainRow = tuple[str, int, float, str, "str | None", int, str, "str | None", str, str]
"""``(run_id, seq, ts, kind, step, attempt, data_text, payload_text, prev_hash, hash)``."""

RecordedHead = tuple[str, float, int, str, str]
"""``(run_id, created, head_seq, head_hash, status)`` as the runs row holds them."""


def heads_digest(heads: list[RecordedHead]) -> str:
    """One SHA-256 over every run's recorded head, in creation order: a fingerprint of the
    whole store that an auditor can write down and compare later."""
    h = hashlib.sha256()
    for run_id, _created, head_seq, head_hash, _status in heads:
        h.update(f"{run_id}\x1f{head_seq}\x1f{head_hash}\n".encode())
    return h.hexdigest()


EVENT_COLUMNS = "run_id, seq, ts, kind, step, attempt, data, payload, blob, prev_hash, hash"
"""The columns of an event row, in the order a store's buffer holds them (and the chain hashes)."""

RUN_ROW_COLUMNS = (
    "run_id, flow, source, fingerprint, status, created, updated, parent_run_id, replay_from, "
    "inputs, head_seq, head_hash, owner, lease_until, tenant, queue"
)
"""The columns a new run's row is inserted with (:meth:`NewRun.row`)."""


@dataclass(frozen=True, slots=True)
class NewRun:
    """What the engine knows when it starts a run."""

    run_id: str
    flow: str
    fingerprint: str
    inputs: str
    source: str | None = None
    parent_run_id: str | None = None
    replay_from: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    patches: tuple[str, ...] = ()

    @property
    def tenant(self) -> str:
        """The run's tenant: its ``tenant`` tag, ``"-"`` without one."""
        return self.tags.get("tenant", "-")

    def row(
        self,
        status: str,
        now: float,
        *,
        owner: str | None = None,
        lease_until: float | None = None,
        queue: str | None = None,
        head: tuple[int, str] = (0, GENESIS),
    ) -> tuple[Any, ...]:
        """The run's new ``runs`` row, in the order of :data:`RUN_ROW_COLUMNS`."""
        return (
            self.run_id,
            self.flow,
            self.source,
            self.fingerprint,
            status,
            now,
            now,
            self.parent_run_id,
            self.replay_from,
            self.inputs,
            head[0],
            head[1],
            owner,
            lease_until,
            self.tenant,
            queue,
        )

    def started_data(self) -> dict[str, Any]:
        """The data of this run's ``run_started`` event (the same in every store)."""
        data: dict[str, Any] = {"flow": self.flow, "fingerprint": self.fingerprint}
        if self.source:
            data["source"] = self.source
        if self.parent_run_id:
            data["parent_run_id"] = self.parent_run_id
            data["replay_from"] = self.replay_from
        if self.tags:
            data["tags"] = self.tags
        if self.version is not None:
            data["version"] = self.version
        if self.patches:
            data["patches"] = sorted(self.patches)
        return data


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as listed: a projection of its events kept next to them for fast queries."""

    run_id: str
    flow: str
    source: str | None
    fingerprint: str
    status: str
    created: float
    updated: float
    parent_run_id: str | None
    replay_from: str | None
    inputs: str
    output: str | None
    error: str | None
    waiting_step: str | None
    head_seq: int
    head_hash: str
    owner: str | None
    cancel_requested: bool
    tenant: str = "-"
    queue: str | None = None
    """The queue a worker takes the run from (``None``: a process started it for itself)."""
    claims: int = 0
    """How often a worker took the run (more than once: a worker died or handed it back)."""
    wake_at: float | None = None
    """When a waiting run is due to go on (a timer, or a ``recv`` / ``get_event`` timeout);
    ``None`` for a run that waits for a person, or does not wait."""
    wake_on: str | None = None
    """What else wakes it before then: a message topic (``msg:TOPIC``) or another run's event
    (``event:RUN:KEY``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "run_id": self.run_id,
            "flow": self.flow,
            "source": self.source,
            "status": self.status,
            "created": self.created,
            "updated": self.updated,
            "parent_run_id": self.parent_run_id,
            "replay_from": self.replay_from,
            "inputs": json.loads(self.inputs),
            "output": None if self.output is None else json.loads(self.output),
            "error": self.error,
            "waiting_step": self.waiting_step,
            "events": self.head_seq,
            "head_hash": self.head_hash,
            "fingerprint": self.fingerprint,
            "queue": self.queue,
            "claims": self.claims,
            "wake_at": self.wake_at,
            "wake_on": self.wake_on,
        }
