"""Where step functions run. The engine talks to the :class:`Executor` protocol: the thread
pool of this process (the default) or Ray (``erpoz.engine.RayExecutor``)."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from typing import Any, Protocol

from ..flow import Resources


class Executor(Protocol):
    """Runs a step function off the event loop.

    ``remote`` says whether it runs steps in other processes (then the step's arguments and
    result must pickle, and a step that takes ``ctx`` gets a :class:`RemoteContext`: the
    orchestrating process records what it emits). ``resources`` is what the step declares it
    needs; an executor that cannot ever provide it raises :class:`ResourcesUnavailable`.
    """

    remote: bool

    async def call(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], resources: Resources | None = None
    ) -> Any: ...

    def shutdown(self) -> None: ...


class ThreadExecutor:
    """Sync steps in a thread pool, so the event loop never blocks on them."""

    remote = False

    def __init__(self, max_workers: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(
            max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix="erpoz-step",
        )

    async def call(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], resources: Resources | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
