"""Flows the scale-out benchmark runs (a module, so that worker processes and Ray workers can
import the steps by name)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from erpoz import Flow, step

HERE = Path(__file__).resolve()
WORK_MS = 100.0


@step
async def tick(x: int) -> int:
    """A 10 ms step: waiting on something, as a model or API call does."""
    await asyncio.sleep(0.01)
    return x + 1


chain5 = Flow("bench-chain5", inputs={"x": int}, source=f"{HERE}:chain5")
_ref = chain5.input("x")
for _i in range(1, 6):
    _ref = chain5.add(tick, id=f"s{_i}", x=_ref)


def plain_inc(x: int) -> int:
    return x + 1


@step
def inc(x: int) -> int:
    """A trivial pure step (what is measured is everything around it)."""
    return x + 1


def pure_chain(n: int) -> Flow:
    flow = Flow(f"pure-chain-{n}", inputs={"x": int})
    ref = flow.input("x")
    for i in range(n):
        ref = flow.add(inc, id=f"s{i}", x=ref)
    return flow


def _work(ms: float) -> int:
    """Pure-Python arithmetic for about ``ms`` milliseconds (holds the GIL throughout)."""
    n = int(ms * 11_000)
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def time_work(ms: float) -> float:
    t0 = time.perf_counter()
    _work(ms)
    return time.perf_counter() - t0


@step
def numbers(n: int) -> list[int]:
    return list(range(n))


@step
def crunch(i: int, ms: float) -> int:
    return _work(ms) + i


@step
def total(parts: list[int]) -> int:
    return len(parts)


def cpu_fan_out(n: int, ms: float) -> Flow:
    flow = Flow(f"cpu-fan-{n}", inputs={"n": int})
    items = flow.add(numbers, n=flow.input("n"))
    parts = flow.map(crunch, over=items, item="i", concurrency=n, ms=ms)
    flow.add(total, parts=parts)
    return flow
