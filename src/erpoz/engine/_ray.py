"""Steps as Ray tasks: ``executor: ray`` (``pip install 'erpoz[ray]'``).

The orchestrating process keeps the run: it schedules steps, records every event and owns the
log, exactly as with the local executor; Ray only executes step functions. Which steps go to
Ray is the engine's choice (see ``Engine``): pure sync steps, and any step that declares
``resources``. Each execution is one Ray task with the step's resources (CPUs, GPUs, memory,
custom), ``max_retries=0`` (the step's own :class:`~erpoz.RetryPolicy` decides about retries,
so attempts are counted and recorded once) and its result in Ray's object store: a step whose
input is the output of an earlier Ray step gets that object by reference, without a round trip
through this process.

A step whose resources no node of the cluster has fails at once with
:class:`~erpoz.errors.ResourcesUnavailable` instead of waiting forever; a task whose worker dies
fails with :class:`~erpoz.errors.ExecutorError`, which the step's retry policy may retry; a
step timeout cancels the task (``ray.cancel(force=True)`` stops the worker running it).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, ExecutorError, ResourcesUnavailable
from ..flow import LOADED_PREFIX, Resources
from ._remote import RemoteContext

#: How long the cluster's node list is trusted before it is read again.
CAPACITY_TTL_S = 5.0
#: Outputs of Ray steps kept by reference, so that a later step can take them from the store.
MAX_REMEMBERED = 512
_SCALARS = (str, int, float, bool, type(None), bytes)


def _run_step(fn: Callable[..., Any], **kwargs: Any) -> tuple[Any, list[Any]]:
    """The Ray task around a step function (runs in a Ray worker).

    Returns the output and the events a ``RemoteContext`` collected; an exception carries them
    in ``__erpoz_emitted__`` so that a failed step's events are recorded too."""
    ctx = next((v for v in kwargs.values() if isinstance(v, RemoteContext)), None)
    try:
        out = fn(**kwargs)
        if inspect.isawaitable(out):
            out = asyncio.run(_await(out))
    except BaseException as exc:
        if ctx is not None and ctx.emitted:
            exc.__erpoz_emitted__ = ctx.emitted  # type: ignore[attr-defined]
        raise
    return out, (ctx.emitted if ctx is not None else [])


async def _await(awaitable: Any) -> Any:
    return await awaitable


class RayExecutor:
    """Runs steps as Ray tasks on the cluster at ``address`` (``ray://…`` or ``host:port``),
    or on a Ray started in this process when ``address`` is ``None`` (with ``num_cpus``; it
    imports modules from this process's ``sys.path``). A Ray already initialised by the
    application is used as it is."""

    remote = True

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.init_options = dict(init_options or {})
        self._lock = threading.Lock()
        self._ray: Any = None
        self._task: Any = None
        self._started = False
        self._capacity: list[dict[str, float]] = []
        self._capacity_at = 0.0
        self._remembered: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self._by_value: set[str] = set()

    # --- set-up ---------------------------------------------------------------------------
    def _ensure(self) -> Any:
        if self._ray is not None:
            return self._ray
        with self._lock:
            if self._ray is not None:
                return self._ray
            try:
                import ray
            except ImportError as exc:
                raise ConfigError(
                    f"executor 'ray' needs Ray ({exc}): pip install 'erpoz[ray]'"
                ) from exc
            if not ray.is_initialized():
                self._init(ray)
            self._task = ray.remote(_run_step)
            self._ray = ray
        return ray

    def _init(self, ray: Any) -> None:
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "WARNING",
            "configure_logging": True,
        }
        if self.address is None:
            # a Ray of our own: its workers import step modules from this process's path
            path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
            if self.num_cpus is not None:
                options["num_cpus"] = self.num_cpus
            if self.num_gpus is not None:
                options["num_gpus"] = self.num_gpus
        else:
            options["address"] = self.address
        options.update(self.init_options)
        try:
            ray.init(**options)
        except Exception as exc:
            where = self.address or "a local Ray"
            raise ExecutorError(f"cannot start or reach Ray ({where}): {exc}") from exc
        self._started = True

    def shutdown(self) -> None:
        """Stop the Ray this executor started (one it found running is left alone)."""
        self._remembered.clear()
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray = None
        self._started = False

    # --- what the cluster can give ------------------------------------------------------
    def nodes(self) -> list[dict[str, float]]:
        """Each live node's total resources (``CPU``, ``GPU``, ``memory`` in bytes, custom)."""
        ray = self._ensure()
        now = time.monotonic()
        if now - self._capacity_at > CAPACITY_TTL_S or not self._capacity:
            self._capacity = [
                {k: float(v) for k, v in n.get("Resources", {}).items()}
                for n in ray.nodes()
                if n.get("Alive")
            ]
            self._capacity_at = now
        return self._capacity

    def check(self, resources: Resources) -> None:
        """Raise :class:`ResourcesUnavailable` when no node could ever run a task that needs
        ``resources`` (Ray would keep it pending forever)."""
        need = _needs(resources)
        nodes = self.nodes()
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray"
        have = "; ".join(_describe(n) for n in nodes) or "no live node"
        raise ResourcesUnavailable(
            f"the step needs {resources.describe()}, and no node of {where} has that "
            f"({have}); lower the step's resources or add a node that has them"
        )

    # --- running a step -----------------------------------------------------------------
    async def call(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], resources: Resources | None = None
    ) -> Any:
        ray = self._ensure()
        options: dict[str, Any] = {"max_retries": 0, "num_returns": 2}
        if resources is not None:
            self.check(resources)
            options["num_cpus"] = resources.cpus
            options["num_gpus"] = resources.gpus
            if resources.memory:
                options["memory"] = resources.memory
            if resources.custom:
                options["resources"] = dict(resources.custom)
        self._ship_module_of(fn, ray)
        args = {k: self._by_reference(v) for k, v in kwargs.items()}
        out_ref, emitted_ref = self._task.options(**options).remote(fn, **args)
        ctx = next((v for v in kwargs.values() if isinstance(v, RemoteContext)), None)
        try:
            out = await out_ref
            if ctx is not None:
                ctx.emitted = list(await emitted_ref)
        except asyncio.CancelledError:
            ray.cancel(out_ref, force=True)  # a step timeout: stop the worker running it
            raise
        except ray.exceptions.RayTaskError as exc:
            raise _original(exc, ctx) from None
        except ray.exceptions.RayError as exc:
            raise ExecutorError(f"Ray could not run the step: {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, _SCALARS):
            self._remember(out, out_ref)
        return out

    def _ship_module_of(self, fn: Callable[..., Any], ray: Any) -> None:
        """Steps of a flow file (``erpoz run flows.py:flow``) live in a module that Ray's
        workers cannot import by name: send that module's functions and classes by value."""
        name = getattr(fn, "__module__", None)
        if not name or name in self._by_value or not name.startswith(LOADED_PREFIX):
            return
        module = sys.modules.get(name)
        if module is not None:
            ray.cloudpickle.register_pickle_by_value(module)
            self._by_value.add(name)

    def _remember(self, out: Any, ref: Any) -> None:
        held = self._remembered
        held[id(out)] = (out, ref)
        held.move_to_end(id(out))
        while len(held) > MAX_REMEMBERED:
            held.popitem(last=False)

    def _by_reference(self, value: Any) -> Any:
        """The object-store reference of ``value`` when it is the output of a Ray step."""
        entry = self._remembered.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else value


def _needs(resources: Resources) -> dict[str, float]:
    need = {"CPU": resources.cpus, "GPU": resources.gpus}
    if resources.memory:
        need["memory"] = float(resources.memory)
    need.update(dict(resources.custom))
    return {k: v for k, v in need.items() if v > 0}


def _describe(node: dict[str, float]) -> str:
    parts = [f"{node.get('CPU', 0):g} CPU", f"{node.get('GPU', 0):g} GPU"]
    if "memory" in node:
        parts.append(f"{node['memory'] / 2**30:.1f} GiB memory")
    return ", ".join(parts)


def _original(exc: Any, ctx: RemoteContext | None) -> BaseException:
    """The step's own exception out of Ray's wrapper, with the remote traceback as a note, so
    that retry policies (``retry_on``) and error messages see what the step raised."""
    cause = getattr(exc, "cause", None)
    if not isinstance(cause, BaseException):
        return ExecutorError(f"the step failed on Ray: {exc}")
    emitted = getattr(cause, "__erpoz_emitted__", None)
    if ctx is not None and isinstance(emitted, list):
        ctx.emitted = emitted
    remote_tb = str(getattr(exc, "traceback_str", "") or "").strip()
    if remote_tb:
        cause.add_note(f"(raised in a Ray worker)\n{remote_tb}")
    return cause
