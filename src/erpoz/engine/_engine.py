"""The scheduler: runs a plan as events, resumes from them, replays from any step.

A step's dependents are released when its last dependency succeeds. The first released dependent
continues in the same asyncio task (a linear chain runs as one coroutine, no task per step);
the others get tasks of their own. Every state change is an event appended to the run's writer;
with ``sync`` durability a step's success is committed before any dependent starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    FlowError,
    GuardBlocked,
    InvalidOutput,
    PolicyViolation,
    ReviewRequired,
    RunError,
    StepFailed,
    StoreError,
    error_info,
)
from ..flow import LOOP, MAP, SKIPPED, Flow, Plan, PlanNode, get_field, is_retryable, type_name
from ..store import (
    TERMINAL,
    Claim,
    Event,
    Mailbox,
    NewRun,
    RunInfo,
    RunQueue,
    RunWriter,
    Store,
    new_owner,
    open_store,
)
from ..store import kinds as ev
from ._codec import EXACT_ENCODERS, EncodeError, check_type, decode, encode, validate
from ._context import RunJournal, StepContext, Suspend, Waits
from ._executor import Executor, ThreadExecutor
from ._gc import IN_FLIGHT
from ._remote import RemoteContext
from ._versions import choose_plan, patches_of

if TYPE_CHECKING:
    from ..guards import Guardrails

Observer = Callable[[str, str | None, int, Mapping[str, Any] | None], None]
#: Like an observer, with the run id first: ``listener(run_id, kind, step, attempt, data)``
#: (a server that follows many runs uses this).
Listener = Callable[[str, str, str | None, int, Mapping[str, Any] | None], None]
"""Called for every event a run appends: ``(kind, step, attempt, data)``."""
#: ``token_listener(run_id, step, attempt, text)``: a piece of model output a step streams
#: (``ctx.models.stream``) as it arrives. Tokens are not events: the log records the output.
TokenListener = Callable[[str, str, int, str], None]

_PENDING: Any = object()


@dataclass(frozen=True, slots=True)
class Decision:
    """A reviewer's decision on a step waiting for review."""

    action: str  # "approve" | "reject" | "edit"
    output: Any = None
    reviewer: str = ""
    comment: str = ""
    step: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("approve", "reject", "edit"):
            raise RunError(f"a review decision is approve, reject or edit, not {self.action!r}")


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended (or paused): status, output and where it stopped."""

    run_id: str
    status: str
    output: Any = None
    error: str | None = None
    failed_step: str | None = None
    waiting_steps: tuple[str, ...] = ()
    error_info: Mapping[str, Any] | None = None
    """The failed step's error as recorded: ``type``, ``types``, ``message``, ``retryable``
    and ``fields`` (see :func:`erpoz.errors.error_info`)."""
    wake_at: float | None = None
    """When a run that waits on a timer (``ctx.sleep``, a ``recv`` timeout) is due."""
    wake_on: str | None = None
    """What wakes it sooner: ``msg:TOPIC`` (a message) or ``event:RUN:KEY`` (a run event)."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        """The result as JSON data, as ``erpoz run --json`` and the runs API show it (the
        output as the store records it; see :func:`erpoz.user_json.jsonable`)."""
        from ..user_json import jsonable

        return {
            "run_id": self.run_id,
            "status": self.status,
            "output": jsonable(self.output),
            "error": self.error,
            "failed_step": self.failed_step,
            "waiting_steps": list(self.waiting_steps),
            "wake_at": self.wake_at,
            "wake_on": self.wake_on,
        }

    def unwrap(self) -> Any:
        """The output, or a ``RunError`` explaining why there is none (``StepFailed`` when a
        step failed)."""
        if self.failed_step is not None:
            raise StepFailed(
                f"run {self.run_id} failed at step '{self.failed_step}': {self.error}",
                run_id=self.run_id,
                step=self.failed_step,
            )
        if self.status != "succeeded":
            detail = self.error or (
                f"sleeping until {_clock(self.wake_at)}"
                if self.wake_at is not None
                else f"waiting for review of {', '.join(self.waiting_steps)}"
                if self.waiting_steps
                else self.status
            )
            raise RunError(f"run {self.run_id} {self.status}: {detail}", run_id=self.run_id)
        return self.output


class _Pause(Exception):
    def __init__(
        self, step_id: str, wake_at: float | None = None, wake_on: str | None = None
    ) -> None:
        self.step_id = step_id
        self.wake_at = wake_at
        self.wake_on = wake_on


class _Failed(Exception):
    def __init__(
        self, step_id: str, message: str, attempts: int, info: dict[str, Any] | None = None
    ) -> None:
        self.step_id = step_id
        self.message = message
        self.attempts = attempts
        self.info = info or _info("StepFailed", message)


def _info(kind: str, message: str, **fields: Any) -> dict[str, Any]:
    """The structured record of a failure that is not an exception (a wrong output type, a
    reviewer's rejection), shaped like :func:`~erpoz.errors.error_info`."""
    return {"type": kind, "types": [kind], "message": message, "retryable": False, "fields": fields}


def _failed(
    writer: RunWriter, sid: str, attempt: int, info: dict[str, Any], **extra: Any
) -> _Failed:
    """Record a step's failure (``step_failed``: ``error`` as text for people, and the error's
    type, message and fields for programs) and return what ends the step."""
    message = f"{info['type']}: {info['message']}"
    writer.append(ev.STEP_FAILED, sid, attempt, {"error": message, **info, **extra})
    return _Failed(sid, message, attempt, info)


_NONE: frozenset[str] = frozenset()


class _Run:
    """State shared by every scope (top level and sub-flows) of one run."""

    __slots__ = (
        "_effects",
        "_grants",
        "_tasks",
        "cancelled",
        "delivery",
        "done_steps",
        "failure",
        "flow",
        "flushes",
        "lost",
        "patches",
        "paused",
        "rails",
        "recorded",
        "reviews",
        "stopping",
        "tags",
        "wakes",
        "writer",
    )

    def __init__(self, writer: RunWriter, tags: Mapping[str, str] | None = None) -> None:
        self.writer = writer
        # False for a writer whose flush does nothing (memory): the fast path skips the await
        self.flushes: bool = getattr(writer, "flushes", True)
        self.tags: dict[str, str] = dict(tags or {})
        # grants, effects and tasks are made when first used: most runs need none of them,
        # and every container a run holds is one more object the cyclic GC walks while the
        # run is in flight (10,000 runs at once: that walk was half their CPU)
        self._grants: set[str] | None = None
        self._effects: RunJournal | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self.patches: frozenset[str] = _NONE  # the patches the run started with
        self.rails: Guardrails | None = None  # set when the delivery checkpoint has guards
        self.delivery: frozenset[str] = _NONE
        self.flow = "-"
        self.recorded: dict[str, str | None] = {}  # step id -> output JSON (None: skipped)
        self.reviews: dict[str, Decision] = {}
        self.failure: _Failed | None = None
        self.paused: list[str] = []
        self.wakes: list[tuple[float, str | None]] = []  # the timed waits among the pauses
        self.stopping = False
        self.cancelled = False
        self.lost = False  # another process took the run over (this one's lease lapsed)
        self.done_steps = 0

    @property
    def grants(self) -> set[str]:
        """Approvals recorded in this run (``ReviewRequired.grant``)."""
        if self._grants is None:
            self._grants = set()
        return self._grants

    @property
    def effects(self) -> RunJournal:
        """What tool, model and memory calls of the run did."""
        if self._effects is None:
            self._effects = RunJournal()
        return self._effects

    @effects.setter
    def effects(self, journal: RunJournal) -> None:
        self._effects = journal

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The tasks of the run's parallel branches."""
        if self._tasks is None:
            self._tasks = set()
        return self._tasks

    def pause(self, p: _Pause) -> None:
        self.paused.append(p.step_id)
        if p.wake_at is not None:
            self.wakes.append((p.wake_at, p.wake_on))

    def wake(self) -> tuple[float, str | None] | None:
        """When the paused run is due, and what wakes it sooner: only when every paused step
        waits on a timer (a review waits for a person); the earliest wait decides."""
        if not self.wakes or len(self.wakes) < len(self.paused):
            return None
        return min(self.wakes, key=lambda w: w[0])


class _Scope:
    """One plan being executed: the top level, or a sub-flow inside a step."""

    __slots__ = ("active", "done", "inputs", "outs", "pending", "plan", "prefix", "run")

    def __init__(self, run: _Run, plan: Plan, inputs: Mapping[str, Any], prefix: str) -> None:
        self.run = run
        self.plan = plan
        self.inputs = inputs
        self.prefix = prefix
        self.outs: list[Any] = [_PENDING] * len(plan.nodes)
        self.pending = [len(n.deps) for n in plan.nodes]
        self.active = 0
        self.done: asyncio.Future[None] | None = None


def new_run_id() -> str:
    """Time-ordered, unique run ids (``r`` + ms timestamp + random)."""
    return f"r{int(time.time() * 1000):011x}{os.urandom(4).hex()}"


class Engine:
    """Runs flows against a store. One engine can drive many runs concurrently.

    ``services`` are what steps reach through ``ctx.service(Type)`` (models, tools, memory);
    ``observers`` see every event as it is appended (the CLI's live view uses this).
    ``token_listeners`` get the model tokens steps stream, as they come (the server's streams
    and the LangChain runnable use this); none leave a run whose answers guards check.

    ``executor`` runs step functions off the event loop: the thread pool of this process by
    default. With a remote one (:class:`~erpoz.engine.RayExecutor`) the steps that go there
    are the pure ones (sync, no ``ctx``) and every step that declares ``resources`` (its
    ``ctx`` is then a :class:`RemoteContext`); steps that take ``ctx`` to call models, tools or
    memory stay in this process, where those calls are governed and recorded. Async steps run
    on the event loop unless they declare ``resources``. This process records every event.

    Durable waits (``ctx.sleep``, ``ctx.recv``, ``ctx.get_event``) that end within ``hold_s``
    seconds are waited out in this process; longer ones suspend the run (status ``waiting``
    with a wake time) and let it go, so that no process holds a sleeping run.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        executor: Executor | None = None,
        services: Mapping[type, object] | None = None,
        observers: list[Observer] | None = None,
        listeners: list[Listener] | None = None,
        hold_s: float = 1.0,
    ) -> None:
        self.store: Store = store if store is not None else open_store()
        self.waits = Waits(
            self.store if isinstance(self.store, Mailbox) else None, hold_s=max(0.0, hold_s)
        )
        self._executor = executor
        # not copied: a mapping may build its services when first asked (the CLI's does)
        self.services: Mapping[type, object] = services if services is not None else {}
        self.observers = list(observers or [])
        self.listeners = list(listeners or [])
        self.token_listeners: list[TokenListener] = []
        self.owner = new_owner()
        self._driving: set[str] = set()
        self._threads: ThreadExecutor | None = None
        self._plans: dict[str, Plan] = {}

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadExecutor()
        return self._executor

    def _local_threads(self) -> Executor:
        """Where sync steps that stay in this process run (with a remote executor)."""
        if not self.executor.remote:
            return self.executor
        if self._threads is None:
            self._threads = ThreadExecutor()
        return self._threads

    # --- public API -------------------------------------------------------------------------
    async def run(
        self,
        flow: Flow | Plan,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Start a run of ``flow`` and drive it until it succeeds, fails, waits for review or
        sleeps. A ``run_id`` that a run has already is an idempotent start: that run as it
        stands is the answer (its result once it has finished); a ``RunError`` when its flow
        or inputs differ."""
        plan = flow.compile() if isinstance(flow, Flow) else flow
        bound = plan.bind_inputs(inputs or {})
        inputs_json = _encode_inputs(plan, bound)
        try:
            writer = await self.store.create_run(
                NewRun(
                    run_id or new_run_id(),
                    plan.name,
                    plan.fingerprint,
                    inputs_json,
                    source=plan.source,
                    tags=dict(tags or {}),
                    version=plan.version,
                    patches=tuple(sorted(plan.patches)),
                ),
                self.owner,
            )
        except StoreError:
            # the run id is taken (started before, or by another process just now): that run
            # is the answer — an idempotent start costs nothing until an id is reused
            existing = await self._existing(run_id, plan, inputs_json) if run_id else None
            if existing is None:
                raise
            return existing
        run = _Run(self._observed(writer), tags)
        run.patches = plan.patches
        return await self._drive_run(plan, bound, run)

    async def _existing(self, run_id: str, plan: Plan, inputs_json: str) -> RunResult | None:
        """An idempotent start: the run ``run_id`` as it stands when it exists already (its
        result once finished); a ``RunError`` when it is a run of another flow or inputs."""
        info = await self.store.get_run(run_id)
        if info is None or info.run_id != run_id:
            return None
        if info.flow != plan.name or json.loads(info.inputs or "{}") != json.loads(inputs_json):
            what = "flow" if info.flow != plan.name else "inputs"
            raise RunError(
                f"run {run_id} exists already with other {what} (flow {info.flow!r}, inputs "
                f"{info.inputs}); a start with the same id must repeat them, or use a new id",
                run_id=run_id,
            )
        return result_of(info)

    async def submit(
        self,
        flow: Flow | Plan,
        inputs: Mapping[str, Any] | None = None,
        *,
        queue: str = "default",
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Record a run of ``flow`` on ``queue`` for a worker (``erpoz worker``) and return its
        id at once. Inputs are checked now; the flow needs a ``source`` (a flow file or
        ``module:attr``) so that a worker in another process can load it."""
        plan = flow.compile() if isinstance(flow, Flow) else flow
        if not plan.source:
            raise FlowError(
                f"flow '{plan.name}' has no source, so a worker could not load it: submit a "
                "flow file or 'module:attr' (erpoz submit FLOW), or give "
                "Flow(..., source='package.module:attr')"
            )
        check_queue_name(queue)
        store = self._queue()
        bound = plan.bind_inputs(inputs or {})
        rid = run_id or new_run_id()
        inputs_json = _encode_inputs(plan, bound)
        new = NewRun(
            rid,
            plan.name,
            plan.fingerprint,
            inputs_json,
            source=plan.source,
            tags=dict(tags or {}),
            version=plan.version,
            patches=tuple(sorted(plan.patches)),
        )
        try:
            await store.submit_run(new, queue)
        except StoreError:  # submitted before: the same run (an idempotent submit)
            if run_id is None or await self._existing(run_id, plan, inputs_json) is None:
                raise
        return rid

    def _queue(self) -> RunQueue:
        store = self.store
        if not isinstance(store, RunQueue):
            raise StoreError(
                f"the store {store.url} keeps no queue of runs; use a SQLite file or PostgreSQL",
                path=store.url,
            )
        return store

    async def run_claimed(self, claim: Claim, flow: Flow | Plan | None = None) -> RunResult:
        """Drive a run a worker took from a queue (``RunQueue.claim_next``) on from where its
        log stands: recorded steps keep their outputs, the rest run (again)."""
        info = claim.info
        writer = self._observed(claim.writer)
        try:
            plan = self._plan_for(info.source, flow, info.run_id, cache=True)
            bound = plan.bind_inputs(json.loads(info.inputs or "{}"))
        except (FlowError, RunError) as exc:
            # no worker running this code can run it: say why, once, instead of handing it on
            failure = error_info(exc)
            writer.append(
                ev.RUN_FAILED,
                data={"error": f"worker {self.owner} cannot load the flow: {exc}", **failure},
            )
            await writer.release()
            return RunResult(info.run_id, "failed", error=str(exc), error_info=failure)
        events = await self.store.events(info.run_id)
        try:
            plan, how = choose_plan(plan, events, info.run_id)
        except RunError as exc:  # this code may not run it: say why, once
            failure = error_info(exc)
            writer.append(ev.RUN_FAILED, data={"error": str(exc), **failure})
            await writer.release()
            return RunResult(info.run_id, "failed", error=str(exc), error_info=failure)
        run = self._restored(writer, events)
        waiting = pending_reviews(events)
        if waiting:  # its last owner died between asking for review and pausing
            writer.append(ev.RUN_WAITING, data={"step": next(iter(waiting)), "steps": [*waiting]})
            await writer.release()
            return RunResult(info.run_id, "waiting", waiting_steps=tuple(waiting))
        data: dict[str, Any] = {
            "worker": self.owner,
            "queue": info.queue,
            "claims": info.claims,
            "fingerprint_changed": plan.fingerprint != info.fingerprint,
            "plan": how,
        }
        if claim.previous_owner:
            data["previous_owner"] = claim.previous_owner
        if info.status == "waiting" and info.wake_at is not None:
            data["woke"] = info.wake_at  # its timer was due (or its message came)
        writer.append(ev.RUN_RESUMED, data=data)
        return await self._drive_run(plan, bound, run)

    def _restored(self, writer: RunWriter, events: list[Event]) -> _Run:
        """A run's in-memory state rebuilt from its log."""
        run = _Run(writer, _tags_of(events))
        run.patches = patches_of(events)
        run.recorded.update(_recorded_outputs(events))
        run.grants.update(_granted(events))
        run.effects = RunJournal.of(events)
        from ..models import ModelHub

        hub = self.services.get(ModelHub)
        if isinstance(hub, ModelHub) and hub.budget is not None:
            hub.budget.restore(writer.run_id, events)  # the run's spend goes on from its log
        return run

    async def resume(
        self,
        run_id: str,
        flow: Flow | Plan | None = None,
        *,
        decision: Decision | None = None,
        requeue: bool | None = None,
        wait: bool = False,
    ) -> RunResult:
        """Continue a run that paused for review, crashed, was interrupted, or sleeps.

        A run that sleeps (``ctx.sleep``, ``recv`` …) goes on once its wake time has come; before
        that this returns it as it is (``waiting``, with ``wake_at``), or, with ``wait``, waits
        here until it is due.

        Steps whose success is in the log are not run again; their recorded outputs are used.
        A run of a queue (submitted for workers) that a decision lets go on goes back to its
        queue, for a worker, with status ``queued`` (``requeue=False`` runs it here instead).
        """
        info = await self.store.get_run(run_id)
        if info is None:
            raise RunError(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        run_id = info.run_id
        if info.status in TERMINAL:
            raise RunError(
                f"run {run_id} already {info.status}; nothing to resume (use "
                "`erpoz runs replay` to run it again)",
                run_id=run_id,
            )
        if decision is None and info.status == "waiting" and info.wake_at is not None:
            info = await self._until_due(info, wait)
            if info.status == "waiting" and (info.wake_at or 0) > time.time():
                return result_of(info)
        if requeue is None:
            requeue = decision is not None and info.queue is not None
        if requeue and info.queue is None:
            raise RunError(f"run {run_id} was not submitted to a queue", run_id=run_id)
        plan = self._plan_for(info.source, flow, run_id)
        events = await self.store.events(run_id)
        waiting = pending_reviews(events)
        if waiting and decision is None:
            raise RunError(
                f"run {run_id} is waiting for review of step {', '.join(waiting)}; resume it "
                "with a decision (--approve, --reject or --edit FILE)",
                run_id=run_id,
            )
        if decision is not None and not waiting:
            raise RunError(f"run {run_id} has no step waiting for review", run_id=run_id)
        plan, how = choose_plan(plan, events, run_id)
        bound = plan.bind_inputs(json.loads(info.inputs or "{}"))
        # check the decision before touching the run: a bad edit leaves it waiting, unchanged
        checked = _check_decision(plan, waiting, decision) if decision is not None else None
        writer = self._observed(await self.store.claim_run(run_id, self.owner))
        run = self._restored(writer, events)
        writer.append(
            ev.RUN_RESUMED,
            data={
                "fingerprint_changed": plan.fingerprint != info.fingerprint,
                "plan": how,
                **({"decision": decision.action} if decision else {}),
            },
        )
        if decision is not None and checked is not None:
            _apply_decision(run, waiting[checked[0]], decision, *checked)
        if requeue and run.failure is None:
            writer.append(ev.RUN_QUEUED, data={"queue": info.queue, "after": "review"})
            await writer.release()
            return RunResult(run_id, "queued")
        return await self._drive_run(plan, bound, run)

    async def _until_due(self, info: RunInfo, wait: bool) -> RunInfo:
        """The run once its wake time has come (``wait``), or as it is now."""
        while wait and info.status == "waiting" and info.wake_at is not None:
            left = info.wake_at - time.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 1.0))  # a message may wake it sooner: look again
            info = await self.store.get_run(info.run_id) or info
        return info

    async def wake_due(
        self, flow: Flow | Plan | None = None, *, limit: int = 100
    ) -> list[RunResult]:
        """Resume the sleeping runs (of no queue: workers wake those) whose wake time has come,
        one after the other, here; what became of each. Without ``flow``, the runs whose flow
        has a recorded source; with it, the runs of that flow."""
        mailbox = self._mailbox()
        plan = None if flow is None else flow.compile() if isinstance(flow, Flow) else flow
        results: list[RunResult] = []
        while len(results) < limit:
            # claimed first, then read: two processes waking runs never take the same one
            claim = await mailbox.claim_due(self.owner, flow=None if plan is None else plan.name)
            if claim is None:
                break
            results.append(await self.run_claimed(claim, plan))
        return results

    async def send(self, run_id: str, topic: str, value: Any) -> int:
        """Send ``value`` (JSON data) to run ``run_id`` on ``topic``: kept in the store until the
        run takes it (``ctx.recv(topic, …)``); a run that waits for it wakes. The message's id."""
        mailbox = self._mailbox()
        info = await self.store.get_run(run_id)
        if info is None:
            raise RunError(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        if info.status in TERMINAL:
            raise RunError(
                f"run {info.run_id} already {info.status}; nothing would read a message now",
                run_id=info.run_id,
            )
        check_topic(topic)
        try:
            payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RunError(f"a message must be JSON data: {exc}", run_id=info.run_id) from None
        return await mailbox.send_message(info.run_id, topic, payload)

    async def get_event(self, run_id: str, key: str, *, timeout: float = 0.0) -> Any:
        """Run ``run_id``'s event ``key`` (``ctx.set_event``), waiting up to ``timeout``
        seconds for it to be set; ``None`` when it is not."""
        mailbox = self._mailbox()
        info = await self.store.get_run(run_id)
        if info is None:
            raise RunError(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            payload = await mailbox.get_run_event(info.run_id, key)
            if payload is not None:
                return json.loads(payload)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(left, self.waits.poll_s))

    def _mailbox(self) -> Mailbox:
        if self.waits.store is None:
            raise StoreError(
                f"the store {self.store.url} keeps no messages or run events",
                path=self.store.url,
            )
        return self.waits.store

    async def replay(
        self, run_id: str, from_step: str, flow: Flow | Plan | None = None
    ) -> RunResult:
        """Re-run ``run_id`` from ``from_step`` as a new run linked to it: steps upstream keep
        their recorded outputs; ``from_step`` and everything after it run again (a
        :meth:`fork` that changes no input)."""
        return await self.fork(run_id, from_step, flow=flow)

    async def fork(
        self,
        parent: str,
        from_step: str | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        flow: Flow | Plan | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """A new run (``run_id``, else a new id) that starts where run ``parent`` stands, linked
        to it as its parent: ``inputs`` replace some of its recorded inputs, and the steps that
        run again are ``from_step`` and everything after it, and every step that reads a changed
        input and everything after those; the others keep their recorded outputs. This
        engine's services (models, tools: another ``--config``) and ``flow`` (a changed version)
        serve the new run."""
        new_id = run_id or new_run_id()
        info = await self.store.get_run(parent)
        if info is None:
            raise RunError(f"no run {parent!r} in {self.store.url}", run_id=parent)
        plan = self._plan_for(info.source, flow, info.run_id)
        old_inputs = json.loads(info.inputs or "{}")
        bound = plan.bind_inputs({**old_inputs, **(inputs or {})})
        inputs_json = _encode_inputs(plan, bound)
        new_inputs = json.loads(inputs_json)
        changed = {k for k in new_inputs if new_inputs[k] != old_inputs.get(k, _PENDING)}
        rerun = plan.downstream(from_step) if from_step is not None else set()
        rerun |= plan.affected_by(changed)
        if not rerun:
            raise RunError(
                f"a fork of run {info.run_id} needs a step to run again from (--from STEP) or "
                "an input that changes (-i name=value)",
                run_id=info.run_id,
            )
        first = from_step or next(n.id for n in plan.nodes if n.id in rerun)
        events = await self.store.events(info.run_id)
        run_tags = {**_tags_of(events), **(tags or {})}
        writer = await self.store.create_run(
            NewRun(
                new_id,
                plan.name,
                plan.fingerprint,
                inputs_json,
                source=plan.source,
                parent_run_id=info.run_id,
                replay_from=first,
                tags=run_tags,
                version=plan.version,
                patches=tuple(sorted(plan.patches)),
            ),
            self.owner,
        )
        run = _Run(self._observed(writer), run_tags)
        for step_id, payload in _recorded_outputs(events).items():
            if top_step(step_id) in rerun:
                continue
            run.recorded[step_id] = payload
            if payload is None:
                writer.append(ev.STEP_SKIPPED, step_id, data={"copied_from": info.run_id})
            else:
                writer.append(
                    ev.STEP_SUCCEEDED, step_id, data={"copied_from": info.run_id}, payload=payload
                )
        return await self._drive_run(plan, bound, run)

    async def cancel(self, run_id: str) -> str:
        """Cancel a run: at once if no process is running it, else at its next step."""
        info = await self.store.get_run(run_id)
        if info is None:
            raise RunError(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        if info.status in TERMINAL:
            raise RunError(f"run {info.run_id} already {info.status}", run_id=info.run_id)
        await self.store.request_cancel(info.run_id)
        if info.run_id in self._driving:
            return "requested"  # this engine runs it and stops it before its next step
        try:
            writer = await self.store.claim_run(info.run_id, self.owner)
        except StoreError:
            return "requested"  # a live process owns it and will stop at its next step
        writer.append(ev.RUN_CANCELLED, data={"by": "request"})
        await writer.release()
        return "cancelled"

    # --- driving ----------------------------------------------------------------------------
    def _observed(self, writer: RunWriter) -> RunWriter:
        if not self.observers and not self.listeners:
            return writer
        return _ObservedWriter(writer, self.observers, self.listeners)

    def _plan_for(
        self, source: str | None, flow: Flow | Plan | None, run_id: str, *, cache: bool = False
    ) -> Plan:
        if flow is not None:
            return flow.compile() if isinstance(flow, Flow) else flow
        if cache and source in self._plans:
            return self._plans[source]
        if not source:
            raise RunError(
                f"run {run_id} was started from a flow object with no source; pass the flow "
                "(Engine.resume(run_id, flow)) or start runs from a flow file / module:attr",
                run_id=run_id,
            )
        from ..flow import load_flow

        plan = load_flow(source).compile()
        if cache:
            self._plans[source] = plan
        return plan

    async def _drive_run(self, plan: Plan, inputs: Mapping[str, Any], run: _Run) -> RunResult:
        writer = run.writer
        run.flow = plan.name
        rails = self._guardrails()
        if (
            rails is not None
            and plan.delivery
            and (rails.active("delivery") or rails.policy.delivery_untrusted != "allow")
        ):
            run.rails, run.delivery = rails, plan.delivery
        scope = _Scope(run, plan, inputs, "")
        self._driving.add(writer.run_id)
        IN_FLIGHT.enter()  # many runs at once: the GC is held back meanwhile (see _gc)
        try:
            await self._execute(scope)
        except BaseException:
            # Interrupted (Ctrl-C, a cancelled task): keep what was recorded, stay resumable.
            for t in list(run._tasks or ()):
                t.cancel()
            await writer.release()
            raise
        finally:
            IN_FLIGHT.leave()
            self._driving.discard(writer.run_id)
        run_id = writer.run_id
        if run.lost:
            with contextlib.suppress(StoreError):
                await writer.release()
            raise StoreError(
                f"run {run_id} was taken over by another process (this one held it past its "
                "lease); it goes on there, from its log",
                path=self.store.url,
            )
        if run.cancelled:
            writer.append(ev.RUN_CANCELLED, data={"by": "request"})
            await writer.release()
            return RunResult(run_id, "cancelled", error="cancelled on request")
        if run.failure is not None:
            f = run.failure
            writer.append(
                ev.RUN_FAILED,
                data={
                    "error": f"step '{f.step_id}' failed: {f.message}",
                    "step": f.step_id,
                    **f.info,
                },
            )
            await writer.release()
            return RunResult(
                run_id, "failed", error=f.message, failed_step=f.step_id, error_info=f.info
            )
        if run.paused:
            data: dict[str, Any] = {"step": run.paused[0], "steps": run.paused}
            wake = run.wake()
            if wake is not None:
                data["wake_at"], data["wake_on"] = wake
            writer.append(ev.RUN_WAITING, data=data)
            await writer.release()
            if wake is not None and wake[1] is not None:
                await self._came_meanwhile(run, wake[1])
            return RunResult(
                run_id,
                "waiting",
                waiting_steps=tuple(run.paused),
                wake_at=None if wake is None else wake[0],
                wake_on=None if wake is None else wake[1],
            )
        output = plan.output(scope.outs, inputs)
        if output is SKIPPED:
            output = None
        try:
            payload = encode(output, plan.output_type)
        except EncodeError as exc:
            failure = _info("EncodeError", f"flow output: {exc}")
            writer.append(ev.RUN_FAILED, data={"error": f"flow output: {exc}", **failure})
            await writer.release()
            return RunResult(run_id, "failed", error=f"flow output: {exc}", error_info=failure)
        writer.append(ev.RUN_SUCCEEDED, data={"steps_run": run.done_steps}, payload=payload)
        await writer.release()
        return RunResult(run_id, "succeeded", output=output)

    async def _came_meanwhile(self, run: _Run, on: str) -> None:
        """Wake a run whose message (or awaited event) came between its step's last look and
        its going to wait: the sender saw it running, so did not wake it."""
        mailbox = self._mailbox()
        run_id = run.writer.run_id
        kind, _, rest = on.partition(":")
        if kind == "msg":
            came = any(m not in run.effects.taken for m, _ in await mailbox.messages(run_id, rest))
        else:
            of_run, _, key = rest.partition(":")
            came = await mailbox.get_run_event(of_run, key) is not None
        if came:
            await mailbox.wake_run(run_id)

    async def _execute(self, scope: _Scope) -> None:
        """Run every node of the scope's plan; returns when none is running any more."""
        roots = scope.plan.roots
        scope.active = len(roots)
        for r in roots[1:]:
            self._spawn(scope, r)
        await self._drive(scope, roots[0])
        if scope.active:
            scope.done = asyncio.get_running_loop().create_future()
            await scope.done

    def _spawn(self, scope: _Scope, idx: int) -> None:
        task = asyncio.get_running_loop().create_task(self._drive(scope, idx))
        tasks = scope.run.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _drive(self, scope: _Scope, idx: int) -> None:
        run = scope.run
        nodes = scope.plan.nodes
        outs, pending = scope.outs, scope.pending
        try:
            while True:
                if run.stopping or run.writer.cancel_requested or run.writer.lost:
                    if run.writer.lost:
                        run.lost = run.stopping = True
                    elif run.writer.cancel_requested:
                        run.cancelled = run.stopping = True
                    break
                node = nodes[idx]
                try:
                    # the common step takes the fast path (PlanNode.plain): one coroutine
                    # instead of four (_node, _unit, _succeed, flush), the same events
                    if node.plain:
                        value = await self._plain(scope, node)
                    else:
                        value = await self._node(scope, node)
                except _Pause as p:
                    run.pause(p)
                    break
                except _Failed as f:
                    if run.failure is None:
                        run.failure = f
                    run.stopping = True
                    break
                outs[idx] = value
                nxt = -1
                for d in node.dependents:
                    pending[d] -= 1
                    if pending[d] == 0:
                        if nxt < 0:
                            nxt = d
                        else:
                            scope.active += 1
                            self._spawn(scope, d)
                if nxt < 0:
                    break
                idx = nxt
        finally:
            scope.active -= 1
            if scope.active == 0 and scope.done is not None and not scope.done.done():
                scope.done.set_result(None)

    async def _node(self, scope: _Scope, node: PlanNode) -> Any:
        run = scope.run
        sid = scope.prefix + node.id if scope.prefix else node.id
        if sid in run.recorded:
            return _replayed(run, sid, node.out_type)
        outs, inputs = scope.outs, scope.inputs
        kwargs = {name: g(outs, inputs) for name, g in node.args}
        if (node.may_skip and SKIPPED in kwargs.values()) or (
            node.when is not None and not _eval_when(node, outs, inputs, sid)
        ):
            run.writer.append(ev.STEP_SKIPPED, sid)
            return SKIPPED
        if node.kind == MAP:
            return await self._map(scope, node, sid, kwargs)
        if node.kind == LOOP:
            return await self._loop(scope, node, sid, kwargs)
        return await self._unit(scope, node, sid, kwargs)

    async def _plain(self, scope: _Scope, node: PlanNode) -> Any:
        """``_node`` + ``_unit`` + ``_succeed`` for a step that uses no per-step feature
        (``PlanNode.plain``): what it writes is what they write (``step_started``, then
        ``step_succeeded`` or, on an exception, whatever ``_unit`` makes of it), with nothing
        looked up or awaited that such a step does not need. Keep the two in step."""
        run = scope.run
        sid = scope.prefix + node.id if scope.prefix else node.id
        if sid in run.recorded:
            return _replayed(run, sid, node.out_type)
        outs, inputs = scope.outs, scope.inputs
        kwargs = {}
        for name, g in node.args:  # a loop: a comprehension is one more call (Python 3.11)
            kwargs[name] = g(outs, inputs)
        writer = run.writer
        writer.append(ev.STEP_STARTED, sid, 1)
        spec = node.spec
        t0 = time.perf_counter()
        try:
            out = await spec.fn(**kwargs) if spec.is_async else spec.fn(**kwargs)  # type: ignore[union-attr]
        except Exception as exc:  # retries, reviews, suspensions, failures: the general path
            return await self._unit(scope, node, sid, kwargs, raised=(exc, t0))
        seconds = time.perf_counter() - t0
        # The run's last step: its success is committed with the run's end (as in _unit).
        flush = bool(scope.prefix or node.dependents or scope.active != 1)
        if run.rails is not None:  # the delivery checkpoint may apply: the general path
            return await self._succeed(run, node, sid, 1, out, node.unit_type, seconds, flush=flush)
        _record_success(run, sid, 1, out, node.unit_type, seconds)
        if flush and run.flushes:
            await writer.flush()
        run.done_steps += 1
        return out

    async def _map(self, scope: _Scope, node: PlanNode, sid: str, kwargs: dict[str, Any]) -> Any:
        items = node.over(scope.outs, scope.inputs)  # type: ignore[misc]
        if items is SKIPPED:
            scope.run.writer.append(ev.STEP_SKIPPED, sid)
            return SKIPPED
        items = list(items)
        n = len(items)
        results: list[Any] = [None] * n
        run, item = scope.run, node.item
        scope.run.writer.append(ev.STEP_STARTED, sid, 1, {"items": n})
        t0 = time.perf_counter()
        cursor = iter(range(n))
        errors: list[BaseException] = []

        async def worker() -> None:
            for i in cursor:
                if run.stopping:
                    return
                item_sid = f"{sid}[{i}]"
                try:
                    if item_sid in run.recorded:
                        results[i] = _replayed(run, item_sid, node.unit_type)
                        continue
                    results[i] = await self._unit(
                        scope,
                        node,
                        item_sid,
                        {**kwargs, item: items[i]},  # type: ignore[dict-item]
                    )
                except (_Pause, _Failed) as exc:
                    errors.append(exc)
                    if isinstance(exc, _Failed):
                        run.stopping = True
                        return

        width = min(node.concurrency, n)
        if width <= 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(width)))
        for exc in errors:
            if isinstance(exc, _Failed):
                raise exc
        if errors:
            for exc in errors[1:]:
                run.pause(exc)  # type: ignore[arg-type]
            raise errors[0]
        return await self._succeed(
            scope.run, node, sid, 1, results, node.out_type, time.perf_counter() - t0, {"items": n}
        )

    async def _loop(self, scope: _Scope, node: PlanNode, sid: str, kwargs: dict[str, Any]) -> Any:
        state = node.init(scope.outs, scope.inputs)  # type: ignore[misc]
        until, key = node.until, node.state
        scope.run.writer.append(ev.STEP_STARTED, sid, 1, {"max_iterations": node.max_iterations})
        converged = False
        t0 = time.perf_counter()
        for k in range(1, node.max_iterations + 1):
            iter_sid = f"{sid}#{k}"
            if iter_sid in scope.run.recorded:
                state = _replayed(scope.run, iter_sid, node.unit_type)
            else:
                state = await self._unit(scope, node, iter_sid, {**kwargs, key: state})  # type: ignore[dict-item]
            if get_field(state, until) if until else state:
                converged = True
                break
        return await self._succeed(
            scope.run,
            node,
            sid,
            1,
            state,
            node.out_type,
            time.perf_counter() - t0,
            {"iterations": k, "converged": converged},
        )

    async def _unit(
        self,
        scope: _Scope,
        node: PlanNode,
        sid: str,
        kwargs: dict[str, Any],
        *,
        raised: tuple[Exception, float] | None = None,
    ) -> Any:
        """Run one execution of a step (a task, one map item or one loop iteration).
        ``raised``: the fast path (``_plain``) ran attempt 1 already and it raised this (it
        started at that ``perf_counter``); it is handled here as if raised here."""
        if node.sub is not None:
            return await self._sub_unit(scope, node, sid, kwargs)
        run = scope.run
        writer = run.writer
        spec = node.spec
        assert spec is not None
        cache_key = None
        if node.cache:
            cache_key, hit = await self._cache_lookup(run, node, sid, kwargs)
            if hit is not None:
                return await _served_from_cache(run, node, sid, hit)
        remote = self.executor.remote and (
            node.resources is not None
            or not (spec.is_async or spec.inline or spec.context_param is not None)
        )
        attempt = 1
        while True:
            if raised is None:  # else attempt 1 ran on the fast path: its exception, below
                writer.append(ev.STEP_STARTED, sid, attempt)
            rctx: RemoteContext | None = None
            if spec.context_param is not None:
                rctx = self._give_context(scope, sid, attempt, kwargs, spec.context_param, remote)
            t0 = time.perf_counter() if raised is None else raised[1]
            try:
                if raised is not None:
                    first, raised = raised[0], None
                    raise first
                out = await self._call_step(node, kwargs, remote)
            except Suspend as s:
                raise _Pause(sid, s.wake_at, s.wake_on) from None
            except ReviewRequired as rr:
                _record_emitted(writer, rctx, sid, attempt)
                return await self._review_asked(run, node, sid, attempt, rr, t0)
            except Exception as exc:
                _record_emitted(writer, rctx, sid, attempt)
                delay = _retry_delay_or_fail(writer, node, sid, attempt, exc)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            _record_emitted(writer, rctx, sid, attempt)
            break
        if node.review:
            return await self._review_by_step(run, node, sid, attempt, out, t0)
        # The run's last step: its success is committed with the run's end, a moment later
        # (release), not on its own. Nothing depends on it, so nothing starts in between.
        last = not scope.prefix and not node.dependents and scope.active == 1 and sid == node.id
        result = await self._succeed(
            run, node, sid, attempt, out, node.unit_type, time.perf_counter() - t0, flush=not last
        )
        if cache_key is not None:
            await self.store.cache_put(cache_key, spec.ref, encode(out, node.unit_type))
        return result

    async def _call_step(self, node: PlanNode, kwargs: dict[str, Any], remote: bool) -> Any:
        """Call the step's function once: on the executor (``remote``), awaited, inline or on
        a local thread, under the step's timeout."""
        spec = node.spec
        assert spec is not None
        timeout, fn = node.timeout, spec.fn
        if remote:
            call = self.executor.call(fn, kwargs, node.resources)
            return await (call if timeout is None else asyncio.wait_for(call, timeout))
        if spec.is_async:
            if timeout is None:
                return await fn(**kwargs)
            return await asyncio.wait_for(fn(**kwargs), timeout)
        if spec.inline:
            return fn(**kwargs)
        call = self._local_threads().call(fn, kwargs)
        return await (call if timeout is None else asyncio.wait_for(call, timeout))

    async def _cache_lookup(
        self, run: _Run, node: PlanNode, sid: str, kwargs: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        """A cached step's cache key (``None`` when its inputs cannot be keyed) and what the
        cache holds under it. A delivery step's output is guarded on every run: never served
        from (or stored in) the cache, which would hold it from before redaction."""
        if run.rails is not None and sid in run.delivery:
            return None, None
        spec = node.spec
        assert spec is not None
        cache_key = _cache_key(spec.ref, spec.version, kwargs, node)
        if cache_key is None:
            return None, None
        return cache_key, await self.store.cache_get(cache_key)

    async def _sub_unit(
        self, scope: _Scope, node: PlanNode, sid: str, kwargs: dict[str, Any]
    ) -> Any:
        """Run a sub-flow step: its flow in a scope of its own, its output the step's."""
        run = scope.run
        assert node.sub is not None
        run.writer.append(ev.STEP_STARTED, sid, 1)
        t0 = time.perf_counter()
        sub = _Scope(run, node.sub, node.sub.bind_inputs(kwargs), sid + "/")
        await self._execute(sub)
        if run.failure is not None:
            raise _Failed(
                sid,
                f"sub-flow step '{run.failure.step_id}' failed: {run.failure.message}",
                1,
                run.failure.info,
            )
        if run.paused or run.stopping:
            raise _Pause(sid) if run.paused else _Failed(sid, "stopped", 1)
        out = node.sub.output(sub.outs, sub.inputs)
        return await self._succeed(
            run,
            node,
            sid,
            1,
            None if out is SKIPPED else out,
            node.unit_type,
            time.perf_counter() - t0,
        )

    def _give_context(
        self,
        scope: _Scope,
        sid: str,
        attempt: int,
        kwargs: dict[str, Any],
        param: str,
        remote: bool,
    ) -> RemoteContext | None:
        """Put the step's context in its arguments (under ``param``): one that travels to a
        remote executor (returned: what it emitted is recorded after the call), or the full
        one for this process."""
        run = scope.run
        writer = run.writer
        if remote:
            rctx = RemoteContext(writer.run_id, sid, attempt, scope.plan.name, run.tags)
            kwargs[param] = rctx
            return rctx
        kwargs[param] = StepContext(
            writer,
            sid,
            attempt,
            self.services,
            scope.plan.name,
            run.tags,
            run.grants,
            run.effects,
            self.token_listeners,
            self.waits,
            patches=(run.patches, scope.plan.patches),
        )
        return None

    async def _review_asked(
        self, run: _Run, node: PlanNode, sid: str, attempt: int, rr: ReviewRequired, t0: float
    ) -> Any:
        """The step asked for review (``ReviewRequired``): its proposal waits for a reviewer."""
        proposal = rr.output
        if rr.grant is None and run.rails is not None and sid in run.delivery:
            # what the reviewer sees and approves is what may be delivered
            proposal = await self._deliver(
                run, node, sid, attempt, proposal, time.perf_counter() - t0
            )
        return await self._review(
            run, node, sid, attempt, proposal, rr.reason, rr.evidence, grant=rr.grant
        )

    async def _review_by_step(
        self, run: _Run, node: PlanNode, sid: str, attempt: int, out: Any, t0: float
    ) -> Any:
        """A step declared with review: its output waits for a reviewer."""
        if run.rails is not None and sid in run.delivery:
            out = await self._deliver(run, node, sid, attempt, out, time.perf_counter() - t0)
        return await self._review(
            run,
            node,
            sid,
            attempt,
            out,
            "review required by step",
            None,
            time.perf_counter() - t0,
        )

    async def _succeed(
        self,
        run: _Run,
        node: PlanNode,
        sid: str,
        attempt: int,
        out: Any,
        tp: Any,
        seconds: float,
        extra: dict[str, Any] | None = None,
        *,
        deliver: bool = True,
        flush: bool = True,
    ) -> Any:
        if deliver and run.rails is not None and sid == node.id and sid in run.delivery:
            out = await self._deliver(run, node, sid, attempt, out, seconds)
        _record_success(run, sid, attempt, out, tp, seconds, extra)
        if flush:
            await run.writer.flush()
        run.done_steps += 1
        return out

    async def _review(
        self,
        run: _Run,
        node: PlanNode,
        sid: str,
        attempt: int,
        proposal: Any,
        reason: str,
        evidence: Any,
        seconds: float = 0.0,
        *,
        grant: str | None = None,
    ) -> Any:
        decision = run.reviews.pop(sid, None)
        if decision is not None and grant is None:  # decided on resume before the proposal
            return await self._succeed(
                run, node, sid, attempt, proposal, node.unit_type, seconds, deliver=False
            )
        payload: str | None = None
        if grant is None:
            try:
                payload = encode(proposal, node.unit_type)
            except EncodeError as exc:
                raise _failed(run.writer, sid, attempt, _info("EncodeError", str(exc))) from None
        data: dict[str, Any] = {"reason": reason}
        if grant is not None:
            data["grant"] = grant
        if evidence is not None:
            data["evidence"] = evidence
        run.writer.append(ev.REVIEW_REQUESTED, sid, attempt, data, payload)
        await run.writer.flush()
        raise _Pause(sid)

    async def _deliver(
        self, run: _Run, node: PlanNode, sid: str, attempt: int, out: Any, seconds: float
    ) -> Any:
        """The delivery checkpoint: guard the output that becomes the flow's result."""
        from ..guards import Guardrails
        from ..policy import Subject

        rails = run.rails
        assert isinstance(rails, Guardrails)
        writer = run.writer
        subject = Subject(run.flow, sid, run.tags.get("tenant", "-"), run.tags.get("user", "-"))
        if not rails.active("delivery"):
            return await self._deliver_untrusted(run, node, sid, attempt, out, seconds)
        verdict, value = rails.inspect_value("delivery", out, subject)
        rails.observe(verdict, lambda k, d: writer.append(k, sid, attempt, d), step=sid, model=None)
        if verdict.passed:
            return await self._deliver_untrusted(run, node, sid, attempt, out, seconds)
        if verdict.action == "redact":
            return await self._deliver_untrusted(run, node, sid, attempt, value, seconds)
        kinds = ", ".join(sorted({d.to_json()["data"] for d in verdict.decided}))
        if verdict.action == "review":
            await self._review(
                run,
                node,
                sid,
                attempt,
                out,
                f"delivery needs review ({verdict.rule}: {kinds})",
                verdict.evidence(),
                seconds,
            )
        blocked = GuardBlocked(
            f"delivery blocked by rule {verdict.rule!r} ({kinds})",
            checkpoint="delivery",
            rule=verdict.rule,
        )
        raise _failed(writer, sid, attempt, error_info(blocked))

    async def _deliver_untrusted(
        self, run: _Run, node: PlanNode, sid: str, attempt: int, out: Any, seconds: float
    ) -> Any:
        """Information-flow control at the delivery: a result derived from untrusted content
        is delivered, fails the run or waits for a person, as the policy's
        ``delivery_untrusted`` says (a ``policy_decided`` event records which)."""
        from ..guards import Guardrails

        rails = run.rails
        assert isinstance(rails, Guardrails)
        action = rails.policy.delivery_untrusted
        if action == "allow":
            return out
        sources = run.effects.provenance.derived(sid, out)
        if not sources:
            return out
        rule = "policy: delivery_untrusted"
        data = {
            "resource": "delivery",
            "action": action,
            "rule": rule,
            "flow": run.flow,
            "step": sid,
            "provenance": {"result": "untrusted", "sources": list(sources)},
        }
        run.writer.append("policy_decided", sid, attempt, data)
        why = f"the result of step '{sid}' derives from untrusted content ({', '.join(sources)})"
        if action == "review":
            evidence = {"delivery": sid, "sources": list(sources)}
            await self._review(
                run, node, sid, attempt, out, f"delivery needs review: {why}", evidence, seconds
            )
        denied = PolicyViolation(f"delivery denied: {why} ({rule})", rule=rule)
        raise _failed(run.writer, sid, attempt, error_info(denied))

    def _guardrails(self) -> Guardrails | None:
        from ..guards import Guardrails

        rails = self.services.get(Guardrails)
        return rails if isinstance(rails, Guardrails) else None


# --- helpers ---------------------------------------------------------------------------------
def _tags_of(events: list[Event]) -> dict[str, str]:
    """The tags a run was started with (tenant, user, …)."""
    if events and events[0].kind == ev.RUN_STARTED:
        tags = (events[0].data or {}).get("tags")
        if isinstance(tags, dict):
            return {str(k): str(v) for k, v in tags.items()}
    return {}


def _granted(events: list[Event]) -> set[str]:
    """The approvals reviewers granted in a run."""
    return {
        e.data["grant"]
        for e in events
        if e.kind == ev.REVIEW_RESOLVED
        and e.data
        and e.data.get("grant")
        and e.data.get("decision") == "approve"
    }


def result_of(info: RunInfo) -> RunResult:
    """A run's :class:`RunResult` as its row says (an idempotent start returns this)."""
    output = None if info.output is None else json.loads(info.output)
    waiting = (info.waiting_step,) if info.status == "waiting" and info.waiting_step else ()
    return RunResult(
        info.run_id,
        info.status,
        output=output,
        error=info.error,
        waiting_steps=waiting,
        wake_at=info.wake_at if info.status == "waiting" else None,
        wake_on=info.wake_on if info.status == "waiting" else None,
    )


def _clock(ts: float | None) -> str:
    """A wake time for people: UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts or 0))


_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


def check_topic(topic: str) -> None:
    """A message topic is named like ``reply``, ``webhook.stripe`` (≤ 128 characters)."""
    if not _TOPIC.match(topic):
        raise RunError(
            f"topic {topic!r}: use letters, digits, '_', '-', '.', ':' or '/' (at most 128, "
            "starting with a letter or digit)"
        )


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def check_queue_name(queue: str) -> None:
    """A queue is named like ``default``, ``gpu``, ``team-a.batch`` (≤ 64 characters)."""
    if not _QUEUE_NAME.match(queue):
        raise RunError(
            f"queue name {queue!r}: use letters, digits, '_', '-', '.' or ':' "
            "(at most 64, starting with a letter or digit)"
        )


async def _served_from_cache(run: _Run, node: PlanNode, sid: str, hit: str) -> Any:
    """A step's output found in the cache: recorded as a cached success (attempt 0)."""
    writer = run.writer
    writer.append(ev.STEP_SUCCEEDED, sid, 0, {"cached": True}, hit)
    await writer.flush()
    run.done_steps += 1
    return decode(hit, node.unit_type)


def _retry_delay_or_fail(
    writer: RunWriter, node: PlanNode, sid: str, attempt: int, exc: Exception
) -> float:
    """A step's attempt raised ``exc``: the seconds to wait before the next attempt (recorded
    as a retry) when its retry policy allows one, else the step's failure, raised."""
    retry, timeout = node.retry, node.timeout
    if isinstance(exc, TimeoutError):
        exc = TimeoutError(f"timed out after {timeout} s")
    info = error_info(exc, retryable=is_retryable(exc))
    if attempt < retry.attempts and retry.retries(exc):
        delay = retry.delay(attempt)
        writer.append(
            ev.STEP_RETRIED,
            sid,
            attempt,
            {"error": f"{type(exc).__name__}: {exc}", **info, "delay_s": delay},
        )
        return delay
    tb = "".join(traceback.format_exception(exc, limit=-8))
    raise _failed(writer, sid, attempt, info, traceback=tb) from exc


def _record_emitted(writer: RunWriter, ctx: RemoteContext | None, sid: str, attempt: int) -> None:
    """The events a remotely run step emitted, recorded here in the order it emitted them."""
    if ctx is not None and ctx.emitted:
        for kind, data in ctx.emitted:
            writer.append(kind, sid, attempt, data)
        ctx.emitted = []


_GRANTED = "\x00granted"


def _check_decision(
    plan: Plan, waiting: dict[str, Event], decision: Decision
) -> tuple[str, str | None]:
    """Which waiting step the decision is for, and the output it records (None: reject)."""
    if decision.step is not None:
        if decision.step not in waiting:
            raise RunError(
                f"step {decision.step!r} is not waiting for review (waiting: {', '.join(waiting)})"
            )
        sid = decision.step
    elif len(waiting) > 1:
        raise RunError(f"several steps wait for review ({', '.join(waiting)}); name one")
    else:
        sid = next(iter(waiting))
    if decision.action == "reject":
        return sid, None
    if (waiting[sid].data or {}).get("grant"):
        if decision.action != "approve":
            raise RunError(
                f"step {sid} waits for an approval ({waiting[sid].data['reason']}); approve or "
                "reject it — there is no output to edit"
            )
        return sid, _GRANTED
    if decision.action == "approve":
        return sid, waiting[sid].payload or "null"
    tp = _unit_type_of(plan, sid)
    try:
        value = validate(decision.output, tp)
    except ValueError as exc:
        raise InvalidOutput(
            f"the edited output for step {sid} does not fit its type {type_name(tp)}: {exc}; "
            "the run still waits for review",
            step=sid,
        ) from None
    return sid, encode(value, tp)


def _apply_decision(
    run: _Run, request: Event, decision: Decision, sid: str, payload: str | None
) -> None:
    writer = run.writer
    meta = {
        "decision": decision.action,
        "reviewer": decision.reviewer or _whoami(),
        "comment": decision.comment,
        "requested_seq": request.seq,
    }
    if payload is None:
        writer.append(ev.REVIEW_RESOLVED, sid, request.attempt, meta)
        info = _info(
            "Rejected", "rejected by reviewer", reviewer=meta["reviewer"], comment=meta["comment"]
        )
        writer.append(
            ev.STEP_FAILED, sid, request.attempt, {"error": "rejected by reviewer", **info}
        )
        why = f": {decision.comment}" if decision.comment else ""
        run.failure = _Failed(sid, f"rejected by reviewer {meta['reviewer']}{why}", 1, info)
        run.stopping = True  # nothing more runs in a rejected run
        return
    if payload == _GRANTED:  # a permission: the step runs again and may now go ahead
        grant = (request.data or {})["grant"]
        writer.append(ev.REVIEW_RESOLVED, sid, request.attempt, {**meta, "grant": grant})
        run.grants.add(grant)
        return
    writer.append(ev.REVIEW_RESOLVED, sid, request.attempt, meta, payload)
    writer.append(ev.STEP_SUCCEEDED, sid, request.attempt, {"reviewed": decision.action}, payload)
    run.recorded[sid] = payload


class _ObservedWriter:
    """Tells observers about each event; used only when there are observers."""

    __slots__ = ("_inner", "_listeners", "_observers", "run_id")

    def __init__(
        self, inner: RunWriter, observers: list[Observer], listeners: list[Listener]
    ) -> None:
        self._inner = inner
        self._observers = observers
        self._listeners = listeners
        self.run_id = inner.run_id

    @property
    def cancel_requested(self) -> bool:
        return self._inner.cancel_requested

    @property
    def lost(self) -> bool:
        return self._inner.lost

    def append(
        self,
        kind: str,
        step: str | None = None,
        attempt: int = 0,
        data: dict[str, Any] | None = None,
        payload: str | None = None,
    ) -> None:
        self._inner.append(kind, step, attempt, data, payload)
        for obs in self._observers:
            obs(kind, step, attempt, data)
        for listen in self._listeners:
            listen(self.run_id, kind, step, attempt, data)

    async def flush(self) -> None:
        await self._inner.flush()

    async def settle(self) -> None:
        await self._inner.settle()

    async def commit(self) -> None:
        await self._inner.commit()

    async def release(self) -> None:
        await self._inner.release()


def _record_success(
    run: _Run,
    sid: str,
    attempt: int,
    out: Any,
    tp: Any,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Append a step's ``step_succeeded`` (its output checked against its declared type and
    encoded; a wrong type or an output JSON cannot hold fails the step)."""
    writer = run.writer
    exact = EXACT_ENCODERS.get(tp)
    if exact is not None and type(out) is tp:  # the usual int / str / ...: checked already
        payload = exact(out)
    else:
        payload = _checked_payload(writer, sid, attempt, out, tp)
    # milliseconds to 3 decimals: round() to an int and a division (round(x, 3) formats
    # the float in C, several times the cost, for the same figure within a microsecond)
    data = {"ms": round(seconds * 1e6) / 1000.0}
    if extra:
        data.update(extra)
    writer.append(ev.STEP_SUCCEEDED, sid, attempt, data, payload)
    effects = run._effects  # None: nothing read untrusted content yet
    if effects is not None and effects.provenance.steps:  # a step that read untrusted content
        effects.provenance.output(sid, out)


def _checked_payload(writer: RunWriter, sid: str, attempt: int, out: Any, tp: Any) -> str:
    """The JSON of a step's output, or the step fails: not of its declared type, or not
    something JSON holds."""
    if not check_type(out, tp):
        msg = (
            f"returned {type(out).__name__} {out!r:.80}, but its declared output type is "
            f"{type_name(tp)}"
        )
        info = _info("TypeError", msg, expected=type_name(tp), got=type(out).__name__)
        raise _failed(writer, sid, attempt, info)
    try:
        return encode(out, tp)
    except EncodeError as exc:
        raise _failed(writer, sid, attempt, _info("EncodeError", str(exc))) from None


def _replayed(run: _Run, sid: str, tp: Any) -> Any:
    """The output a step execution recorded before (resume, replay): it does not run again."""
    payload = run.recorded[sid]
    return SKIPPED if payload is None else decode(payload, tp)


def _eval_when(node: PlanNode, outs: list[Any], inputs: Mapping[str, Any], sid: str) -> bool:
    try:
        return node.when(outs, inputs)  # type: ignore[misc]
    except Exception as exc:
        raise _Failed(
            sid, f"cannot evaluate when= condition: {type(exc).__name__}: {exc}", 0
        ) from exc


def _recorded_outputs(events: list[Event]) -> dict[str, str | None]:
    """Each step execution's recorded output JSON (None for a skipped step)."""
    recorded: dict[str, str | None] = {}
    for e in events:
        if e.kind == ev.STEP_SUCCEEDED and e.step is not None:
            recorded[e.step] = e.payload or "null"
        elif e.kind == ev.STEP_SKIPPED and e.step is not None:
            recorded[e.step] = None
    return recorded


def pending_reviews(events: list[Event]) -> dict[str, Event]:
    """The steps of a run's log that wait for a decision, with their review request."""
    waiting: dict[str, Event] = {}
    for e in events:
        if e.kind == ev.REVIEW_REQUESTED and e.step is not None:
            waiting[e.step] = e
        elif e.kind in (ev.REVIEW_RESOLVED, ev.STEP_SUCCEEDED) and e.step in waiting:
            del waiting[e.step]
    return waiting


def review_items(info: RunInfo, events: list[Event]) -> list[dict[str, Any]]:
    """What a waiting run asks its reviewers, one item per waiting step (``erpoz review ls``
    and the server's ``/api/reviews`` show these)."""
    now = time.time()
    return [
        {
            "run_id": info.run_id,
            "flow": info.flow,
            "step": sid,
            "reason": e.data.get("reason", ""),
            "evidence": e.data.get("evidence"),
            "requested_at": e.ts,
            "waiting_s": round(now - e.ts, 1),
            "proposal": None if e.payload is None else json.loads(e.payload),
            "grant": e.data.get("grant"),
        }
        for sid, e in pending_reviews(events).items()
    ]


def top_step(step_id: str) -> str:
    """The top-level step of an execution id: ``answer[3]`` (map item), ``revise#2`` (loop
    iteration) and ``sub/inner`` (sub-flow step) all belong to their first name."""
    for sep in ("/", "[", "#"):
        step_id = step_id.split(sep, 1)[0]
    return step_id


def _unit_type_of(plan: Plan, sid: str) -> Any:
    """Declared output type of a (possibly nested) step execution id like ``a/b[3]``."""
    head, _, rest = sid.partition("/")
    node = plan.node(top_step(head))
    if rest:
        if node.sub is None:
            raise FlowError(f"step {head!r} is not a sub-flow")
        return _unit_type_of(node.sub, rest)
    return node.unit_type if head != node.id else node.out_type


def _cache_key(ref: str, version: str, kwargs: dict[str, Any], node: PlanNode) -> str | None:
    h = hashlib.sha256(f"{ref}@{version}".encode())
    spec = node.spec
    assert spec is not None
    for name in sorted(kwargs):
        if name == spec.context_param:
            continue
        tp = spec.param_map[name].type if name in spec.param_map else Any
        try:
            h.update(f"|{name}=".encode() + encode(kwargs[name], tp).encode())
        except EncodeError:
            return None  # inputs that cannot be serialised cannot be keyed: run the step
    return h.hexdigest()


def _encode_inputs(plan: Plan, bound: Mapping[str, Any]) -> str:
    parts = []
    for spec in plan.inputs:
        name = spec.name
        try:
            parts.append(f"{encode(name, str)}:{encode(bound[name], spec.type)}")
        except EncodeError as exc:
            raise FlowError(
                f"flow '{plan.name}': input '{name}' cannot be recorded: {exc}"
            ) from None
    return "{" + ",".join(parts) + "}"


def _whoami() -> str:
    """The reviewer of a decision that names none: ``$ERPOZ_REVIEWER``, else the OS user."""
    import getpass

    if os.environ.get("ERPOZ_REVIEWER"):
        return os.environ["ERPOZ_REVIEWER"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login variable and no password database entry
        return f"uid {os.getuid()}"
