"""The concrete context handed to steps that declare ``ctx: Context``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RunError
from ..provenance import RunProvenance
from ..store import Event, RunWriter
from ._remote import (
    MEMORY_WRITTEN,
    MODEL_REPLIED,
    TOOL_CALLED,
    TOOL_INTENT,
    StepIdentity,
    check_kind,
)

if TYPE_CHECKING:
    from ..guards._checkpoints import Governed
    from ..memory import Memory
    from ..models import Models
    from ..tools import Tools

_NO_TAGS: Mapping[str, str] = {}
#: ``(run_id, step, attempt, text)``: see ``engine.TokenListener``
_TokenListener = Callable[[str, str, int, str], None]
_STEP_SUCCEEDED = "step_succeeded"
_JOURNALED = frozenset({TOOL_INTENT, TOOL_CALLED, MODEL_REPLIED, MEMORY_WRITTEN})

T = TypeVar("T")
_log = logging.getLogger("erpoz.step")


class StepContext(StepIdentity):
    """Run id, step id, attempt, a logger, event emission and the services of later parts."""

    __slots__ = (
        "_effects",
        "_grants",
        "_journal",
        "_log",
        "_loop",
        "_services",
        "_thread",
        "_token_listeners",
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
    ) -> None:
        self._writer = writer
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

    def approved(self, grant: str) -> bool:
        """Whether a reviewer approved ``grant`` in this run (see ``ReviewRequired.grant``)."""
        return grant in self._grants

    def governed(self) -> Governed | None:
        """The run's guardrails as this step sees them: the engine's ``Guardrails`` service,
        else the project's (``guards`` / ``policy`` in ``erpoz.yaml``); ``None`` when neither
        is configured."""
        from ..guards import Guardrails, project_guardrails
        from ..guards._checkpoints import Governed
        from ..policy import Subject

        rails = self._services.get(Guardrails)
        if not isinstance(rails, Guardrails):
            rails = project_guardrails()
            if rails is None:
                return None
        return Governed(
            rails,
            Subject(self.flow or "-", self.step_id, self.tenant, self.user),
            self.emit,
            self.approved,
        )

    @property
    def models(self) -> Models:
        """The run's models: the engine's ``ModelHub`` service, else the project's
        (``erpoz.yaml`` in the working directory, or the offline default). Calls pass the
        guard checkpoints and model policy when guardrails are configured."""
        from ..models import ModelHub, project_hub

        hub = self._services.get(ModelHub)
        governed = self.governed()
        return (hub if isinstance(hub, ModelHub) else project_hub()).bind(
            self, governed, tokens=self._token_sink(governed)
        )

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
        """Documents to search and conversations to keep: the engine's ``Memory`` service,
        else the project's (``$ERPOZ_MEMORY``, else ``.erpoz/memory.db``)."""
        from ..memory import Memory, project_memory

        memory = self._services.get(Memory)
        return (memory if isinstance(memory, Memory) else project_memory()).bound(
            self.journal, on_read=self._read_untrusted
        )

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

    __slots__ = ("begun", "provenance", "results")

    def __init__(self) -> None:
        self.results: dict[str, str] = {}
        self.begun: dict[str, int] = {}
        self.provenance = RunProvenance()

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
            elif e.payload is not None and (e.kind != TOOL_CALLED or e.data.get("status") == "ok"):
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
    elif e.kind == _STEP_SUCCEEDED and e.step in prov.steps and e.payload is not None:
        try:
            prov.output(e.step, json.loads(e.payload))
        except ValueError:
            prov.output(e.step, e.payload)
