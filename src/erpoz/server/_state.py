"""What every part of the server shares: the store, the engine with the project's services,
the flows that can be started by name, the tenants and their API keys, and a bus that tells
followers about each event as it is appended."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..engine import Engine, RunResult
from ..errors import ConfigError
from ..flow import Plan
from ..store import Store

#: Requests larger than this are refused with 413 (bytes).
DEFAULT_MAX_BODY = 4 * 1024 * 1024

#: A comment line goes to followers of a run (server-sent events) after this much silence.
DEFAULT_PING_S = 15.0

log = logging.getLogger("erpoz.server")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who presented a key: the tenant it belongs to and the key's name (the default reviewer).
    Without configured keys the caller is ``Caller("-", "api")``."""

    tenant: str
    name: str


ANONYMOUS = Caller("-", "api")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Tenants:
    """API keys and the tenant each belongs to.

    A key maps to ``"tenant"`` or ``"tenant:name"`` (``name`` says who holds the key; it is the
    reviewer recorded when that key decides a review, the tenant when there is no name).

    Only SHA-256 digests of the keys are kept. :meth:`resolve` compares the digest of the
    presented key with every configured digest in constant time (equal lengths, whatever was
    presented) and always walks all of them, so how long it takes says nothing about which keys
    or tenants exist.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, str]) -> None:
        entries: list[tuple[bytes, Caller]] = []
        for key, owner in keys.items():
            tenant, _, name = owner.strip().partition(":")
            tenant, name = tenant.strip(), name.strip()
            if len(key) < 16:
                raise ConfigError(f"API key for tenant {tenant!r} is shorter than 16 characters")
            if not tenant or tenant == "-":
                raise ConfigError("each API key names a tenant (not empty, not '-')")
            entries.append((_digest(key), Caller(tenant, name or tenant)))
        self._keys = entries

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(c.tenant for _, c in self._keys)

    def identify(self, presented: str) -> Caller | None:
        """The caller a presented key belongs to, or ``None``; constant time in the key."""
        given = _digest(presented)
        found: Caller | None = None
        for digest, caller in self._keys:
            if hmac.compare_digest(given, digest) and found is None:
                found = caller
        return found

    def resolve(self, presented: str) -> str | None:
        """The tenant of a presented key, or ``None``; constant time in the key."""
        caller = self.identify(presented)
        return None if caller is None else caller.tenant

    @classmethod
    def parse(cls, text: str, *, source: str = "ERPOZ_API_KEYS") -> Tenants | None:
        """``KEY=tenant`` (or ``KEY=tenant:name``) pairs, separated by commas or new lines;
        lines starting with ``#`` are comments. ``None`` when there is none."""
        keys: dict[str, str] = {}
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip().startswith("#"):
                continue
            for item in line.split(","):
                if not item.strip():
                    continue
                key, sep, owner = item.strip().rpartition("=")
                if not sep or not key.strip():
                    raise ConfigError(
                        f"{source} (line {n}): expected KEY=tenant (or KEY=tenant:name), "
                        "separated by commas or new lines"
                    )
                if key.strip() in keys:
                    raise ConfigError(f"{source} (line {n}): the same API key is listed twice")
                keys[key.strip()] = owner
        return cls(keys) if keys else None

    @classmethod
    def from_env(cls, value: str | None = None) -> Tenants | None:
        """``ERPOZ_API_KEYS="KEY1=tenant-a,KEY2=tenant-b"``; ``None`` when unset."""
        raw = value if value is not None else os.environ.get("ERPOZ_API_KEYS", "")
        return cls.parse(raw) if raw.strip() else None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tenants | None:
        """A keys file: one ``KEY=tenant[:name]`` per line, ``#`` comments."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the keys file: {exc.strerror}", file=str(path)
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the keys file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                "save it as UTF-8",
                file=str(path),
            ) from None
        return cls.parse(text, source=str(path))


class Token(NamedTuple):
    """A piece of model output a step of ``run_id`` streamed (not an event of the log)."""

    run_id: str
    step: str
    attempt: int
    text: str


class EventBus:
    """Fans each appended event out to the queues of those following its run (or all runs).

    Register :meth:`listen` as an engine listener (and :meth:`token` as a token listener);
    followers call :meth:`follow` and read ``(run_id, kind, step, attempt, data)`` tuples from
    the queue they get, and :class:`Token` tuples when they follow with ``tokens``. Call it
    from the event loop the followers run on (the engine's listeners run there)."""

    def __init__(self) -> None:
        self._by_run: dict[str, set[asyncio.Queue[tuple[Any, ...]]]] = {}
        self._all: set[asyncio.Queue[tuple[Any, ...]]] = set()
        self._tokens: dict[str, set[asyncio.Queue[tuple[Any, ...]]]] = {}

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

    def token(self, run_id: str, step: str, attempt: int, text: str) -> None:
        qs = self._tokens.get(run_id)
        if qs:
            item = Token(run_id, step, attempt, text)
            for q in qs:
                q.put_nowait(item)

    def follow(
        self, run_id: str | None = None, *, tokens: bool = False
    ) -> asyncio.Queue[tuple[Any, ...]]:
        """A queue of the events of ``run_id`` (of every run when ``None``), and with
        ``tokens`` of the model tokens its steps stream too."""
        q: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        if run_id is None:
            self._all.add(q)
        else:
            self._by_run.setdefault(run_id, set()).add(q)
            if tokens:
                self._tokens.setdefault(run_id, set()).add(q)
        return q

    def unfollow(self, q: asyncio.Queue[tuple[Any, ...]], run_id: str | None = None) -> None:
        if run_id is None:
            self._all.discard(q)
            return
        tq = self._tokens.get(run_id)
        if tq is not None:
            tq.discard(q)
            if not tq:
                del self._tokens[run_id]
        qs = self._by_run.get(run_id)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self._by_run[run_id]

    def followers(self, run_id: str | None = None) -> int:
        """How many follow ``run_id`` (every run's followers when ``None``)."""
        if run_id is None:
            return len(self._all) + sum(len(qs) for qs in self._by_run.values())
        return len(self._by_run.get(run_id, ()))


Hook = Callable[[], Awaitable[None]]


@dataclass
class ServerState:
    """The server's world. ``tenants`` is ``None`` when no API keys are configured: then the
    server answers on loopback only, everything belongs to the tenant ``"-"``.

    The bus is registered as a listener of the engine when the state is made. Runs this server
    drives in the background are in ``tasks`` (run id -> task); ``busy`` holds the runs it is
    driving at all (so a second resume of the same run is refused, not run twice)."""

    store: Store
    engine: Engine
    flows: dict[str, Plan] = field(default_factory=dict)
    tenants: Tenants | None = None
    bus: EventBus = field(default_factory=EventBus)
    max_body: int = DEFAULT_MAX_BODY
    #: run id -> the task driving it in this process (runs started with wait=false)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    #: run ids this server is driving now (started, resumed or decided through it)
    busy: set[str] = field(default_factory=set)
    #: seconds of silence after which a follower gets a comment line (keeps proxies open)
    ping_s: float = DEFAULT_PING_S
    #: close the store when the app shuts down (``erpoz serve`` owns its store)
    close_store: bool = False
    #: awaited when the app starts / stops (in order), e.g. exporters of other parts
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.bus.listen not in self.engine.listeners:
            self.engine.listeners.append(self.bus.listen)
        if self.bus.token not in self.engine.token_listeners:
            self.engine.token_listeners.append(self.bus.token)

    def services(self) -> Mapping[type, object]:
        return self.engine.services

    def hub(self) -> Any:
        """The engine's :class:`~erpoz.models.ModelHub` (``erpoz serve`` gives it the project's);
        an empty one when it has none: the server serves the models it was given."""
        from ..models import ModelHub

        hub = self.engine.services.get(ModelHub)
        return hub if isinstance(hub, ModelHub) else ModelHub()

    def driving(self, run_id: str) -> bool:
        """Whether this process drives ``run_id`` right now."""
        return run_id in self.busy or run_id in getattr(self.engine, "_driving", ())

    def spawn(self, run_id: str, coro: Coroutine[Any, Any, RunResult]) -> asyncio.Task[RunResult]:
        """Drive a run in a task of its own: it goes on when the request that started it ends
        (or its client goes away). The run is ``busy`` until the task is done."""
        self.busy.add(run_id)
        task = asyncio.get_running_loop().create_task(coro, name=f"erpoz-run-{run_id}")
        self.tasks[run_id] = task

        def done(t: asyncio.Task[RunResult]) -> None:
            self.busy.discard(run_id)
            if self.tasks.get(run_id) is t:
                del self.tasks[run_id]
            if not t.cancelled() and (exc := t.exception()) is not None:
                log.info("run %s: %s: %s", run_id, type(exc).__name__, exc)

        task.add_done_callback(done)
        return task

    async def startup(self) -> None:
        for hook in self.on_startup:
            await hook()

    async def shutdown(self) -> None:
        """Stop driving runs (each stays resumable where it stopped), run the shutdown hooks,
        close the store if this state owns it."""
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:  # one part failing to stop must not keep the others running
                log.exception("shutdown hook failed")
        if self.close_store:
            with contextlib.suppress(Exception):
                await self.store.close()
