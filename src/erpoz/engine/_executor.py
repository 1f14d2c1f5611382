"""Where sync steps run. The engine talks to this protocol; Ray plugs in behind it later."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol


class Executor(Protocol):
    """Runs a sync step function off the event loop."""

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any: ...

    def shutdown(self) -> None: ...


class ThreadExecutor:
    """Sync steps in a thread pool, so the event loop never blocks on them."""

    def __init__(self, max_workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix="erpoz-step",
        )

    async def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
