"""What every part of the server shares: the store, the engine with the project's services,
the flows that can be started by name, the tenants and their API keys, and a bus that tells
followers about each event as it is appended."""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine
from ..errors import ConfigError
from ..flow import Plan
from ..store import Store

#: Requests larger than this are refused with 413 (bytes).
DEFAULT_MAX_BODY = 4 * 1024 * 1024


class Tenants:
    """API keys and the tenant each belongs to.

    :meth:`resolve` compares the presented key with every configured key in constant time and
    always walks all of them, so how long it takes says nothing about which keys or tenants
    exist.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, str]) -> None:
        for key, tenant in keys.items():
            if len(key) < 16:
                raise ConfigError(f"API key for tenant {tenant!r} is shorter than 16 characters")
            if not tenant or tenant == "-":
                raise ConfigError("each API key names a tenant (not empty, not '-')")
        self._keys = [(k.encode(), t) for k, t in keys.items()]

    def __len__(self) -> int:
        return len(self._keys)

    def resolve(self, presented: str) -> str | None:
        given = presented.encode()
        found: str | None = None
        for key, tenant in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = tenant
        return found

    @classmethod
    def from_env(cls, value: str | None = None) -> Tenants | None:
        """``ERPOZ_API_KEYS="KEY1=tenant-a,KEY2=tenant-b"``; ``None`` when unset."""
        raw = value if value is not None else os.environ.get("ERPOZ_API_KEYS", "")
        if not raw.strip():
            return None
        keys: dict[str, str] = {}
        for item in raw.split(","):
            key, sep, tenant = item.strip().partition("=")
            if not sep:
                raise ConfigError("ERPOZ_API_KEYS is KEY=tenant pairs separated by commas")
            keys[key] = tenant
        return cls(keys)


class EventBus:
    """Fans each appended event out to the queues of those following its run (or all runs).

    Register :meth:`listen` as an engine listener; followers call :meth:`follow` and read
    ``(run_id, kind, step, attempt, data)`` tuples from the queue they get."""

    def __init__(self) -> None:
        self._by_run: dict[str, set[asyncio.Queue[tuple[Any, ...]]]] = {}
        self._all: set[asyncio.Queue[tuple[Any, ...]]] = set()

    def listen(
        self,
        run_id: str,
        kind: str,
        step: str | None,
        attempt: int,
        data: Mapping[str, Any] | None,
    ) -> None:
        item = (run_id, kind, step, attempt, data)
        for q in self._by_run.get(run_id, ()):
            q.put_nowait(item)
        for q in self._all:
            q.put_nowait(item)

    def follow(self, run_id: str | None = None) -> asyncio.Queue[tuple[Any, ...]]:
        q: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        if run_id is None:
            self._all.add(q)
        else:
            self._by_run.setdefault(run_id, set()).add(q)
        return q

    def unfollow(self, q: asyncio.Queue[tuple[Any, ...]], run_id: str | None = None) -> None:
        if run_id is None:
            self._all.discard(q)
            return
        qs = self._by_run.get(run_id)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self._by_run[run_id]


@dataclass
class ServerState:
    """The server's world. ``tenants`` is ``None`` when no API keys are configured: then the
    server answers on loopback only, everything belongs to the tenant ``"-"``."""

    store: Store
    engine: Engine
    flows: dict[str, Plan] = field(default_factory=dict)
    tenants: Tenants | None = None
    bus: EventBus = field(default_factory=EventBus)
    max_body: int = DEFAULT_MAX_BODY
    #: run id -> the task driving it in this process (runs started with wait=false)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    def services(self) -> Mapping[type, object]:
        return self.engine.services
