"""The concrete context handed to steps that declare ``ctx: Context``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RunError
from ..provenance import RunProvenance
from ..store import EVENT_SET, MESSAGE_RECEIVED, TIMER_SET, Event, Mailbox, RunWriter
from ..store import kinds as ev
from ._remote import (
    MEMORY_WRITTEN,
    MODEL_REPLIED,
    TOOL_CALLED,
    TOOL_INTENT,
    StepIdentity,
    check_kind,
)

if TYPE_CHECKING:
    from ..guards import Governed
    from ..memory import Memory
    from ..models import Models
    from ..tools import Tools

_NO_TAGS: Mapping[str, str] = {}
#: ``(run_id, step, attempt, text)``: see ``engine.TokenListener``
_TokenListener = Callable[[str, str, int, str], None]
_JOURNALED = frozenset(
    {
        TOOL_INTENT,
        TOOL_CALLED,
        MODEL_REPLIED,
        MEMORY_WRITTEN,
        TIMER_SET,
        MESSAGE_RECEIVED,
        EVENT_SET,
    }
)

T = TypeVar("T")
_log = logging.getLogger("erpoz.step")


class Suspend(BaseException):
    """Raised by a durable wait that will not end soon: the step stops here, the run is recorded
    as waiting until ``wake_at`` (or until what ``wake_on`` names comes), and the process lets
    it go. When it is due, the step runs again from its start; what it recorded (timers, messages
    taken, tool and model calls) is replayed, so it comes back to the wait, which now returns.
    A ``BaseException``, like ``asyncio.CancelledError``: ``except Exception`` in a step does
    not swallow it."""

    def __init__(self, wake_at: float, wake_on: str | None) -> None:
        super().__init__(wake_at, wake_on)
        self.wake_at = wake_at
        self.wake_on = wake_on


@dataclass(frozen=True, slots=True)
class Waits:
    """How an engine carries out durable waits: ``store`` keeps messages and run events;
    a wait due within ``hold_s`` seconds is waited out in the process (durably: its deadline is
    recorded first), a longer one suspends the run; ``poll_s`` is how often a held wait looks
    for its message."""

    store: Mailbox | None = None
    hold_s: float = 1.0
    poll_s: float = 0.1


_NO_WAITS = Waits()


class StepContext(StepIdentity):
    """Run id, step id, attempt, a logger, event emission and the services of later parts."""

    __slots__ = (
        "_effects",
        "_grants",
        "_journal",
        "_log",
        "_loop",
        "_patches",
        "_services",
        "_thread",
        "_token_listeners",
        "_waits",
        "_writer",
        "attempt",
        "flow",
        "run_id",
        "step_id",
        "tags",
    )

    def __init__(
        self,
        writer: RunWriter,
        step_id: str,
        attempt: int,
        services: Mapping[type, object],
        flow: str = "",
        tags: Mapping[str, str] = _NO_TAGS,
        grants: frozenset[str] | set[str] = frozenset(),
        effects: RunJournal | None = None,
        token_listeners: Sequence[_TokenListener] = (),
        waits: Waits = _NO_WAITS,
        *,
        patches: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    ) -> None:
        self._patches = patches  # (the run started with, the flow declares)
        self._writer = writer
        self._waits = waits
        self._token_listeners = token_listeners
        self._effects = effects if effects is not None else RunJournal()
        self._journal: StepJournal | None = None
        self.tags = tags
        self._grants = grants
        self.flow = flow
        self.run_id = writer.run_id
        self.step_id = step_id
        self.attempt = attempt
        self._services = services
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def patched(self, name: str) -> bool:
        """Whether this run started with patch ``name`` (``Flow(patches=[name])``): new runs
        take the patched path, runs in flight from before it the old one — the same answer
        every time the run asks, on any worker."""
        started, declared = self._patches
        if name not in declared:
            raise RunError(
                f"ctx.patched({name!r}): flow '{self.flow}' declares no such patch "
                f"(patches: {', '.join(sorted(declared)) or 'none'}); add it to Flow(patches=[…])",
                run_id=self.run_id,
            )
        return name in started

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = logging.LoggerAdapter(
                _log, {"run_id": self.run_id, "step_id": self.step_id, "attempt": self.attempt}
            )
        return self._log

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> None:
        check_kind(kind)
        if threading.get_ident() == self._thread:
            self._writer.append(kind, self.step_id, self.attempt, data)
        else:  # a sync step in a worker thread: the log is only ever appended on the loop
            self._loop.call_soon_threadsafe(
                self._writer.append, kind, self.step_id, self.attempt, data
            )

    @property
    def journal(self) -> StepJournal:
        """The effects journal of this step execution: what its tool, model and memory calls
        carried out, so that running the step again does not do it twice."""
        if self._journal is None:
            self._journal = StepJournal(self, self._effects)
        return self._journal

    async def _on_loop(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Await ``fn(*args)`` on the run's event loop (where its log is written), also when
        the step calls from a thread of its own (a sync step running its own event loop)."""
        if threading.get_ident() == self._thread:
            await fn(*args)
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args), self._loop))

    # --- durable waits --------------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` durably: the wake time is recorded (``timer_set``); a sleep longer
        than the engine's ``hold_s`` suspends the run (status ``waiting`` until the wake time,
        no process holds it) and a worker, ``erpoz runs resume`` or ``Engine.wake_due`` goes on
        when it is due. After a crash only the time left is slept. The step's code before the
        sleep runs again on waking (recorded calls are not repeated): sleep at a step's start,
        or in a step of its own."""
        self._on_loop_only("sleep")
        wake_at = await self._deadline("sleep", seconds)
        await self._until(wake_at, None, None)

    async def recv(self, topic: str, *, timeout: float) -> Any:
        """The next message sent to this run on ``topic`` (``erpoz runs send``,
        ``Engine.send``) as JSON data, taken once; ``None`` when none came within ``timeout``
        seconds. Waiting longer than ``hold_s`` suspends the run like :meth:`sleep`; a message
        wakes it at once."""
        self._on_loop_only("recv")
        taken = self._effects.taken

        async def take(mailbox: Mailbox, data: dict[str, Any]) -> str | None:
            for mid, payload in await mailbox.messages(self.run_id, topic):
                if mid not in taken:
                    taken.add(mid)  # no await since the check: two steps never take one message
                    data["message_id"] = mid
                    return f'{{"message":{mid},"value":{payload}}}'
            return None

        return await self._wait_for(
            f"recv:{topic}", timeout, f"msg:{topic}", {"topic": topic}, take
        )

    async def set_event(self, key: str, value: Any) -> None:
        """Publish this run's event ``key`` (JSON data; the latest value wins) for callers and
        other runs (``get_event``); recorded in the log (``event_set``)."""
        self._on_loop_only("set_event")
        jkey = self.journal.key(f"set_event:{key}")
        payload = self._effects.results.get(jkey)
        if payload is None:
            payload = _to_json(value, f"event {key!r}")
            await self._record(EVENT_SET, jkey, {"idempotency_key": jkey, "key": key}, payload)
        # published after it is recorded; again on a re-run (the same value: idempotent)
        await self._mailbox().set_run_event(self.run_id, key, payload)

    async def get_event(self, run_id: str, key: str, *, timeout: float) -> Any:
        """Run ``run_id``'s event ``key`` (see :meth:`set_event`); ``None`` when it was not set
        within ``timeout`` seconds. Waits durably, like :meth:`recv`; the value read is
        recorded, so a re-run of this step reads the same."""
        self._on_loop_only("get_event")

        async def take(mailbox: Mailbox, data: dict[str, Any]) -> str | None:
            value = await mailbox.get_run_event(run_id, key)
            return None if value is None else f'{{"value":{value}}}'

        what = f"get_event:{run_id}:{key}"
        data = {"event": key, "of_run": run_id}
        return await self._wait_for(what, timeout, f"event:{run_id}:{key}", data, take)

    async def _wait_for(
        self,
        what: str,
        timeout: float,
        on: str,
        data: dict[str, Any],
        take: Callable[[Mailbox, dict[str, Any]], Awaitable[str | None]],
    ) -> Any:
        """A durable wait of :meth:`recv` and :meth:`get_event`: what ``take`` finds (the
        record to keep, JSON with its ``value``; it may add to ``data``, the event's data) or
        ``None`` after ``timeout`` seconds, recorded as ``message_received`` under the journal
        key of ``what``, so that a re-run of the step gets the same without waiting."""
        jkey = self.journal.key(what)
        recorded = self._effects.results.get(jkey)
        if recorded is not None:
            return _received(recorded)
        mailbox = self._mailbox()
        deadline = await self._deadline(f"{what}:timeout", timeout)
        data = {"idempotency_key": jkey, **data}
        got: list[str] = []

        async def ready() -> bool:
            record = await take(mailbox, data)
            if record is not None:
                got.append(record)
            return record is not None

        if await self._until(deadline, on, ready):
            record = got[0]
        else:
            data["timed_out"] = True
            record = '{"timed_out":true}'
        await self._record(MESSAGE_RECEIVED, jkey, data, record)
        return _received(record)

    def _on_loop_only(self, what: str) -> None:
        if threading.get_ident() != self._thread:
            raise RunError(
                f"ctx.{what} is for async steps (async def): a sync step runs in a thread "
                f"and cannot let the run wait (step {self.step_id})",
                run_id=self.run_id,
            )

    def _mailbox(self) -> Mailbox:
        if self._waits.store is None:
            raise RunError(
                "this engine's store keeps no messages or run events; use a SQLite file, "
                "PostgreSQL or memory",
                run_id=self.run_id,
            )
        return self._waits.store

    async def _deadline(self, what: str, seconds: float) -> float:
        """The wake time of this step execution's next wait on ``what``: as recorded when the
        step ran before, else now + ``seconds`` (recorded: ``timer_set``)."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise RunError(
                f"ctx: a wait takes a finite number of seconds >= 0, not {seconds!r} "
                f"(step {self.step_id})",
                run_id=self.run_id,
            )
        key = self.journal.key(what)
        recorded = self._effects.results.get(key)
        if recorded is not None:
            return float(recorded)
        wake_at = time.time() + float(seconds)
        payload = repr(wake_at)
        self._effects.results[key] = payload
        data = {"idempotency_key": key, "for": what, "seconds": seconds, "wake_at": wake_at}
        self._writer.append(TIMER_SET, self.step_id, self.attempt, data, payload)
        if seconds <= self._waits.hold_s:
            await self._writer.commit()  # waited out here: a crash must find the deadline
        return wake_at

    async def _until(
        self, wake_at: float, on: str | None, ready: Callable[[], Awaitable[bool]] | None
    ) -> bool:
        """Wait until ``wake_at`` or until ``ready()``; whether it is ready. Raises
        :class:`Suspend` when the rest of the wait is longer than ``hold_s``."""
        waits = self._waits
        while True:
            if ready is not None and await ready():
                return True
            left = wake_at - time.time()
            if left <= 0:
                return False
            if left > waits.hold_s:
                raise Suspend(wake_at, on)
            await asyncio.sleep(left if ready is None else min(left, waits.poll_s))

    async def _record(self, kind: str, key: str, data: dict[str, Any], payload: str) -> None:
        self._effects.results[key] = payload
        self._writer.append(kind, self.step_id, self.attempt, data, payload)
        await self._writer.commit()

    def approved(self, grant: str) -> bool:
        """Whether a reviewer approved ``grant`` in this run (see ``ReviewRequired.grant``)."""
        return grant in self._grants

    def governed(self) -> Governed | None:
        """The run's guardrails as this step sees them: the engine's ``Guardrails`` service
        (``erpoz.project`` builds it from ``guards`` / ``policy`` in ``erpoz.yaml``); ``None``
        when the engine was given none."""
        from ..guards import Governed, Guardrails
        from ..policy import Subject

        rails = self._services.get(Guardrails)
        if not isinstance(rails, Guardrails):
            return None
        return Governed(
            rails,
            Subject(self.flow or "-", self.step_id, self.tenant, self.user),
            self.emit,
            self.approved,
        )

    @property
    def models(self) -> Models:
        """The run's models: the engine's ``ModelHub`` service (``erpoz run``, ``erpoz serve``
        and ``erpoz.run`` build it with ``erpoz.project`` from ``erpoz.yaml``, or the offline
        default). Calls pass the guard checkpoints and model policy when guardrails are
        configured. An engine given no hub has no models: a ``RunError`` says so."""
        from ..models import ModelHub

        hub = self._services.get(ModelHub)
        if not isinstance(hub, ModelHub):
            raise RunError(
                "this engine has no models: give it a ModelHub, "
                "Engine(store, services={ModelHub: hub}) (erpoz.project.load_hub() builds the "
                "project's from erpoz.yaml, or the offline default; "
                "erpoz.project.project_services(store) builds every service of the project)"
            )
        governed = self.governed()
        return hub.bind(self, governed, tokens=self._token_sink(governed))

    def _token_sink(self, governed: Governed | None) -> Callable[[str], None] | None:
        """Where ``ctx.models.stream`` hands each piece of text, for the engine's token
        listeners; ``None`` when nobody listens, or when guards check answers (at
        ``model_output`` or ``delivery``): text cannot be taken back once it is sent."""
        listeners = self._token_listeners
        if not listeners:
            return None
        if governed is not None and (
            governed.rails.active("model_output") or governed.rails.active("delivery")
        ):
            return None
        run_id, step, attempt = self.run_id, self.step_id, self.attempt

        def tell(text: str) -> None:
            for listen in listeners:
                listen(run_id, step, attempt, text)

        def sink(text: str) -> None:
            if threading.get_ident() == self._thread:
                tell(text)
            else:  # listeners run on the engine's loop, like its event listeners
                self._loop.call_soon_threadsafe(tell, text)

        return sink

    @property
    def memory(self) -> Memory:
        """Documents to search and conversations to keep: the engine's ``Memory`` service
        (``erpoz run``, ``erpoz serve`` and ``erpoz.run`` give the project's, opened when a
        step first uses it: ``$ERPOZ_MEMORY``, else ``.erpoz/memory.db``). An engine given none
        has no memory (it reads no project files): a ``RunError`` says so."""
        from ..memory import Memory

        memory = self._services.get(Memory)
        if not isinstance(memory, Memory):
            raise RunError(
                "this engine has no memory: give it one, Engine(store, services={Memory: "
                "open_memory(path)}) (erpoz.memory.open_memory; 'memory' keeps nothing; "
                "erpoz.project.project_services(store) gives the project's: $ERPOZ_MEMORY, "
                "else .erpoz/memory.db)"
            )
        return memory.bound(self.journal, on_read=self._read_untrusted)

    def _read_untrusted(self, text: str, source: str) -> None:
        """Untrusted text entered the step (a search hit): noted in the run's provenance, and
        the first time from this source, recorded (a resumed run rebuilds it from the log)."""
        prov = self.provenance
        if source not in prov.steps.get(self.step_id, ()):
            self.emit(
                "provenance_labeled", {"at": "read", "label": "untrusted", "sources": [source]}
            )
        prov.add(text, source, self.step_id)

    async def guard(self, text: str, *, at: str = "model_input") -> str:
        """Run the guards of checkpoint ``at`` over ``text`` here, in the step (for text that
        goes somewhere else than a model or a tool: a search query, a retrieved document);
        returns the text as it may pass (redacted / pseudonymised) or raises ``GuardBlocked``
        / ``ReviewRequired`` as the policy says. Without guardrails, the text as it is."""
        governed = self.governed()
        if governed is None:
            return text
        return await governed.check_text(at, text)

    @property
    def provenance(self) -> RunProvenance:
        """The untrusted content this run has seen (shared by its steps; see
        :mod:`erpoz.provenance`)."""
        return self._effects.provenance

    @property
    def tools(self) -> Tools:
        """The registered tools, each call checked by policy and recorded (none granted when
        the engine was given no ``ToolRegistry`` and the project's policy grants none)."""
        from ..tools import ToolRegistry

        reg = self._services.get(ToolRegistry)
        registry = reg if isinstance(reg, ToolRegistry) else ToolRegistry()
        return registry.bind(self, self.flow, self.governed())

    def service(self, key: type[T]) -> T:
        try:
            return self._services[key]  # type: ignore[return-value]
        except KeyError:
            raise RunError(
                f"no {key.__name__} is configured for this run; pass it to Engine(services=...)"
            ) from None


class RunJournal:
    """What a run's log says its effects did: each key's recorded result (JSON), and how many
    calls under a key were begun without a result. Shared by every step execution of the run;
    rebuilt from the log when the run is resumed. ``provenance``: the untrusted content the
    run has seen."""

    __slots__ = ("begun", "provenance", "results", "taken")

    def __init__(self) -> None:
        self.results: dict[str, str] = {}
        self.begun: dict[str, int] = {}
        self.provenance = RunProvenance()
        self.taken: set[int] = set()  # ids of the messages the run took (ctx.recv)

    @classmethod
    def of(cls, events: Iterable[Event]) -> RunJournal:
        journal = cls()
        for e in events:
            _provenance_of(journal.provenance, e)
            if e.kind not in _JOURNALED or not e.data:
                continue
            key = e.data.get("idempotency_key")
            if not isinstance(key, str):
                continue
            if e.kind == TOOL_INTENT:
                journal.begun[key] = journal.begun.get(key, 0) + 1
                continue
            if isinstance(mid := e.data.get("message_id"), int):
                journal.taken.add(mid)
            if e.payload is not None and (e.kind != TOOL_CALLED or e.data.get("status") == "ok"):
                journal.results[key] = e.payload
        return journal


class StepJournal:
    """The :class:`~erpoz.flow.Journal` of one step execution (``ctx.journal``)."""

    __slots__ = ("_counts", "_ctx", "_run")

    def __init__(self, ctx: StepContext, run: RunJournal) -> None:
        self._ctx = ctx
        self._run = run
        self._counts: dict[str, int] = {}

    def key(self, what: str) -> str:
        ctx = self._ctx
        base = f"{ctx.run_id}/{ctx.step_id}/{what}"
        n = self._counts[base] = self._counts.get(base, 0) + 1
        return hashlib.sha256(f"{base}#{n}".encode()).hexdigest()[:32]

    def result(self, key: str) -> str | None:
        return self._run.results.get(key)

    def begun(self, key: str) -> int:
        return self._run.begun.get(key, 0)

    async def begin(self, kind: str, key: str, data: dict[str, Any]) -> None:
        run = self._run
        run.begun[key] = run.begun.get(key, 0) + 1
        await self._ctx._on_loop(self._write, kind, data, None, True)

    async def finish(
        self, kind: str, key: str, data: dict[str, Any], result: str | None, *, commit: bool
    ) -> None:
        if result is not None:
            self._run.results[key] = result
        await self._ctx._on_loop(self._write, kind, data, result, commit)

    async def settle(self) -> None:
        await self._ctx._on_loop(self._ctx._writer.settle)

    async def _write(
        self, kind: str, data: dict[str, Any], payload: str | None, commit: bool
    ) -> None:
        ctx = self._ctx
        writer = ctx._writer
        writer.append(kind, ctx.step_id, ctx.attempt, data, payload)
        await (writer.commit() if commit else writer.flush())


def _provenance_of(prov: RunProvenance, e: Event) -> None:
    """Rebuild what a run saw of untrusted content from one event of its log: the steps that
    read some, and the outputs of those steps (which later steps may have in their prompts)."""
    if e.step is None:
        return
    d = e.data or {}
    if e.kind == TOOL_CALLED and d.get("result_label") == "untrusted":
        prov.taint(e.step, f"tool:{d.get('tool')}")
    elif e.kind == "provenance_labeled":
        for source in d.get("sources") or ():
            prov.taint(e.step, str(source))
    elif e.kind == ev.STEP_SUCCEEDED and e.step in prov.steps and e.payload is not None:
        try:
            prov.output(e.step, json.loads(e.payload))
        except ValueError:
            prov.output(e.step, e.payload)


def _received(record: str) -> Any:
    """What a recorded wait returns: the value, ``None`` when it timed out."""
    data = json.loads(record)
    return None if data.get("timed_out") else data.get("value")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RunError(f"{what}: the value must be JSON data ({exc})") from None
