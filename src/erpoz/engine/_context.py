"""The concrete context handed to steps that declare ``ctx: Context``."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RunError
from ..store import RunWriter
from ._remote import StepIdentity, check_kind

if TYPE_CHECKING:
    from ..guards._checkpoints import Governed
    from ..memory import Memory
    from ..models import Models
    from ..tools import Tools

_NO_TAGS: Mapping[str, str] = {}
#: ``(run_id, step, attempt, text)``: see ``engine.TokenListener``
_TokenListener = Callable[[str, str, int, str], None]

T = TypeVar("T")
_log = logging.getLogger("erpoz.step")


class StepContext(StepIdentity):
    """Run id, step id, attempt, a logger, event emission and the services of later parts."""

    __slots__ = (
        "_calls",
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
        calls: dict[str, str] | None = None,
        token_listeners: Sequence[_TokenListener] = (),
    ) -> None:
        self._writer = writer
        self._token_listeners = token_listeners
        self._calls = calls if calls is not None else {}
        self._journal: CallJournal | None = None
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
    def journal(self) -> CallJournal:
        """The side-effecting tool calls this run has carried out (see ``ctx.tools``)."""
        if self._journal is None:
            self._journal = CallJournal(self)
        return self._journal

    def _append(self, kind: str, data: dict[str, Any], payload: str | None) -> None:
        if threading.get_ident() == self._thread:
            self._writer.append(kind, self.step_id, self.attempt, data, payload)
        else:
            self._loop.call_soon_threadsafe(
                self._writer.append, kind, self.step_id, self.attempt, data, payload
            )

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
        return memory if isinstance(memory, Memory) else project_memory()

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


class CallJournal:
    """Side effects a step carried out, by idempotency key, with their recorded results: a
    step that runs again (resumed after a crash, retried, re-run after an approval) gets the
    result back instead of repeating the call."""

    __slots__ = ("_counts", "_ctx")

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self._counts: dict[str, int] = {}

    def count(self, base: str) -> int:
        """The how-many-th call of ``base`` (tool + arguments) this is in this execution."""
        n = self._counts[base] = self._counts.get(base, 0) + 1
        return n

    def get(self, key: str) -> str | None:
        return self._ctx._calls.get(key)

    def record(self, key: str, data: dict[str, Any], result_json: str) -> None:
        """Record the ``tool_called`` event with the result as its payload."""
        self._ctx._append("tool_called", data, result_json)
        self._ctx._calls[key] = result_json
