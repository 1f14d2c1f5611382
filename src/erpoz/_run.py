"""``erpoz.run`` and ``erpoz.arun``: one run of a flow, for scripts and notebooks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .engine import Engine, RunResult
from .flow import Flow, Plan
from .store import Store, open_store


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
