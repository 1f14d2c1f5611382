"""Build the server's state from a project, as ``erpoz serve`` does: the run store, the
services of ``erpoz.yaml`` (models, guardrails, tools; memory when named), the flows to expose
(named as ``erpoz run`` takes them) and the API keys (``--keys FILE`` or ``ERPOZ_API_KEYS``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..engine import Engine
from ..errors import ConfigError
from ..flow import Plan
from ..flow._load import load_flow
from ..store import Store, open_store
from ._state import DEFAULT_MAX_BODY, ServerState, Tenants


def load_flows(refs: Sequence[str]) -> dict[str, Plan]:
    """Each flow (a ``.yaml`` file, ``module:attr`` or ``file.py:attr``), compiled, by name.
    ``FlowError`` when one does not load; ``ConfigError`` when two share a name."""
    flows: dict[str, Plan] = {}
    origin: dict[str, str] = {}
    for ref in refs:
        plan = load_flow(ref).compile()
        if plan.name in flows:
            raise ConfigError(
                f"two flows are named {plan.name!r} ({origin[plan.name]} and {ref}); the API "
                "starts flows by name, so each needs its own"
            )
        flows[plan.name] = plan
        origin[plan.name] = ref
    return flows


def load_keys(keys_file: str | os.PathLike[str] | None = None) -> Tenants | None:
    """The API keys: the file when one is named, else ``$ERPOZ_API_KEYS``; ``None`` for none."""
    if keys_file is not None:
        tenants = Tenants.from_file(keys_file)
        if tenants is None:
            raise ConfigError(f"the keys file {keys_file} holds no KEY=tenant line")
        return tenants
    return Tenants.from_env()


async def project_services(
    store: Store, config: str | os.PathLike[str] | None = None, memory: str | None = None
) -> dict[type, object]:
    """What steps reach through ``ctx``, as the CLI builds it: the project's models (else
    the offline default), guardrails and tools, and the memory database named by ``memory``
    (without one, ``ctx.memory`` opens the project's when a step first uses it). A project
    budget starts from what the store's runs have already spent."""
    from ..guards import Guardrails, guardrails_from_config
    from ..models import ModelHub
    from ..models._config import build_hub, load_config
    from ..models._meter import spent_in_store
    from ..tools import ToolRegistry, registry_from_config

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
        from ..memory import Memory, open_memory

        services[Memory] = open_memory(memory)
    return services


async def build_state(
    flows: Sequence[str] = (),
    *,
    store: str | os.PathLike[str] | None = None,
    keys_file: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    memory: str | None = None,
    durability: str = "sync",
    max_body: int = DEFAULT_MAX_BODY,
) -> ServerState:
    """The state ``erpoz serve`` runs on; it owns (and at shutdown closes) its store.

    Raises ``FlowError`` (a flow), ``ConfigError`` (``erpoz.yaml``, the keys) or
    ``StoreError`` (the store) before anything listens."""
    plans = load_flows(flows)
    tenants = load_keys(keys_file)
    st = open_store(Path(store) if isinstance(store, os.PathLike) else store, durability=durability)
    try:
        services = await project_services(st, config, memory)
    except BaseException:
        await st.close()
        raise
    engine = Engine(st, services=services)
    return ServerState(
        store=st,
        engine=engine,
        flows=plans,
        tenants=tenants,
        max_body=max_body,
        close_store=True,
    )
