"""A store that keeps everything in the process (durability ``memory``): tests and benchmarks.

Appending is a list append; the hash chain and the Merkle tree are computed when they are read,
which gives the same hashes as a durable store would have written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..errors import RunClaimed, StoreError
from ._ledger import BudgetScope, Hold, MemoryLedger, limits_of
from ._limits import LimitState, MemoryRates, MemorySlots, RateGrant
from ._merkle import CompactRange, Leaf, StoredNode, TreeHead, check_level, leaf_hash
from ._model import (
    GENESIS,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    RUN_WAITING,
    STATUS_OF,
    ChainRow,
    Event,
    NewRun,
    RecordedHead,
    RunInfo,
    chain_hash,
    dumps,
)
from ._owner import owner_is_dead
from ._protocol import Claim
from ._schedules import MemorySchedules, ScheduleRow, Tick, TickClaim

_now = time.time


class _MemoryRun:
    __slots__ = (
        "cancel_requested",
        "claims",
        "created",
        "error",
        "events",
        "hashed",
        "heads",
        "lease_until",
        "new",
        "order",
        "output",
        "owner",
        "queue",
        "status",
        "updated",
        "waiting_step",
        "wake_at",
        "wake_on",
    )

    def __init__(
        self,
        new: NewRun,
        owner: str | None,
        order: list[_MemoryRun],
        queue: str | None = None,
    ) -> None:
        self.new = new
        # the store's: the run of every event of every run, in the order appended (a
        # reference per event, no object: the cyclic GC walks nothing more per event)
        self.order = order
        self.owner: str | None = owner
        self.queue = queue
        self.claims = 0
        self.lease_until = 0.0
        self.status = "running"
        self.created = self.updated = time.time()
        self.output: str | None = None
        self.error: str | None = None
        self.waiting_step: str | None = None
        self.wake_at: float | None = None
        self.wake_on: str | None = None
        self.cancel_requested = False
        # every event as 6 items in a row (ts, kind, step, attempt, data, payload): no tuple
        # per event, so the events of a finished run hold nothing the cyclic GC must walk
        # (a tuple that holds a dict stays tracked for good; ``data`` holds plain values)
        self.events: list[Any] = []
        self.hashed: list[Event] | None = None  # made when first read (most runs: never)


def _due(r: _MemoryRun, now: float) -> bool:
    """A waiting run whose timer is due (or whose message came), held by nobody."""
    return r.status == "waiting" and r.wake_at is not None and r.wake_at <= now and not r.owner


class _MemoryWriter:
    __slots__ = ("_run", "run_id")

    #: flush is a no-op here: the engine's fast path does not even await it
    flushes = False

    def __init__(self, run: _MemoryRun) -> None:
        self._run = run
        self.run_id = run.new.run_id

    @property
    def cancel_requested(self) -> bool:
        return self._run.cancel_requested

    @property
    def lost(self) -> bool:
        return False  # one process: nobody else can take a run over

    def append(
        self,
        kind: str,
        step: str | None = None,
        attempt: int = 0,
        data: dict[str, Any] | None = None,
        payload: str | None = None,
    ) -> None:
        run = self._run
        run.events += (_now(), kind, step, attempt, data, payload)
        run.order.append(run)
        if kind in STATUS_OF:
            self._status(kind, data, payload)

    def _status(self, kind: str, data: dict[str, Any] | None, payload: str | None) -> None:
        """The run's row follows its log: status, output, error, what it waits for."""
        run = self._run
        status = STATUS_OF.get(kind)
        if status is not None:
            run.status = status
            run.updated = time.time()
            if kind == RUN_SUCCEEDED:
                run.output = payload
            elif kind == RUN_FAILED:
                run.error = (data or {}).get("error")
            d = (data or {}) if kind == RUN_WAITING else {}
            run.waiting_step, run.wake_at, run.wake_on = (
                d.get("step"),
                d.get("wake_at"),
                d.get("wake_on"),
            )

    async def flush(self) -> None:
        return None

    async def settle(self) -> None:
        return None

    async def commit(self) -> None:
        return None

    async def release(self) -> None:
        self._run.owner = None


class MemoryStore:
    """Run store in a dict; nothing survives the process."""

    url = "memory"
    durability = "memory"

    def __init__(self) -> None:
        self._runs: dict[str, _MemoryRun] = {}
        self._cache: dict[str, str] = {}
        self.lease_s = 30.0
        self._submitted: asyncio.Event | None = None
        self._ledger = MemoryLedger(self._log_spend)
        self._messages: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._message_ids = 0
        self._run_events: dict[tuple[str, str], str] = {}
        self._schedules = MemorySchedules()
        self._rates = MemoryRates()
        self._slots = MemorySlots()
        self._order: list[_MemoryRun] = []
        self._in_tree: dict[str, int] = {}  # run id -> how many of its events the tree holds
        self._origin = uuid.uuid4().hex
        self._tree = CompactRange()
        self._leaves: list[Leaf] = []
        self._nodes: dict[int, list[bytes]] = {}

    async def create_run(self, run: NewRun, owner: str) -> _MemoryWriter:
        if run.run_id in self._runs:
            raise StoreError(f"run id {run.run_id!r} already exists")
        r = self._runs[run.run_id] = _MemoryRun(run, owner, self._order)
        w = _MemoryWriter(r)
        w.append(RUN_STARTED, data=run.started_data(), payload=run.inputs)
        return w

    async def claim_run(self, run_id: str, owner: str) -> _MemoryWriter:
        r = self._runs.get(run_id)
        if r is None:
            raise StoreError(f"no run {run_id!r} in this store")
        if r.owner is not None and r.owner != owner:
            raise RunClaimed(
                f"run {run_id} is being run by {r.owner}", run_id=run_id, owner=r.owner
            )
        r.owner = owner
        return _MemoryWriter(r)

    async def submit_run(self, run: NewRun, queue: str) -> None:
        if run.run_id in self._runs:
            raise StoreError(f"run id {run.run_id!r} already exists")
        r = self._runs[run.run_id] = _MemoryRun(run, None, self._order, queue)
        w = _MemoryWriter(r)
        w.append(RUN_STARTED, data=run.started_data(), payload=run.inputs)
        w.append(RUN_QUEUED, data={"queue": queue})
        if self._submitted is not None:
            self._submitted.set()

    async def claim_next(self, owner: str, queues: Sequence[str]) -> Claim | None:
        now = time.time()
        for r in sorted(self._runs.values(), key=lambda r: r.created):
            if r.queue in queues and (
                (
                    r.status in ("queued", "running")
                    and (r.owner is None or r.lease_until < now or owner_is_dead(r.owner))
                )
                or _due(r, now)
            ):
                prev = r.owner
                r.owner, r.lease_until = owner, now + self.lease_s
                r.claims += 1
                return Claim(self._info(r), _MemoryWriter(r), prev)
        return None

    async def wait_for_runs(self, queues: Sequence[str], timeout: float) -> None:
        if self._submitted is None:
            self._submitted = asyncio.Event()
        try:
            await asyncio.wait_for(self._submitted.wait(), timeout)
        except TimeoutError:
            return
        self._submitted.clear()

    def _hashed(self, r: _MemoryRun) -> list[Event]:
        done = r.hashed
        if done is None:
            done = r.hashed = []
        head = done[-1].hash if done else GENESIS
        run_id = r.new.run_id
        events = r.events
        for i in range(len(done) * 6, len(events), 6):
            ts, kind, step, attempt, data, payload = events[i : i + 6]
            seq = len(done) + 1
            dj = dumps(data) if data else "{}"
            h = chain_hash(head, run_id, seq, ts, kind, step, attempt, dj, payload)
            done.append(
                Event(run_id, seq, ts, kind, step, attempt, dict(data or {}), payload, head, h)
            )
            head = h
        return done

    def _info(self, r: _MemoryRun) -> RunInfo:
        n = r.new
        ev = self._hashed(r)
        return RunInfo(
            n.run_id,
            n.flow,
            n.source,
            n.fingerprint,
            r.status,
            r.created,
            r.updated,
            n.parent_run_id,
            n.replay_from,
            n.inputs,
            r.output,
            r.error,
            r.waiting_step,
            len(ev),
            ev[-1].hash if ev else GENESIS,
            r.owner,
            r.cancel_requested,
            n.tenant,
            r.queue,
            r.claims,
            r.wake_at,
            r.wake_on,
        )

    async def get_run(self, run_id: str) -> RunInfo | None:
        r = self._runs.get(run_id)
        return None if r is None else self._info(r)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[RunInfo]:
        runs = sorted(self._runs.values(), key=lambda r: r.created, reverse=True)
        picked = [
            r
            for r in runs
            if (status is None or r.status == status)
            and (flow is None or r.new.flow == flow)
            and (tenant is None or r.new.tenant == tenant)
        ]
        return [self._info(r) for r in picked[:limit]]

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        r = self._runs.get(run_id)
        return [] if r is None else self._hashed(r)[after:]

    async def chain_rows(self, run_id: str | None = None) -> list[ChainRow]:
        ids = sorted(self._runs) if run_id is None else [run_id] if run_id in self._runs else []
        return [
            (
                e.run_id,
                e.seq,
                e.ts,
                e.kind,
                e.step,
                e.attempt,
                dumps(e.data) if e.data else "{}",
                e.payload,
                e.prev_hash,
                e.hash,
            )
            for rid in ids
            for e in self._hashed(self._runs[rid])
        ]

    async def recorded_heads(self) -> list[RecordedHead]:
        out = []
        for r in sorted(self._runs.values(), key=lambda r: (r.created, r.new.run_id)):
            info = self._info(r)
            out.append((info.run_id, info.created, info.head_seq, info.head_hash, info.status))
        return out

    async def chain_and_heads(
        self, run_id: str | None = None
    ) -> tuple[list[ChainRow], list[RecordedHead]]:
        return await self.chain_rows(run_id), await self.recorded_heads()  # nothing in between

    async def run_with_events(self, run_id: str) -> tuple[RunInfo | None, list[Event]]:
        info = await self.get_run(run_id)
        return info, [] if info is None else await self.events(info.run_id)

    # --- rate limits --------------------------------------------------------------------------
    async def take_rate(
        self, key: str, limit: float, window_s: float, amount: float = 1.0, hold_s: float = 0.0
    ) -> RateGrant:
        return self._rates.take(key, limit, window_s, amount, hold_s)

    async def settle_rate(self, grant_id: str, amount: float) -> None:
        self._rates.settle(grant_id, amount)

    async def rate_grants(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        return self._rates.grants(key, since)

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl_s: float) -> bool:
        return self._slots.acquire(key, limit, holder, ttl_s)

    async def release_slot(self, key: str, holder: str) -> None:
        self._slots.release(key, holder)

    async def renew_slots(self, ttl_s: float) -> None:
        self._slots.renew(ttl_s)

    async def slots_in_use(self, key: str) -> int:
        return self._slots.count(key)

    async def limit_states(self) -> list[LimitState]:
        return self._rates.states() + self._slots.states()

    # --- schedules ----------------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        return self._schedules.put(schedule)

    async def list_schedules(self, names: Sequence[str] | None = None) -> list[ScheduleRow]:
        return self._schedules.listed(names)

    async def delete_schedule(self, name: str) -> bool:
        return self._schedules.delete(name)

    async def pause_schedule(self, name: str, paused: bool, next_tick: float | None) -> bool:
        return self._schedules.pause(name, paused, next_tick)

    async def claim_tick(self, claim: TickClaim) -> bool:
        return self._schedules.claim(claim)

    async def reclaim_tick(self, owner: str, lease_s: float) -> Tick | None:
        return self._schedules.reclaim(owner, lease_s)

    async def finish_tick(
        self, schedule: str, tick: float, owner: str, error: str | None = None
    ) -> bool:
        return self._schedules.finish(schedule, tick, owner, error)

    async def schedule_ticks(self, schedule: str | None = None, limit: int = 20) -> list[Tick]:
        return self._schedules.ticks(schedule, limit)

    # --- the budget ledger ------------------------------------------------------------------
    def _log_spend(self, tenant: str | None) -> float:
        return sum(
            float((data or {}).get("cost_usd") or 0.0)
            for r in self._runs.values()
            if tenant is None or r.new.tenant == tenant
            for kind, data in zip(r.events[1::6], r.events[4::6], strict=True)
            if kind == "model_called"
        )

    async def reserve(
        self,
        amount_usd: float,
        *,
        project_usd: float | None,
        tenant: str,
        tenant_usd: float | None,
        ttl_s: float,
    ) -> Hold:
        limits = limits_of(project_usd, tenant, tenant_usd)
        return self._ledger.reserve(amount_usd, limits, ttl_s)

    async def settle(self, hold: Hold, cost_usd: float) -> None:
        self._ledger.settle(hold, cost_usd)

    async def budget_scopes(self, scopes: Sequence[str] | None = None) -> list[BudgetScope]:
        return self._ledger.scopes(scopes)

    # --- the Merkle tree ----------------------------------------------------------------------
    def _grown(self) -> CompactRange:
        """The tree, with the events appended since it was last read added to it."""
        tree = self._tree
        fresh: list[Leaf] = []
        in_tree = self._in_tree
        for run in self._order[tree.size :]:
            seq = in_tree[run.new.run_id] = in_tree.get(run.new.run_id, 0) + 1
            e = self._hashed(run)[seq - 1]
            fresh.append((e.run_id, seq, tree.size + len(fresh), leaf_hash(e.run_id, seq, e.hash)))
        nodes: list[StoredNode] = []
        tree.append((leaf[3] for leaf in fresh), nodes)
        self._leaves += fresh
        for level, _index, digest in nodes:
            self._nodes.setdefault(level, []).append(digest)
        return tree

    async def tree_head(self) -> TreeHead:
        tree = self._grown()
        return TreeHead(self._origin, tree.size, tree.frontier)

    async def tree_leaves(self, run_id: str | None = None) -> list[Leaf]:
        self._grown()
        if run_id is None:
            return sorted(self._leaves)
        return sorted(leaf for leaf in self._leaves if leaf[0] == run_id)

    async def tree_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        self._grown()
        if level == 0:
            return [leaf[3] for leaf in self._leaves[max(start, 0) : max(end, 0)]]
        check_level(level)
        return self._nodes.get(level, [])[max(start, 0) : max(end, 0)]

    async def request_cancel(self, run_id: str) -> None:
        r = self._runs.get(run_id)
        if r is not None:
            r.cancel_requested = True

    # --- durable waits: messages, run events, due runs --------------------------------------
    def _wake(self, r: _MemoryRun | None, on: str | None = None) -> None:
        now = time.time()
        if (
            r is not None
            and r.status == "waiting"
            and r.wake_at is not None
            and r.wake_at > now
            and (on is None or r.wake_on == on)
        ):
            r.wake_at = now
            if self._submitted is not None:
                self._submitted.set()

    async def send_message(self, run_id: str, topic: str, payload: str) -> int:
        self._message_ids += 1
        self._messages.setdefault((run_id, topic), []).append((self._message_ids, payload))
        self._wake(self._runs.get(run_id), f"msg:{topic}")
        return self._message_ids

    async def messages(self, run_id: str, topic: str) -> list[tuple[int, str]]:
        return list(self._messages.get((run_id, topic), ()))

    async def set_run_event(self, run_id: str, key: str, payload: str) -> None:
        self._run_events[(run_id, key)] = payload
        on = f"event:{run_id}:{key}"
        for r in self._runs.values():
            self._wake(r, on)

    async def get_run_event(self, run_id: str, key: str) -> str | None:
        return self._run_events.get((run_id, key))

    async def wake_run(self, run_id: str) -> None:
        self._wake(self._runs.get(run_id))

    async def claim_due(self, owner: str, *, flow: str | None = None) -> Claim | None:
        now = time.time()
        due = [
            r
            for r in self._runs.values()
            if r.queue is None
            and _due(r, now)
            and (r.new.flow == flow if flow is not None else r.new.source is not None)
        ]
        if not due:
            return None
        r = min(due, key=lambda r: r.wake_at or 0.0)
        r.owner, r.lease_until = owner, now + self.lease_s
        r.claims += 1
        return Claim(self._info(r), _MemoryWriter(r), None)

    async def due_runs(self, *, limit: int = 100) -> list[str]:
        now = time.time()
        due = [r for r in self._runs.values() if r.queue is None and _due(r, now)]
        due.sort(key=lambda r: r.wake_at or 0.0)
        return [r.new.run_id for r in due[:limit]]

    async def cache_get(self, key: str) -> str | None:
        return self._cache.get(key)

    async def cache_put(self, key: str, step: str, output: str) -> None:
        self._cache[key] = output

    async def close(self) -> None:
        return None
