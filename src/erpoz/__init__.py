"""erpoz: the orchestration layer for multi-model AI systems.

Define typed steps, wire them into a flow, run it; every run is an append-only, hash-chained
event log that makes it durable, resumable, replayable and auditable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .engine import Decision, Engine, RunResult
from .errors import (
    ErpozError,
    FlowError,
    ReviewRequired,
    RunError,
    StepFailed,
    StoreError,
)
from .flow import Context, Flow, Plan, RetryPolicy, first_of, load_flow, step
from .store import Store, open_store
from .version import __version__

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
    return asyncio.run(arun(flow, inputs, store=store, **kw_inputs))
