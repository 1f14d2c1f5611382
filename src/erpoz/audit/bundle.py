"""Proof bundles: one run's events, each with its inclusion proof, and the signed checkpoint
they lead to, in one JSON file an auditor checks without the database (``erpoz audit prove``
writes one, ``erpoz audit check`` checks it).

A bundle that checks out shows that, when the checkpoint was signed, the log held exactly these
events as the run's first events, in this order, with this content; when its last event is the
run's terminal event (``run_succeeded``, ``run_failed``, ``run_cancelled``) nothing else can
follow it, so the bundle is the whole run. What it rests on: the checkpoint's signature, made
with a key the auditor trusts (``--public-key``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErpozError, RunError
from ..store import GENESIS, MerkleLog, Store, chain_hash, leaf_hash
from ._proofs import inclusion_ranges, root_from_inclusion, subtree_hash
from ._verify import TERMINAL_KINDS
from .checkpoints import Checkpoint, CheckpointError, PublicKey

__all__ = ["FORMAT", "BundleCheck", "BundleError", "check_bundle", "load_bundle", "prove"]

FORMAT = "erpoz-proof-bundle/1"


class BundleError(ErpozError):
    """A bundle cannot be made (the store does not match the checkpoint) or read."""

    retryable = False


async def prove(store: Store, run_id: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """The bundle of ``run_id``'s events that ``checkpoint`` covers (each with its RFC 9162
    inclusion proof in the tree of ``checkpoint.size`` leaves). Every proof is checked against
    the checkpoint's root before it is written: a store that no longer matches the checkpoint
    cannot make a bundle that lies."""
    if not isinstance(store, MerkleLog):
        raise BundleError(f"the store {store.url} keeps no Merkle tree: nothing to prove with")
    info = await store.get_run(run_id)
    if info is None:
        raise RunError(f"no run {run_id!r} in {store.url}", run_id=run_id)
    run_id = info.run_id
    rows = await store.chain_rows(run_id)
    leaves = {(leaf[0], leaf[1]): leaf for leaf in await store.tree_leaves(run_id)}
    cache: dict[tuple[int, int], bytes] = {}
    events: list[dict[str, Any]] = []
    for row in rows:
        _, seq, ts, kind, step, attempt, data, payload, prev_hash, digest = row
        found = leaves.get((run_id, seq))
        if found is None:
            raise BundleError(
                f"run {run_id}, event {seq} is not in the Merkle tree: the store was tampered "
                "with; see `erpoz audit verify --all`"
            )
        pos = found[2]
        if pos >= checkpoint.size:
            break  # recorded after the checkpoint: a later checkpoint covers it
        path = []
        for a, b in inclusion_ranges(pos, checkpoint.size):
            if (a, b) not in cache:
                cache[(a, b)] = await subtree_hash(store, a, b)
            path.append(cache[(a, b)])
        leaf = leaf_hash(run_id, seq, digest)
        if root_from_inclusion(pos, checkpoint.size, leaf, path) != checkpoint.root:
            raise BundleError(
                f"run {run_id}, event {seq} does not lead to the checkpoint's root: the store no "
                f"longer matches the checkpoint of {checkpoint.time}; see `erpoz audit verify "
                "--all --checkpoint …`"
            )
        events.append(
            {
                "seq": seq,
                "ts": ts,
                "kind": kind,
                "step": step,
                "attempt": attempt,
                "data": data,
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": digest,
                "leaf_index": pos,
                "inclusion": [h.hex() for h in path],
            }
        )
    if not events:
        raise BundleError(
            f"the checkpoint of {checkpoint.time} ({checkpoint.size} events) covers none of run "
            f"{run_id}'s events: sign a newer checkpoint (`erpoz audit checkpoint`)"
        )
    return {
        "format": FORMAT,
        "run_id": run_id,
        "flow": info.flow,
        "note": "data and payload are the exact texts the chain hashes; check with "
        "`erpoz audit check BUNDLE --public-key KEY`",
        "events_in_store": len(rows),
        "checkpoint": checkpoint.to_json(),
        "events": events,
    }


@dataclass(slots=True)
class BundleCheck:
    """What ``check_bundle`` found: ``ok`` when every check passed."""

    run_id: str = ""
    events: int = 0
    checkpoint: Checkpoint | None = None
    outcome: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        cp = self.checkpoint
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "events": self.events,
            "outcome": self.outcome,
            "checkpoint": None
            if cp is None
            else {"size": cp.size, "root": cp.root.hex(), "time": cp.time, "key_id": cp.key_id},
            "problems": self.problems,
        }


def check_bundle(doc: Any, key: PublicKey, where: str = "the bundle") -> BundleCheck:
    """Check a bundle with nothing but itself and the trusted public ``key``: the checkpoint's
    signature, every event's chain hash and link, every leaf's inclusion proof."""
    out = BundleCheck()
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise BundleError(f"{where}: not an erpoz proof bundle (format {got!r}, expected {FORMAT})")
    try:
        cp = out.checkpoint = Checkpoint.from_json(doc.get("checkpoint"), f"{where}: checkpoint")
    except CheckpointError as exc:
        raise BundleError(str(exc)) from exc
    run_id = doc.get("run_id")
    events = doc.get("events")
    if not isinstance(run_id, str) or not isinstance(events, list) or not events:
        raise BundleError(f"{where}: a bundle has a run_id and a list of events")
    out.run_id, out.events = run_id, len(events)
    if cp.key_id != key.key_id:
        out.problems.append(
            f"the checkpoint is signed by another key (key id {cp.key_id}; the trusted key is "
            f"{key.key_id})"
        )
    elif not cp.signed_by(key):
        out.problems.append("the checkpoint's signature does not verify: it was altered or forged")
    prev, last_pos, last_kind = GENESIS, -1, ""
    for i, e in enumerate(events, start=1):
        if last_kind in TERMINAL_KINDS:
            out.problems.append(f"event {i}: it follows the run's terminal event ({last_kind})")
            break
        problem = _check_event(run_id, i, e, prev, last_pos, cp)
        if problem is not None:
            out.problems.append(f"event {i}: {problem}")
            break
        prev, last_pos, last_kind = e["hash"], e["leaf_index"], e["kind"]
    if not out.problems:
        last = events[-1]["kind"]
        out.outcome = (
            f"{TERMINAL_KINDS[last]} at event {len(events)}: the whole run"
            if last in TERMINAL_KINDS
            else f"not finished at the checkpoint (its first {len(events)} events)"
        )
    return out


def _check_event(
    run_id: str, seq: int, e: Any, prev: str, last_pos: int, cp: Checkpoint
) -> str | None:
    try:
        if e["seq"] != seq:
            return f"expected sequence number {seq}, found {e['seq']} (events left out or moved)"
        if e["prev_hash"] != prev:
            return "its prev_hash does not name the event before it"
        digest = chain_hash(
            prev,
            run_id,
            seq,
            float(e["ts"]),
            e["kind"],
            e["step"],
            int(e["attempt"]),
            e["data"],
            e["payload"],
        )
        if digest != e["hash"]:
            return f"{e['kind']}: its content does not match its hash"
        pos = e["leaf_index"]
        if type(pos) is not int or not last_pos < pos < cp.size:
            return f"leaf index {pos!r} is out of order or beyond the checkpoint ({cp.size})"
        path = [bytes.fromhex(h) for h in e["inclusion"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"malformed ({type(exc).__name__}: {exc})"
    leaf = leaf_hash(run_id, seq, digest)
    if root_from_inclusion(pos, cp.size, leaf, path) != cp.root:
        return f"its inclusion proof (leaf {pos}) does not lead to the checkpoint's root"
    return None


def load_bundle(text: str, where: str) -> Any:
    """The JSON of a bundle file; ``BundleError`` naming ``where`` when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from exc
