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

    async def sleep(self, seconds: float) -> None:
        """Sleep durably: a long sleep suspends the run (no process holds it) until it is due;
        after a crash only the time left is slept. The step runs again from its start on
        waking (recorded calls are not repeated)."""
        ...

    async def recv(self, topic: str, *, timeout: float) -> Any:
        """The next message sent to this run on ``topic`` (JSON data), or ``None`` after
        ``timeout`` seconds; waits durably, like :meth:`sleep`."""
        ...

    async def set_event(self, key: str, value: Any) -> None:
        """Publish this run's event ``key`` (JSON data) for callers and other runs."""
        ...

    async def get_event(self, run_id: str, key: str, *, timeout: float) -> Any:
        """Run ``run_id``'s event ``key``, or ``None`` after ``timeout`` seconds; waits
        durably."""
        ...


class Journal(Protocol):
    """The effects journal of one step execution (``ctx.journal`` of an in-process step): how
    ``ctx.tools``, ``ctx.models`` and ``ctx.memory`` make what a step does survive a crash, a
    retry or an approval that runs the step again.

    A call is keyed by what it is and by its position in the step execution, so that the
    n-th call of the same thing gets the same key every time the step runs again; what a key's
    call returned is recorded in the run's log, and a call whose result was recorded is never
    made again.
    """

    def key(self, what: str) -> str:
        """The idempotency key of the next call described by ``what`` (say, a tool's name and
        canonical arguments) in this step execution: 32 hex characters, derived from the run,
        the step execution, ``what`` and how many calls of ``what`` came before in it."""
        ...

    def result(self, key: str) -> str | None:
        """The result (JSON) recorded under ``key`` in this run; ``None`` if there is none."""
        ...

    def begun(self, key: str) -> int:
        """How many times a call under ``key`` was begun in this run without a result being
        recorded (each was cut off by a crash or raised)."""
        ...

    async def begin(self, kind: str, key: str, data: dict[str, Any]) -> None:
        """Record that the call under ``key`` is about to be made (event ``kind`` with
        ``data``), committed to the store before this returns, whatever its durability."""
        ...

    async def finish(
        self, kind: str, key: str, data: dict[str, Any], result: str | None, *, commit: bool
    ) -> None:
        """Record the call's outcome (event ``kind``; ``result`` its JSON when it returned,
        kept under ``key``), committed before this returns when ``commit``, else flushed as
        the run's durability says (``sync``: committed too; ``batch``: grouped; ``effects``:
        held until something leaves the process)."""
        ...

    async def settle(self) -> None:
        """Called right before a call that is not journaled as an intent leaves the process
        (a model call): with ``effects`` durability, what the run recorded so far is made
        durable first (the other modes hold what they guarantee already)."""
        ...
