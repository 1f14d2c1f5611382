"""``erpoz.run`` and ``erpoz.arun``: one run of a flow, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from .engine import Engine, RunResult
from .errors import ConfigError
from .flow import Flow, Plan
from .store import Store, open_store


async def arun(
    flow: Flow | Plan,
    inputs: Mapping[str, Any] | None = None,
    *,
    store: Store | str | None = "memory",
    config: str | os.PathLike[str] | None = None,
    services: Mapping[type, object] | None = None,
    **kw_inputs: Any,
) -> RunResult:
    """Run a flow once and return its result (inside an event loop). Its steps reach the
    ``services`` given; without them, the project's, as ``erpoz run`` builds them
    (:func:`erpoz.project.project_services`): models, guardrails and tools of ``config``
    (a project file; default ``$ERPOZ_CONFIG``, else ``./erpoz.yaml``, else the offline
    default)."""
    st = open_store(store) if store is None or isinstance(store, str) else store
    try:
        if services is None:
            from .project import project_services

            services = await project_services(st, config)
        elif config is not None:
            raise ConfigError("erpoz.run: give config (a project file) or services, not both")
        return await Engine(st, services=services).run(flow, {**(inputs or {}), **kw_inputs})
    finally:
        if st is not store:
            await st.close()


def run(
    flow: Flow | Plan,
    inputs: Mapping[str, Any] | None = None,
    *,
    store: Store | str | None = "memory",
    config: str | os.PathLike[str] | None = None,
    services: Mapping[type, object] | None = None,
    **kw_inputs: Any,
) -> RunResult:
    """Run a flow once from synchronous code. ``store``: ``"memory"`` (default here), a SQLite
    path, or an open :class:`Store`; ``None`` means the project store ``.erpoz/erpoz.db``.
    ``config`` / ``services``: what its steps reach through ``ctx`` (see :func:`arun`)."""
    return asyncio.run(
        arun(flow, inputs, store=store, config=config, services=services, **kw_inputs)
    )
