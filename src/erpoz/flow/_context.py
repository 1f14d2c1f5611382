"""What a step sees of the run it belongs to, when it declares a ``ctx: Context`` parameter."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..memory import Memory
    from ..models import Models
    from ..tools import Tools

T = TypeVar("T")


class Context(Protocol):
    """The seam between a step and erpoz.

    Models, tools, guards and memory are reached through it so that every call is recorded in the
    run's event log; ``emit`` records an event of the step's own.
    """

    @property
    def run_id(self) -> str: ...
    @property
    def step_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...
    @property
    def idempotency_key(self) -> str: ...

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append an event of kind ``kind`` (e.g. ``model_called``) to the run's log."""
        ...

    @property
    def models(self) -> Models:
        """The configured models and routers; every call is budgeted and recorded."""
        ...

    @property
    def tools(self) -> Tools:
        """The registered tools; each call is checked by policy and recorded."""
        ...

    @property
    def memory(self) -> Memory:
        """Documents to search and conversations to keep (``erpoz.memory``)."""
        ...

    @property
    def tags(self) -> Mapping[str, str]:
        """The run's tags (``tenant`` and ``user`` are what policy rules match)."""
        ...

    def approved(self, grant: str) -> bool:
        """Whether a reviewer approved ``grant`` in this run."""
        ...

    async def guard(self, text: str, *, at: str = "model_input") -> str:
        """Run the guards of checkpoint ``at`` over ``text``; the text as it may pass."""
        ...

    def service(self, key: type[T]) -> T:
        """The service registered under ``key`` (models, tools, memory: later parts plug in)."""
        ...
