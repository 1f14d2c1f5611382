"""The narrow borders between the engine and any run store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._ledger import BudgetScope, Hold
from ._limits import LimitState, RateGrant
from ._merkle import Leaf, TreeHead
from ._model import ChainRow, Event, NewRun, RecordedHead, RunInfo
from ._schedules import ScheduleRow, Tick, TickClaim


class RunWriter(Protocol):
    """The single writer of one run's log, held by the process that owns the run.

    ``append`` assigns the next sequence number and chain hash and buffers the event; ``flush``
    is called after a step's success, before any dependent starts: with ``sync`` durability it
    makes everything appended so far durable (one commit shared by the runs that flush in the
    same turn of the event loop), with ``batch`` it commits every 50 ms / 512 events, with
    ``effects`` it commits nothing (the store commits before something leaves the process:
    ``settle``, ``commit``, ``release``); a no-op in memory.
    """

    run_id: str

    @property
    def cancel_requested(self) -> bool:
        """Set when someone asked to cancel the run (``erpoz runs cancel``)."""
        ...

    @property
    def lost(self) -> bool:
        """Set when another process took the run over (this one's lease lapsed): nothing more
        this writer appends will be recorded."""
        ...

    def append(
        self,
        kind: str,
        step: str | None = None,
        attempt: int = 0,
        data: dict[str, Any] | None = None,
        payload: str | None = None,
    ) -> None: ...

    async def flush(self) -> None: ...

    async def settle(self) -> None:
        """Called before something leaves the process that is not journaled as an intent (a
        model call): with ``effects`` durability everything appended so far is made durable
        first; the other modes already hold what they guarantee."""
        ...

    async def commit(self) -> None:
        """Make everything appended so far durable now, whatever the durability mode: the
        effects journal commits a side effect's intent before it is carried out and its result
        right after (``flush`` may hold events back in ``batch`` mode; this never does)."""
        ...

    async def release(self) -> None:
        """Flush and give up ownership (the run ended or paused)."""
        ...


class Store(Protocol):
    """Events, runs and cached outputs. SQLite and in-memory ship here; PostgreSQL plugs in.

    Every implementation passes the contract suite in ``tests/store/contract.py``.
    """

    url: str

    async def create_run(self, run: NewRun, owner: str) -> RunWriter:
        """Record a new run (its ``run_started`` event) and return its writer."""
        ...

    async def claim_run(self, run_id: str, owner: str) -> RunWriter:
        """Take ownership of an existing run to continue it; ``StoreError`` if another live
        process owns it."""
        ...

    async def get_run(self, run_id: str) -> RunInfo | None: ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[RunInfo]:
        """Newest first; ``tenant`` keeps only that tenant's runs (the run's ``tenant`` tag)."""
        ...

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        """The run's events with ``seq > after``, in order, payloads resolved."""
        ...

    async def chain_rows(self, run_id: str | None = None) -> list[ChainRow]:
        """Events exactly as stored (data and payload as the text that was hashed), ordered by
        run and sequence; every run's when ``run_id`` is None. The audit recomputes from this."""
        ...

    async def recorded_heads(self) -> list[RecordedHead]:
        """Each run's head as its runs row recorded it (the chain over run heads)."""
        ...

    async def chain_and_heads(
        self, run_id: str | None = None
    ) -> tuple[list[ChainRow], list[RecordedHead]]:
        """``chain_rows(run_id)`` and ``recorded_heads()`` read in one snapshot (one read
        transaction), so that runs written meanwhile never look truncated to the audit."""
        ...

    async def run_with_events(self, run_id: str) -> tuple[RunInfo | None, list[Event]]:
        """``get_run(run_id)`` and the events of that run, read in one snapshot."""
        ...

    async def request_cancel(self, run_id: str) -> None: ...

    async def cache_get(self, key: str) -> str | None: ...

    async def cache_put(self, key: str, step: str, output: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """A run a worker took from a queue: the run as it was when taken (``info.claims`` already
    counts this claim), its writer, and who held it before (``None``: nobody did)."""

    info: RunInfo
    writer: RunWriter
    previous_owner: str | None = None


@runtime_checkable
class RunQueue(Protocol):
    """Runs submitted for workers, in a store that many processes may share.

    A submitted run is recorded at once (``run_started`` and ``run_queued``) and owned by
    nobody. A worker claims the oldest claimable run of its queues: one that is queued, or one
    that is running but whose owner let go (handed it back) or is gone (its lease lapsed, or it
    is a dead process on this host). Two workers never get the same run at the same time.
    """

    lease_s: float
    """How long a claim lasts without a heartbeat (the owner renews it every third of it)."""

    async def submit_run(self, run: NewRun, queue: str) -> None:
        """Record ``run`` as queued on ``queue``, committed before this returns."""
        ...

    async def claim_next(self, owner: str, queues: Sequence[str]) -> Claim | None:
        """Take the oldest claimable run of ``queues`` for ``owner``; ``None`` when there is
        none."""
        ...

    async def wait_for_runs(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a run may have been submitted to ``queues``, at the latest after
        ``timeout`` seconds (a hint: callers claim again either way)."""
        ...


@runtime_checkable
class Mailbox(Protocol):
    """What durable waits need from a store: messages sent to runs, events runs publish, and
    waking a waiting run. A waiting run's row carries ``wake_at`` / ``wake_on`` (from its
    ``run_waiting`` event); a message to its topic, or the event it waits for, makes it due now.
    """

    async def send_message(self, run_id: str, topic: str, payload: str) -> int:
        """Record a message (JSON ``payload``) for ``run_id`` on ``topic``, wake the run if it
        waits for that topic; the message's id (ids grow)."""
        ...

    async def messages(self, run_id: str, topic: str) -> list[tuple[int, str]]:
        """Every message sent to ``run_id`` on ``topic``: ``(id, payload)``, oldest first."""
        ...

    async def set_run_event(self, run_id: str, key: str, payload: str) -> None:
        """Publish ``run_id``'s event ``key`` (the latest value wins); wake the runs waiting for
        it."""
        ...

    async def get_run_event(self, run_id: str, key: str) -> str | None:
        """The value of ``run_id``'s event ``key``; ``None`` while it is not set."""
        ...

    async def wake_run(self, run_id: str) -> None:
        """Make a waiting run with a wake time due now (a message came while it went waiting)."""
        ...

    async def claim_due(self, owner: str, *, flow: str | None = None) -> Claim | None:
        """Take the waiting run of no queue that is due soonest, as a worker claims a run of
        its queues (two claimers never get the same run): a run of ``flow`` (by name), or,
        without one, a run whose flow has a recorded source to load it from; ``None`` when
        none is due."""
        ...

    async def due_runs(self, *, limit: int = 100) -> list[str]:
        """Waiting runs of no queue whose wake time has come, held by nobody, soonest first
        (a worker claims the due runs of its queues itself)."""
        ...


@runtime_checkable
class BudgetLedger(Protocol):
    """Budgets shared by every process of a store (see ``erpoz.store._ledger``): a paid call
    reserves its estimated cost before it is sent and settles to its actual cost after, so
    concurrent processes cannot spend past a ceiling between them."""

    async def reserve(
        self,
        amount_usd: float,
        *,
        project_usd: float | None,
        tenant: str,
        tenant_usd: float | None,
        ttl_s: float,
    ) -> Hold:
        """Hold ``amount_usd`` against the project's ceiling ``project_usd`` and ``tenant``'s
        ceiling ``tenant_usd`` (``None``: none), both or neither: the hold, or one whose
        ``refused`` names the scope it would take past its ceiling (nothing is held then). A
        hold not settled within ``ttl_s`` seconds is charged at its amount."""
        ...

    async def settle(self, hold: Hold, cost_usd: float) -> None:
        """Replace ``hold`` by the call's actual cost."""
        ...

    async def budget_scopes(self, scopes: Sequence[str] | None = None) -> list[BudgetScope]:
        """The scopes as they stand (every scope used so far when ``scopes`` is None)."""
        ...


@runtime_checkable
class RateLimits(Protocol):
    """Rate limits shared by every process of a store (see ``erpoz.store._limits``): in any
    window of ``window_s`` seconds, at most ``limit`` units of a key are granted, across all
    processes."""

    async def take_rate(
        self, key: str, limit: float, window_s: float, amount: float = 1.0, hold_s: float = 0.0
    ) -> RateGrant:
        """Grant ``amount`` units of ``key`` now, or say how long until it could be. With
        ``hold_s`` the grant counts until it is settled (at most ``hold_s``), its window from
        then."""
        ...

    async def settle_rate(self, grant_id: str, amount: float) -> None:
        """Correct a grant to the amount actually used; its window runs from now."""
        ...

    async def rate_grants(self, key: str, since: float = 0.0) -> list[tuple[float, float]]:
        """The grants of ``key`` since ``since`` (kept ten windows, at least ten minutes), as
        ``(time, amount)``, oldest first."""
        ...


@runtime_checkable
class ConcurrencySlots(Protocol):
    """Concurrency limits shared by every process of a store: at most ``limit`` slots of a
    key in use; a slot is held until released, on a lease its process renews (a dead
    process's slots come free)."""

    async def acquire_slot(self, key: str, limit: int, holder: str, ttl_s: float) -> bool:
        """Take a slot of ``key`` for ``holder`` when fewer than ``limit`` are in use."""
        ...

    async def release_slot(self, key: str, holder: str) -> None: ...

    async def renew_slots(self, ttl_s: float) -> None:
        """Extend the lease of every slot this process holds."""
        ...

    async def slots_in_use(self, key: str) -> int: ...


@runtime_checkable
class LimitStates(Protocol):
    """The limits kept in a store, as they stand: every rate limit (its units in its window
    now) and concurrency limit (its slots in use), with what its users last applied."""

    async def limit_states(self) -> list[LimitState]: ...


@runtime_checkable
class ScheduleBook(Protocol):
    """Schedules shared by every process of a store (see ``erpoz.store._schedules``): their
    definitions, where each stands, and the ticks claimed, so that one tick is fired once."""

    async def put_schedule(self, schedule: ScheduleRow) -> ScheduleRow:
        """Add or change a schedule; an existing one keeps its counts, its pause and (unless
        its cron or time zone changed) its next tick. Returns what is stored."""
        ...

    async def list_schedules(self, names: Sequence[str] | None = None) -> list[ScheduleRow]:
        """The schedules (those of ``names``), by name."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule (its ticks stay on record); ``False`` when there was none."""
        ...

    async def pause_schedule(self, name: str, paused: bool, next_tick: float | None) -> bool:
        """Pause or resume; ``next_tick`` (when given) is where it goes on from."""
        ...

    async def claim_tick(self, claim: TickClaim) -> bool:
        """Compare-and-swap the schedule's next tick and claim the tick, in one transaction:
        ``False`` when another process moved it first (or it is paused or gone)."""
        ...

    async def reclaim_tick(self, owner: str, lease_s: float) -> Tick | None:
        """Take over a claimed tick whose owner died or whose lease lapsed, if any."""
        ...

    async def finish_tick(
        self, schedule: str, tick: float, owner: str, error: str | None = None
    ) -> bool:
        """Mark a tick ``owner`` holds fired (or failed, with ``error``)."""
        ...

    async def schedule_ticks(self, schedule: str | None = None, limit: int = 20) -> list[Tick]:
        """The ticks claimed so far (of one schedule), newest first."""
        ...


@runtime_checkable
class MerkleLog(Protocol):
    """The Merkle tree over a store's log (RFC 9162 hashing, see :mod:`erpoz.store._merkle`):
    one leaf per event, in the order events were committed, kept by every commit.

    Reads are consistent with the log read after them: the tree never shrinks, and an event and
    its leaf commit together.
    """

    async def tree_head(self) -> TreeHead:
        """The tree's origin, size and compact range (its root) as stored now."""
        ...

    async def tree_leaves(self, run_id: str | None = None) -> list[Leaf]:
        """``(run_id, seq, position, leaf_hash)`` of every event (of one run), ordered by run
        and sequence like :meth:`Store.chain_rows`."""
        ...

    async def tree_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored hashes with index in ``[start, end)``: leaf hashes by position at level 0,
        roots of complete subtrees of ``2**level`` leaves at the stored levels (multiples of
        ``NODE_STRIDE``); a ``StoreError`` for another level."""
        ...


@runtime_checkable
class AuditShards(Protocol):
    """What lets ``verify`` read a durable store in parts, each in a process of its own."""

    async def audit_head(self) -> tuple[TreeHead, list[RecordedHead]]:
        """The tree's head and every run's recorded head (:meth:`Store.recorded_heads`), read
        in one transaction: the state of the log an audit checks."""
        ...

    async def audit_rows(
        self,
        first: str | None = None,
        last: str | None = None,
        *,
        keys: bool = True,
        as_of: int | None = None,
        run_id: str | None = None,
    ) -> tuple[list[ChainRow], list[Any]]:
        """The events exactly as stored (:meth:`Store.chain_rows`) and their leaves
        (:meth:`MerkleLog.tree_leaves`; without ``keys``, only ``(position, leaf)``) of the runs
        with ``first <= run_id < last`` (``None``: no bound; or the one ``run_id``), both
        ordered by run and sequence, read in one transaction; with ``as_of``, as the log stood
        when the tree had that many leaves (what was committed since is left out)."""
        ...

    async def run_split(self, parts: int) -> list[str]:
        """Up to ``parts - 1`` run ids, ascending in the store's own order, that cut its runs
        into ranges of about as many events each."""
        ...

    def reopened(self) -> Store:
        """A new store object on the same database (for another process, after a fork)."""
        ...
