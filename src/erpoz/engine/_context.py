"""The concrete context handed to steps that declare ``ctx: Context``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RunError
from ..store import ENGINE_KINDS, RunWriter

if TYPE_CHECKING:
    from ..models import Models
    from ..tools import Tools

T = TypeVar("T")
_log = logging.getLogger("erpoz.step")


class StepContext:
    """Run id, step id, attempt, a logger, event emission and the services of later parts."""

    __slots__ = (
        "_log",
        "_loop",
        "_services",
        "_thread",
        "_writer",
        "attempt",
        "flow",
        "run_id",
        "step_id",
    )

    def __init__(
        self,
        writer: RunWriter,
        step_id: str,
        attempt: int,
        services: Mapping[type, object],
        flow: str = "",
    ) -> None:
        self._writer = writer
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

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and resumes of this step in this run: the outside world can
        deduplicate a side effect that erpoz had to repeat."""
        return hashlib.sha256(f"{self.run_id}/{self.step_id}".encode()).hexdigest()[:32]

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> None:
        if kind in ENGINE_KINDS:
            raise RunError(f"event kind '{kind}' is reserved for the engine; pick another name")
        if not kind.replace("_", "").replace(".", "").isalnum():
            raise RunError(f"event kind {kind!r} must be letters, digits, '_' or '.'")
        if threading.get_ident() == self._thread:
            self._writer.append(kind, self.step_id, self.attempt, data)
        else:  # a sync step in a worker thread: the log is only ever appended on the loop
            self._loop.call_soon_threadsafe(
                self._writer.append, kind, self.step_id, self.attempt, data
            )

    @property
    def models(self) -> Models:
        """The run's models: the engine's ``ModelHub`` service, else the project's
        (``erpoz.yaml`` in the working directory, or the offline default)."""
        from ..models import ModelHub, project_hub

        hub = self._services.get(ModelHub)
        return (hub if isinstance(hub, ModelHub) else project_hub()).bind(self)

    @property
    def tools(self) -> Tools:
        """The registered tools, each call checked by policy and recorded (none granted when
        the engine was given no ``ToolRegistry``)."""
        from ..tools import ToolRegistry

        reg = self._services.get(ToolRegistry)
        return (reg if isinstance(reg, ToolRegistry) else ToolRegistry()).bind(self, self.flow)

    def service(self, key: type[T]) -> T:
        try:
            return self._services[key]  # type: ignore[return-value]
        except KeyError:
            raise RunError(
                f"no {key.__name__} is configured for this run; pass it to Engine(services=...)"
            ) from None
