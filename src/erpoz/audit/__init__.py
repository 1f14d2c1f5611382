"""Tamper evidence: verify the log, sign checkpoints of it, prove events to auditors; export.

Each event's hash covers its predecessor's hash, so changing, removing or reordering an event
breaks the chain at that spot; the runs table records each run's head, and a finished run is
sealed by its terminal event, so cutting events off the end or appending to a finished run shows
too. A Merkle tree over the whole log (RFC 9162) and signed checkpoints of it kept outside the
database (:mod:`.checkpoints`) catch what someone who can rewrite the whole database could hide.
``verify`` names the first event that does not check out and says how; :mod:`.bundle` proves a
run's events to an auditor who has no database. ``lineage`` (see :mod:`.lineage`) says which
inputs, models, tools and decisions produced a step's output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from ..store import Leaf, MerkleLog, Store, heads_digest
from ._proofs import ProofError, inclusion_ranges, subtree_hash
from ._verify import AuditReport, CheckpointResult, Problem, verify
from .checkpoints import Checkpoint
from .lineage import Lineage, StepLineage, UnknownStep, lineage

__all__ = [
    "AuditReport",
    "CheckpointResult",
    "Lineage",
    "Problem",
    "ProofError",
    "StepLineage",
    "UnknownStep",
    "export",
    "heads_digest",
    "lineage",
    "verify",
]


async def export(
    store: Store, *, since: float = 0.0, checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """Records for an AI system's record-keeping, one per event of runs created since ``since``
    (epoch seconds): timestamps, the run's inputs, model calls with model and version, guard,
    policy and review decisions, outputs, and each event's hash for later verification.

    With a ``checkpoint``, each record also carries its leaf in the Merkle tree
    (``leaf_index``, ``leaf``) and its RFC 9162 ``inclusion`` proof in the checkpoint's tree
    (``None`` for events recorded after it), so an auditor who trusts the checkpoint's key can
    check that each record's event was in the log (see ``erpoz.audit.bundle`` for whole runs).
    """
    tree = store if checkpoint is not None and isinstance(store, MerkleLog) else None
    if checkpoint is not None and tree is None:
        raise ProofError(f"the store {store.url} keeps no Merkle tree: no proofs to export")
    cache: dict[tuple[int, int], bytes] = {}
    out: list[dict[str, Any]] = []
    for _rid, created, _seq, _hash, status in await store.recorded_heads():
        if created < since:
            continue
        info = await store.get_run(_rid)
        leaves = {}
        if tree is not None:
            leaves = {(leaf[0], leaf[1]): leaf for leaf in await tree.tree_leaves(_rid)}
        for row in await store.chain_rows(_rid):
            run_id, seq, ts, kind, step, attempt, data, payload, prev_hash, digest = row
            record = {
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
            if tree is not None and checkpoint is not None:
                record.update(
                    await _proof_fields(tree, checkpoint, leaves.get((run_id, seq)), cache)
                )
            out.append(record)
    return iter(out)


async def _proof_fields(
    tree: MerkleLog,
    checkpoint: Checkpoint,
    leaf: Leaf | None,
    cache: dict[tuple[int, int], bytes],
) -> dict[str, Any]:
    if leaf is None:
        return {"leaf_index": None, "leaf": None, "inclusion": None}
    pos = leaf[2]
    if pos >= checkpoint.size:
        return {"leaf_index": pos, "leaf": leaf[3].hex(), "inclusion": None}
    path = []
    for a, b in inclusion_ranges(pos, checkpoint.size):
        if (a, b) not in cache:
            cache[(a, b)] = await subtree_hash(tree, a, b)
        path.append(cache[(a, b)].hex())
    return {"leaf_index": pos, "leaf": leaf[3].hex(), "inclusion": path}
