"""The ``ctx`` of a step that runs in another process (a Ray worker).

It carries who and where the step is (run, step, attempt, tags, idempotency key), a logger and
``emit``. Emitted events travel back with the step's result and are recorded by the
orchestrating process, which keeps the only writer of the run's log. Models, tools, memory and
guards stay with the orchestrator: they hold the budgets, policy and governance that every call
must pass, so a remote step that reaches for them gets an error saying so.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

from ..errors import RunError
from ..store import ENGINE_KINDS

T = TypeVar("T")
_log = logging.getLogger("erpoz.step")


TOOL_INTENT = "tool_intent"
TOOL_CALLED = "tool_called"
MODEL_REPLIED = "model_replied"
MEMORY_WRITTEN = "memory_written"
#: What only the effects journal writes: a step's own event of these kinds could make a resumed
#: run skip a call that was never made.
JOURNAL_KINDS = frozenset({TOOL_INTENT, MODEL_REPLIED, MEMORY_WRITTEN})


def check_kind(kind: str) -> None:
    """The rules for an event kind a step emits (shared with the in-process context)."""
    if kind in ENGINE_KINDS or kind in JOURNAL_KINDS:
        raise RunError(f"event kind '{kind}' is reserved for the engine; pick another name")
    if not kind.replace("_", "").replace(".", "").isalnum():
        raise RunError(f"event kind {kind!r} must be letters, digits, '_' or '.'")


class StepIdentity:
    """Who a step execution is, for both kinds of context: its idempotency key and the tags
    that policy rules match (``run_id``, ``step_id`` and ``tags`` come from the subclass)."""

    __slots__ = ()
    run_id: str
    step_id: str
    tags: Mapping[str, str]

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and resumes of this step in this run, wherever it runs: the
        outside world can deduplicate a side effect that erpoz had to repeat."""
        return hashlib.sha256(f"{self.run_id}/{self.step_id}".encode()).hexdigest()[:32]

    @property
    def tenant(self) -> str:
        """The run's ``tenant`` tag (``"-"`` when it has none): policy rules may name it."""
        return self.tags.get("tenant", "-")

    @property
    def user(self) -> str:
        """The run's ``user`` tag (``"-"`` when it has none)."""
        return self.tags.get("user", "-")


class RemoteContext(StepIdentity):
    """What a step running on a remote executor sees of its run (pickled to the worker)."""

    __slots__ = ("attempt", "emitted", "flow", "run_id", "step_id", "tags")

    def __init__(
        self, run_id: str, step_id: str, attempt: int, flow: str, tags: Mapping[str, str]
    ) -> None:
        self.run_id = run_id
        self.step_id = step_id
        self.attempt = attempt
        self.flow = flow
        self.tags: Mapping[str, str] = dict(tags)
        self.emitted: list[tuple[str, dict[str, Any] | None]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            _log, {"run_id": self.run_id, "step_id": self.step_id, "attempt": self.attempt}
        )

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> None:
        """Record an event of the step's own; it reaches the log when the step returns."""
        check_kind(kind)
        self.emitted.append((kind, dict(data) if data else None))

    def approved(self, grant: str) -> bool:
        self._unavailable("approved()")

    async def guard(self, text: str, *, at: str = "model_input") -> str:
        self._unavailable("guard()")

    @property
    def models(self) -> NoReturn:
        self._unavailable("models")

    @property
    def tools(self) -> NoReturn:
        self._unavailable("tools")

    @property
    def memory(self) -> NoReturn:
        self._unavailable("memory")

    def service(self, key: type[T]) -> T:
        self._unavailable(f"service({key.__name__})")

    async def sleep(self, seconds: float) -> None:
        self._unavailable("sleep()")

    async def recv(self, topic: str, *, timeout: float) -> Any:
        self._unavailable("recv()")

    async def set_event(self, key: str, value: Any) -> None:
        self._unavailable("set_event()")

    async def get_event(self, run_id: str, key: str, *, timeout: float) -> Any:
        self._unavailable("get_event()")

    def _unavailable(self, what: str) -> NoReturn:
        raise RunError(
            f"ctx.{what} is not available in step '{self.step_id}': it runs on a remote "
            "executor, and models, tools, memory, guards and durable waits stay in the "
            "orchestrating process (where their calls are budgeted, governed and recorded). "
            "Split the step: call "
            "models in a step without `resources`, and give the heavy, pure work its own step.",
            run_id=self.run_id,
        )
