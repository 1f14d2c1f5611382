"""Tamper evidence: recompute every run's hash chain and the chain over run heads; export.

Each event's hash covers its predecessor's hash, so changing, removing or reordering an event
breaks the chain at that spot; the runs table records each run's head (sequence and hash) when
its status moves, so cutting events off the end shows too. ``verify`` names the first event
that does not check out and says how. ``lineage`` (see :mod:`.lineage`) says which inputs,
models, tools and decisions produced a step's output.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..store import GENESIS, Store, chain_hash
from ..store._model import ChainRow, RecordedHead
from .lineage import Lineage, StepLineage, UnknownStep, lineage

__all__ = [
    "AuditReport",
    "Lineage",
    "Problem",
    "StepLineage",
    "UnknownStep",
    "export",
    "heads_digest",
    "lineage",
    "verify",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """Where a run's log does not check out: the run, the first bad sequence number, and how."""

    run_id: str
    seq: int
    what: str  # "changed" | "removed" | "reordered" | "truncated" | "missing"
    detail: str

    def __str__(self) -> str:
        return f"run {self.run_id}, event {self.seq}: {self.what}: {self.detail}"


@dataclass(slots=True)
class AuditReport:
    runs: int = 0
    events: int = 0
    seconds: float = 0.0
    heads_digest: str = ""
    problems: list[Problem] = field(default_factory=list)

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
            "problems": [
                {"run_id": p.run_id, "seq": p.seq, "what": p.what, "detail": p.detail}
                for p in self.problems
            ],
        }


def _check_run(run_id: str, rows: list[ChainRow]) -> tuple[Problem | None, int, str]:
    """Recompute one run's chain; the first problem, and the (seq, hash) it ends at."""
    prev = GENESIS
    expected_seq = 1
    for row in rows:
        _, seq, ts, kind, step, attempt, data, payload, prev_hash, stored = row
        if seq != expected_seq:
            what = "removed" if seq > expected_seq else "reordered"
            return (
                Problem(
                    run_id,
                    expected_seq,
                    what,
                    f"expected event {expected_seq}, found {seq} next in the log",
                ),
                expected_seq - 1,
                prev,
            )
        if prev_hash != prev:
            return (
                Problem(
                    run_id,
                    seq,
                    "reordered",
                    "its prev_hash does not name the event before it (events were moved "
                    "or replaced)",
                ),
                seq - 1,
                prev,
            )
        recomputed = chain_hash(prev, run_id, seq, ts, kind, step, attempt, data, payload)
        if recomputed != stored:
            return (
                Problem(
                    run_id,
                    seq,
                    "changed",
                    f"{kind}{f' of step {step}' if step else ''}: its content no longer "
                    "matches its hash",
                ),
                seq - 1,
                prev,
            )
        prev = stored
        expected_seq += 1
    return None, expected_seq - 1, prev


def _by_run(rows: list[ChainRow]) -> Iterator[tuple[str, list[ChainRow]]]:
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] != rows[start][0]:
            yield rows[start][0], rows[start:i]
            start = i


def heads_digest(heads: list[RecordedHead]) -> str:
    """One SHA-256 over every run's recorded head, in creation order: a fingerprint of the
    whole store that an auditor can write down and compare later."""
    h = hashlib.sha256()
    for run_id, _created, head_seq, head_hash, _status in heads:
        h.update(f"{run_id}\x1f{head_seq}\x1f{head_hash}\n".encode())
    return h.hexdigest()


async def verify(store: Store, run_id: str | None = None) -> AuditReport:
    """Recompute the chain of one run (or of every run) and check it against recorded heads."""
    t0 = time.perf_counter()
    rows, heads = await store.chain_and_heads(run_id)  # one snapshot: no false "truncated"
    report = AuditReport()
    recorded = {h[0]: h for h in heads}
    seen: set[str] = set()
    for rid, run_rows in _by_run(rows):
        seen.add(rid)
        report.runs += 1
        report.events += len(run_rows)
        problem, last_seq, last_hash = _check_run(rid, run_rows)
        if problem is not None:
            report.problems.append(problem)
            continue
        head = recorded.get(rid)
        if head is None:
            report.problems.append(
                Problem(rid, 1, "missing", "events of a run the runs table does not know")
            )
        elif head[2] > last_seq:
            report.problems.append(
                Problem(
                    rid,
                    last_seq + 1,
                    "truncated",
                    f"the run recorded {head[2]} events, the log ends at {last_seq}",
                )
            )
        elif head[2] == last_seq and head[3] != last_hash:
            report.problems.append(
                Problem(
                    rid,
                    last_seq,
                    "changed",
                    "the last event's hash differs from the head the run recorded",
                )
            )
    for h in heads:
        if (run_id is None or h[0] == run_id) and h[0] not in seen and h[2] > 0:
            report.runs += 1
            report.problems.append(
                Problem(h[0], 1, "removed", f"the run recorded {h[2]} events; none are left")
            )
    report.heads_digest = heads_digest(heads)
    report.seconds = time.perf_counter() - t0
    return report


async def export(store: Store, *, since: float = 0.0) -> Iterator[dict[str, Any]]:
    """Records for an AI system's record-keeping, one per event of runs created since ``since``
    (epoch seconds): timestamps, the run's inputs, model calls with model and version, guard,
    policy and review decisions, outputs, and each event's hash for later verification."""
    out: list[dict[str, Any]] = []
    for _rid, created, _seq, _hash, status in await store.recorded_heads():
        if created < since:
            continue
        info = await store.get_run(_rid)
        for row in await store.chain_rows(_rid):
            run_id, seq, ts, kind, step, attempt, data, payload, prev_hash, digest = row
            out.append(
                {
                    "run_id": run_id,
                    "flow": info.flow if info else None,
                    "flow_fingerprint": info.fingerprint if info else None,
                    "run_status": status,
                    "seq": seq,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
                    + f".{int(ts * 1000) % 1000:03d}Z",
                    "kind": kind,
                    "step": step,
                    "attempt": attempt,
                    "data": json.loads(data),
                    "payload": None if payload is None else json.loads(payload),
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
            )
    return iter(out)
