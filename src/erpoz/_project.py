"""The services a project's steps reach through ``ctx``, built one way for every entry point
(``erpoz run`` and the review commands, ``erpoz serve``, ``erpoz demo``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .store import Store

if TYPE_CHECKING:
    from .memory import Memory


async def project_services(
    store: Store,
    config: str | os.PathLike[str] | None = None,
    memory: str | Memory | None = None,
) -> dict[type, object]:
    """What steps reach through ``ctx``: the project's models (else the offline default),
    guardrails and tools from ``config`` (default: ``erpoz.yaml`` / ``$ERPOZ_CONFIG``), and
    ``memory`` (a memory database path, or an open one; without it, ``ctx.memory`` opens the
    project's when a step first uses it). A project budget starts from what the store's runs
    have already spent. Nothing is loaded until a step uses it."""
    from .guards import Guardrails, guardrails_from_config
    from .models import ModelHub
    from .models._config import build_hub, load_config
    from .models._meter import spent_in_store
    from .tools import ToolRegistry, registry_from_config

    cfg = load_config(config)
    hub = build_hub(cfg)
    rails = guardrails_from_config(cfg)
    tools = registry_from_config(cfg)
    if hub.budget is not None and hub.budget.per_project_usd is not None:
        hub.budget.project_spent_usd = await spent_in_store(store)
    services: dict[type, object] = {ModelHub: hub}
    if rails is not None:
        services[Guardrails] = rails
    if tools is not None:
        services[ToolRegistry] = tools
    if memory is not None:
        from .memory import Memory, open_memory

        services[Memory] = memory if isinstance(memory, Memory) else open_memory(memory)
    return services
