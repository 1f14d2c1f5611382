"""The assembly of a project: the services its steps reach through ``ctx`` (models and
routers, guardrails, tools, memory), built one way for every entry point (``erpoz run`` and the
review commands, ``erpoz serve``, ``erpoz demo``, ``erpoz.run``) from its project file. This is
the only part that reads ``erpoz.yaml``; the engine is given what it builds."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .flow import import_object
from .models import (
    Budget,
    CascadeConfig,
    ChatModel,
    CheapestConfig,
    EmbedModel,
    Factory,
    FallbackConfig,
    ModelHub,
    OnlineConfig,
    ProjectConfig,
    SemanticConfig,
    configured_model,
    load_config,
)
from .store import BudgetLedger, RateLimits, Store

if TYPE_CHECKING:
    from .engine import Executor
    from .memory import Memory
    from .tools import ToolRegistry


async def project_services(
    store: Store,
    config: str | os.PathLike[str] | None = None,
    memory: str | Memory | None = None,
) -> ProjectServices:
    """What steps reach through ``ctx``: the project's models (else the offline default),
    guardrails and tools from ``config`` (default: ``erpoz.yaml`` / ``$ERPOZ_CONFIG``), and
    ``memory`` (a memory database path, or an open one; without it, the project's, opened
    when a step first uses ``ctx.memory``: see :class:`ProjectServices`). Project and tenant
    budgets are kept in the store's budget ledger (starting from what its runs have spent), so
    they hold across every process that shares it. Nothing is loaded until a step uses it."""
    from .guards import Guardrails, guardrails_from_config
    from .models import spent_in_store
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
    services = ProjectServices({ModelHub: hub})
    if rails is not None:
        services[Guardrails] = rails
    if tools is not None:
        services[ToolRegistry] = tools
    if memory is not None:
        from .memory import Memory, open_memory

        services[Memory] = memory if isinstance(memory, Memory) else open_memory(memory)
    return services


class ProjectServices(dict[type, object]):
    """The services :func:`project_services` built (a dict: add or replace one as with any)
    and, when a step first asks for a ``Memory`` and none was given, the project's memory
    (:func:`erpoz.memory.project_memory`: ``$ERPOZ_MEMORY``, else ``.erpoz/memory.db`` under
    the working directory, opened once per process). Until a step asks, erpoz.memory is not
    imported and no model is loaded; the memory is not among the keys (it is only answered),
    so add to these services in place, with ``copy()`` or with ``|``, which keep that answer;
    a plain dict made from them (``{**services}``, ``dict(services)``) does not."""

    def __missing__(self, key: type) -> object:
        if is_memory(key):
            from .memory import project_memory

            return project_memory()
        raise KeyError(key)

    def get(self, key: type, default: object = None) -> object:
        try:
            return self[key]
        except KeyError:
            return default

    def copy(self) -> ProjectServices:
        return ProjectServices(self)

    def __or__(self, other: Mapping[type, object]) -> ProjectServices:  # type: ignore[override]
        return ProjectServices({**self, **other})


def is_memory(key: object) -> bool:
    """Whether ``key`` is :class:`erpoz.memory.Memory`, without importing it: whoever holds
    the class has imported its module."""
    memory = sys.modules.get("erpoz.memory")
    return memory is not None and key is getattr(memory, "Memory", None)


async def _with_tool_source(
    cfg: ProjectConfig, section: str, tools: ToolRegistry | None
) -> ToolRegistry:
    """Add the tools of a section of ``erpoz.yaml`` that a plug-in reads: the entry point of
    that name in the group ``erpoz.tool_sources`` (``mcp``: erpoz.integrations.mcp), an async
    function of the project config returning tools."""
    from importlib.metadata import entry_points

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
    from .models import ExecutorConfig

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


# --- the project's models ---------------------------------------------------------------------
def build_hub(
    config: ProjectConfig,
    *,
    extra_providers: Mapping[str, Factory] | None = None,
    lazy: bool = True,
) -> ModelHub:
    """The hub of a project: each model made by its provider (on first use, unless
    ``lazy=False``) and metered, then the routers, each after those it uses."""
    hub = ModelHub(budget=_budget(config))
    extra = dict(extra_providers or {})
    for name in config.models:
        spec = config.spec(name)
        try:  # a typo in an installed provider's params is a config error, found now
            model = configured_model(spec, extra.get(spec.provider), lazy=lazy)
        except ConfigError as exc:
            if exc.file is not None:
                raise
            raise config.error(exc.message, "models", name, key=True) from None
        hub.add(model, spec)
    for name in config.router_order():
        hub.add(_router(config, name, hub))
    return hub


def load_hub(
    path: str | os.PathLike[str] | None = None,
    *,
    extra_providers: Mapping[str, Factory] | None = None,
) -> ModelHub:
    """The hub of the project file (``path``, else ``$ERPOZ_CONFIG``, else ``./erpoz.yaml``),
    or the offline default (:func:`erpoz.models.default_config`) when there is none."""
    return build_hub(
        load_config(path, extra_providers=extra_providers), extra_providers=extra_providers
    )


def _budget(config: ProjectConfig) -> Budget | None:
    b = config.budget
    if b is None:
        return None
    budget = Budget(b.per_run_usd, b.per_project_usd)
    budget.per_tenant_usd, budget.tenants = b.per_tenant_usd, dict(b.tenants)
    return budget


def _router(config: ProjectConfig, name: str, hub: ModelHub) -> ChatModel:
    from . import routing

    r = config.routers[name]
    if isinstance(r, SemanticConfig):
        return _semantic(config, name, r, hub)
    members = [_chat(hub, m) for m in r.models]
    try:
        if isinstance(r, FallbackConfig):
            return routing.FallbackRouter(name, members, cooldown_s=r.cooldown_s)
        if isinstance(r, CheapestConfig):
            return routing.CheapestCapableRouter(name, members)
        if isinstance(r, CascadeConfig):
            validators = [_validator(config, name, ref, i) for i, ref in enumerate(r.validators)]
            return routing.CascadeRouter(name, members, validators, threshold=r.threshold)
        if isinstance(r, OnlineConfig):
            return _online(config, name, r, hub, members)
        weights = None
        if r.weights is not None:
            weights = [r.weights.get(m, 1.0) for m in r.models]
        return routing.LoadBalanceRouter(
            name, members, weights=weights, strategy=r.strategy, seed=r.seed
        )
    except ConfigError as exc:
        if exc.file is not None:  # already located
            raise
        raise config.error(exc.message, "routers", name, key=True) from None


def _chat(hub: ModelHub, name: str) -> ChatModel:
    model = hub.get(name)
    assert isinstance(model, ChatModel), f"{name} was checked to be a chat model"
    return model


def _validator(config: ProjectConfig, router: str, ref: str, index: int) -> Any:
    try:
        fn = import_object(ref, base=config.base, what="validator")
    except ValueError as exc:
        raise config.error(
            f"router '{router}': {exc}", "routers", router, "validators", index
        ) from None
    if not callable(fn):
        raise config.error(
            f"router '{router}': validator '{ref}' is not callable",
            "routers",
            router,
            "validators",
            index,
        )
    return fn


def _online(
    config: ProjectConfig, name: str, r: OnlineConfig, hub: ModelHub, members: list[ChatModel]
) -> ChatModel:
    from .routing.online import HashingEmbed, OnlineRouter

    embedder: Any = HashingEmbed() if r.embed is None else hub.get(r.embed)
    validators = [_validator(config, name, ref, i) for i, ref in enumerate(r.validators)]
    store = r.store
    if store not in (None, "default", "memory") and "://" not in store and config.base is not None:
        store = str(config.base / store)  # a path is relative to the project file
    return OnlineRouter(
        name,
        members,
        embedder,
        target=r.target,
        relative=r.relative,
        explore=r.explore,
        bits=r.bits,
        confidence=r.confidence,
        validators=validators,
        store=store,
        refresh_s=r.refresh_s,
        seed=r.seed,
    )


def _semantic(config: ProjectConfig, name: str, r: SemanticConfig, hub: ModelHub) -> ChatModel:
    try:
        from .routing.semantic import SemanticRouter
    except ImportError as exc:
        raise config.error(
            f"router '{name}': type 'semantic' needs erpoz.routing.semantic, which cannot be "
            f"imported here ({exc})",
            "routers",
            name,
            "type",
        ) from None
    embedder = hub.get(r.embed)
    assert isinstance(embedder, EmbedModel), f"{r.embed} was checked to be an embed model"
    routes = {route: (_chat(hub, s.model), tuple(s.examples)) for route, s in r.routes.items()}
    default: str | ChatModel | None = r.default
    if r.default is not None and r.default not in r.routes:
        default = _chat(hub, r.default)
    try:
        return SemanticRouter(
            name, embedder, routes, default=default, min_score=r.min_score, scoring=r.scoring
        )
    except ConfigError as exc:
        raise config.error(exc.message, "routers", name, key=True) from None
