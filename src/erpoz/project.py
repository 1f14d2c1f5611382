"""The services a project's steps reach through ``ctx``, built one way for every entry point
(``erpoz run`` and the review commands, ``erpoz serve``, ``erpoz demo``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .store import BudgetLedger, RateLimits, Store

if TYPE_CHECKING:
    from .engine import Executor
    from .memory import Memory
    from .models import ProjectConfig
    from .tools import ToolRegistry


async def project_services(
    store: Store,
    config: str | os.PathLike[str] | None = None,
    memory: str | Memory | None = None,
) -> dict[type, object]:
    """What steps reach through ``ctx``: the project's models (else the offline default),
    guardrails and tools from ``config`` (default: ``erpoz.yaml`` / ``$ERPOZ_CONFIG``), and
    ``memory`` (a memory database path, or an open one; without it, ``ctx.memory`` opens the
    project's when a step first uses it). Project and tenant budgets are kept in the store's
    budget ledger (starting from what its runs have spent), so they hold across every process
    that shares it. Nothing is loaded until a step uses it."""
    from .guards import Guardrails, guardrails_from_config
    from .models import ModelHub, build_hub, load_config, spent_in_store
    from .tools import ToolRegistry, registry_from_config

    cfg = load_config(config)
    hub = build_hub(cfg)
    rails = guardrails_from_config(cfg)
    tools = registry_from_config(cfg)
    if cfg.mcp is not None:  # MCP servers' tools join the project's (the mcp extra)
        tools = await _with_tool_source(cfg, "mcp", tools)
    if hub.budget is not None:
        if isinstance(store, BudgetLedger):  # project and tenant budgets across processes
            hub.budget.ledger = store
        elif hub.budget.per_project_usd is not None:
            hub.budget.project_spent_usd = await spent_in_store(store)
    if isinstance(store, RateLimits):  # models' rate limits across processes
        hub.rates.book = store
    services: dict[type, object] = {ModelHub: hub}
    if rails is not None:
        services[Guardrails] = rails
    if tools is not None:
        services[ToolRegistry] = tools
    if memory is not None:
        from .memory import Memory, open_memory

        services[Memory] = memory if isinstance(memory, Memory) else open_memory(memory)
    return services


async def _with_tool_source(
    cfg: ProjectConfig, section: str, tools: ToolRegistry | None
) -> ToolRegistry:
    """Add the tools of a section of ``erpoz.yaml`` that a plug-in reads: the entry point of
    that name in the group ``erpoz.tool_sources`` (``mcp``: erpoz.integrations.mcp), an async
    function of the project config returning tools."""
    from importlib.metadata import entry_points

    from .errors import ConfigError
    from .tools import ToolError, ToolRegistry

    found = [ep for ep in entry_points(group="erpoz.tool_sources") if ep.name == section]
    try:
        source = found[0].load() if found else None
    except ImportError as exc:
        source, reason = None, str(exc)
    else:
        reason = "no plug-in reads it"
    if source is None:
        raise cfg.error(
            f"the '{section}' section needs the {section} extra (pip install "
            f"'erpoz[{section}]'): {reason}",
            section,
            key=True,
        )
    registry = tools if tools is not None else ToolRegistry()
    try:
        for t in await source(cfg):
            registry.add(t)
    except ToolError as exc:  # a tool named like one of the project's own
        raise ConfigError(str(exc), file=cfg.file, line=cfg.line(section, key=True)) from None
    return registry


def project_executor(
    config: str | os.PathLike[str] | None = None,
    *,
    kind: str | None = None,
    address: str | None = None,
) -> Executor | None:
    """The executor a project's steps run on: ``kind`` / ``address`` when given (the
    command line), else ``executor:`` in ``erpoz.yaml``; ``None`` means this process's threads.
    """
    from .errors import ConfigError
    from .models import ExecutorConfig, load_config

    setting = load_config(config).executor if kind is None and address is None else None
    if isinstance(setting, str):
        setting = ExecutorConfig(kind=setting)
    chosen = kind or (setting.kind if setting is not None else "local")
    if chosen == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        return None
    if chosen != "ray":
        raise ConfigError(f"unknown executor {chosen!r}: local or ray")
    from .engine import RayExecutor

    return RayExecutor(
        address or (setting.address if setting is not None else None),
        num_cpus=setting.num_cpus if setting is not None else None,
        num_gpus=setting.num_gpus if setting is not None else None,
    )
