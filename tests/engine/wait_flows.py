"""Flows that wait durably (ctx.sleep, ctx.recv, ctx.set_event / get_event), loaded by file
path in-process and by `erpoz worker` subprocesses alike.

``napper`` sleeps ``$ERPOZ_TEST_NAP_S`` seconds (default 2) in a step of its own, then a step
``after`` emits ``woke`` (with the time) and appends ``run_id time`` to
``$ERPOZ_TEST_EXEC_LOG``: a test counts how often, and when, the run went on after its timer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from erpoz import Context, Flow, step

HERE = Path(__file__).resolve()
NAP_S = float(os.environ.get("ERPOZ_TEST_NAP_S", "2"))


@step
async def nap(x: int, ctx: Context) -> int:
    await ctx.sleep(NAP_S)
    return x


@step
async def after(x: int, ctx: Context) -> int:
    ctx.emit("woke", {"at": time.time()})
    path = os.environ.get("ERPOZ_TEST_EXEC_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{ctx.run_id} {time.time()!r}\n")
    return x + 1


napper = Flow("napper", inputs={"x": int}, source=f"{HERE}:napper")
napper.add(after, x=napper.add(nap, x=napper.input("x")))


@step
async def wait_reply(ticket: str, ctx: Context) -> str:
    reply = await ctx.recv("reply", timeout=float(os.environ.get("ERPOZ_TEST_RECV_S", "30")))
    if reply is None:
        return f"{ticket}: no reply"
    await ctx.set_event("answered", {"ticket": ticket, "reply": reply})
    return f"{ticket}: {reply}"


replier = Flow("replier", inputs={"ticket": str}, source=f"{HERE}:replier")
replier.add(wait_reply, ticket=replier.input("ticket"))


@step
async def watch(other: str, ctx: Context) -> Any:
    return await ctx.get_event(other, "answered", timeout=30)


watcher = Flow("watcher", inputs={"other": str}, source=f"{HERE}:watcher")
watcher.add(watch, other=watcher.input("other"))
