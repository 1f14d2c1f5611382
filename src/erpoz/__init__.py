"""erpoz: the orchestration layer for multi-model AI systems.

Define typed steps, wire them into a flow, run it; every run is an append-only, hash-chained
event log that makes it durable, resumable, replayable and auditable.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    ErpozError,
    FlowError,
    ReviewRequired,
    RunError,
    StepFailed,
    StoreError,
)

if TYPE_CHECKING:
    from .engine import Decision, Engine, RunResult
    from .flow import Context, Flow, Plan, RetryPolicy, first_of, step
    from .flow._load import load_flow
    from .store import Store, open_store

__version__ = "0.1.0"

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
    "load_flow": ".flow._load",
    "Store": ".store",
    "open_store": ".store",
}
"""Names imported on first use, so that ``import erpoz`` (and every ``erpoz`` command, which
imports it first) does not pay for the engine, pydantic and the stores until it needs them."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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


async def arun(
    flow: Flow | Plan,
    inputs: Mapping[str, Any] | None = None,
    *,
    store: Store | str | None = "memory",
    **kw_inputs: Any,
) -> RunResult:
    """Run a flow once and return its result (inside an event loop)."""
    from .engine import Engine
    from .store import open_store

    st = open_store(store) if store is None or isinstance(store, str) else store
    try:
        return await Engine(st).run(flow, {**(inputs or {}), **kw_inputs})
    finally:
        if st is not store:
            await st.close()


def run(
    flow: Flow | Plan,
    inputs: Mapping[str, Any] | None = None,
    *,
    store: Store | str | None = "memory",
    **kw_inputs: Any,
) -> RunResult:
    """Run a flow once from synchronous code. ``store``: ``"memory"`` (default here), a SQLite
    path, or an open :class:`Store`; ``None`` means the project store ``.erpoz/erpoz.db``."""
    import asyncio

    return asyncio.run(arun(flow, inputs, store=store, **kw_inputs))
