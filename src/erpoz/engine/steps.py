"""Steps that only wait, for flows that wait between other steps (YAML flows included):

    - id: pause
      uses: erpoz.engine.steps:sleep
      with: {seconds: 86400}
    - id: reply
      uses: erpoz.engine.steps:receive
      with: {topic: reply, timeout_s: 604800}

Each is a step of its own, so that waking it runs nothing else again (see docs/durable.md).
"""

from __future__ import annotations

from typing import Any

from ..flow import Context, step


@step
async def sleep(seconds: float, ctx: Context) -> float:
    """Sleep ``seconds`` durably (``ctx.sleep``); the seconds slept."""
    await ctx.sleep(seconds)
    return seconds


@step
async def receive(topic: str, timeout_s: float, ctx: Context) -> Any:
    """The next message sent to the run on ``topic`` (``ctx.recv``); ``null`` after
    ``timeout_s`` seconds without one."""
    return await ctx.recv(topic, timeout=timeout_s)


@step
async def wait_event(run_id: str, key: str, timeout_s: float, ctx: Context) -> Any:
    """Run ``run_id``'s event ``key`` (``ctx.get_event``); ``null`` after ``timeout_s``."""
    return await ctx.get_event(run_id, key, timeout=timeout_s)
