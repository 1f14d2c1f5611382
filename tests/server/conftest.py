"""Shared fixtures of the server tests: a real app over a throw-away SQLite store.

- ``keys``: tenant -> API key (``acme``, ``globex``);
- ``auth``: ``auth("acme")`` -> the headers that present that tenant's key;
- ``make_state(**overrides)``: a :class:`ServerState` over ``tmp_path/runs.db`` exposing the
  flows of ``_flows.py`` (``echo``, ``review`` — waits for review —, ``slow``, ``fail``,
  ``ask`` — calls the model ``echo-model``, a FunctionModel that answers the question upper
  case); keyword arguments replace ServerState fields (``tenants=None``: no keys);
- ``state`` / ``app`` / ``client``: the default state, its app, and a started
  ``fastapi.testclient.TestClient`` over it (lifespan run; real HTTP semantics, in process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from erpoz.engine import Engine
from erpoz.models import ModelHub
from erpoz.models._types import ModelSpec
from erpoz.server import ServerState, Tenants, create_app
from erpoz.store import open_store
from erpoz.testing import FunctionModel

from ._flows import ALL

KEYS = {"acme": "acme-key-0123456789abcdef", "globex": "globex-key-0123456789abcdef"}


@pytest.fixture
def keys() -> dict[str, str]:
    """Tenant -> API key."""
    return dict(KEYS)


@pytest.fixture
def auth(keys: dict[str, str]) -> Callable[..., dict[str, str]]:
    """``auth(tenant="acme")``: headers presenting that tenant's key."""

    def headers(tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[tenant]}"}

    return headers


def echo_hub() -> ModelHub:
    """A hub with one metered test model, ``echo-model`` (answers upper case)."""
    hub = ModelHub()
    hub.add(
        FunctionModel(lambda req: req.messages[-1].text.upper(), name="echo-model"),
        ModelSpec(
            name="echo-model", provider="test", price_in=1.0, price_out=2.0, context_window=4096
        ),
    )
    return hub


@pytest.fixture
def make_state(tmp_path: Path, keys: dict[str, str]) -> Iterator[Callable[..., ServerState]]:
    stores = []

    def make(**overrides: Any) -> ServerState:
        store = open_store(tmp_path / f"runs{len(stores) or ''}.db")
        stores.append(store)
        engine = Engine(store, services={ModelHub: echo_hub()})
        fields: dict[str, Any] = {
            "flows": {f.name: f.compile() for f in ALL},
            "tenants": Tenants({key: tenant for tenant, key in keys.items()}),
            "ping_s": 0.2,
        }
        fields.update(overrides)
        return ServerState(store, engine, **fields)

    yield make
    for store in stores:
        asyncio.run(store.close())


@pytest.fixture
def state(make_state: Callable[..., ServerState]) -> ServerState:
    return make_state()


@pytest.fixture
def app(state: ServerState) -> FastAPI:
    return create_app(state)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
