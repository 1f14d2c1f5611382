"""erpoz: the orchestration layer for multi-model AI systems.

Define typed steps, wire them into a flow, run it; every run is an append-only, hash-chained
event log that makes it durable, resumable, replayable and auditable.
"""

import typing as _typing

from .errors import (
    ErpozError,
    FlowError,
    ReviewRequired,
    RunError,
    StepFailed,
    StoreError,
)
from .lazy import lazy_getattr as _lazy_getattr
from .version import __version__

if _typing.TYPE_CHECKING:
    from ._run import arun, run
    from .engine import Decision, Engine, RunResult
    from .flow import Context, Flow, Plan, RetryPolicy, first_of, load_flow, step
    from .store import Store, open_store


_LAZY = {
    "Decision": ".engine",
    "Engine": ".engine",
    "RunResult": ".engine",
    "Context": ".flow",
    "Flow": ".flow",
    "Plan": ".flow",
    "RetryPolicy": ".flow",
    "first_of": ".flow",
    "step": ".flow",
    "load_flow": ".flow",
    "arun": "._run",
    "run": "._run",
    "Store": ".store",
    "open_store": ".store",
}
"""Names imported on first use, so that ``import erpoz`` (and every ``erpoz`` command, which
imports it first) does not pay for the engine, pydantic and the stores until it needs them."""


__getattr__: _typing.Callable[[str], _typing.Any] = _lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Context",
    "Decision",
    "Engine",
    "ErpozError",
    "Flow",
    "FlowError",
    "Plan",
    "RetryPolicy",
    "ReviewRequired",
    "RunError",
    "RunResult",
    "StepFailed",
    "Store",
    "StoreError",
    "__version__",
    "arun",
    "first_of",
    "load_flow",
    "open_store",
    "run",
    "step",
]
