"""Flows that workers run in the queue tests (loaded by file path, in-process and by the
`erpoz worker` subprocesses alike).

Each step of ``chain5`` appends ``run_id step time`` to ``$ERPOZ_TEST_EXEC_LOG`` when it starts,
so a test can check that no step ran again after its success was recorded. ``STEP_S`` (from
``$ERPOZ_TEST_STEP_S``, default 0.01 s) is how long each step sleeps.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from erpoz import Context, Flow, step

STEP_S = float(os.environ.get("ERPOZ_TEST_STEP_S", "0.01"))
HERE = Path(__file__).resolve()


def _note(ctx: Context) -> None:
    path = os.environ.get("ERPOZ_TEST_EXEC_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:  # one short O_APPEND write per start
            f.write(f"{ctx.run_id} {ctx.step_id} {time.time()!r}\n")


@step
async def tick(x: int, ctx: Context) -> int:
    _note(ctx)
    await asyncio.sleep(STEP_S)
    return x + 1


chain5 = Flow("chain5", inputs={"x": int}, source=f"{HERE}:chain5")
ref = chain5.input("x")
for i in range(1, 6):
    ref = chain5.add(tick, id=f"s{i}", x=ref)


@step
def crash(x: int) -> int:
    """Kills the process that runs it: a step that takes its worker down (out of memory …)."""
    os._exit(17)


killer = Flow("killer", inputs={"x": int}, source=f"{HERE}:killer")
killer.add(crash, x=killer.input("x"))


@step(review=True)
def draft(x: int) -> int:
    return x * 10


@step
def publish(x: int) -> str:
    return f"published {x}"


reviewed = Flow("reviewed", inputs={"x": int}, source=f"{HERE}:reviewed")
reviewed.add(publish, x=reviewed.add(draft, x=reviewed.input("x")))
