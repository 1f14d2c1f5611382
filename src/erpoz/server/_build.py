"""Build the server's state from a project, as ``erpoz serve`` does: the run store, the
services of ``erpoz.yaml`` (models, guardrails, tools; memory when named), the flows to expose
(named as ``erpoz run`` takes them) and the API keys (``--keys FILE`` or ``ERPOZ_API_KEYS``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..engine import Engine
from ..errors import ConfigError
from ..flow import Plan, load_flow
from ..project import project_services
from ..store import open_store
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
