"""The flow and tools of the effects crash test (``bench/effects_crash.py``): what workers that
are killed at random moments run.

Each of the three chained stages asks a model, calls two side-effecting tools and asks the model
again. The tools act on an outside ledger, a SQLite file named by ``$EFFECTS_LEDGER``, in rollback
journal mode (not WAL: every call opens and closes a connection of its own, from eight threads
in two processes killed at random, which is the pattern that meets SQLite's WAL-reset race —
SQLite 3.7.0 to 3.51.2, https://sqlite.org/wal.html#walresetbug — where a checkpoint misses
a WAL reset and the file is left "malformed"; a rollback journal survives SIGKILL of a writer
as well, the next connection rolls the hot journal back):

- ``pay`` honours its idempotency key, as a payment API does: the charge is applied once per
  key (a unique key in ``pay_effects``); every call it receives is logged in ``pay_calls``;
- ``notify`` does not: every call it receives is a message sent, logged in ``notify_calls``.

Both apply their effect first and answer after ``$EFFECTS_TOOL_S`` seconds (the reply's trip
back), so a kill in that window leaves an effect whose result the run never recorded: the case
the journal is for. Every call carries ``ref`` (run id / step id), so the test can tell which
logical call an outside record belongs to.
"""

from __future__ import annotations

import os
import sqlite3
import time

from erpoz import Context, Flow, step
from erpoz.tools import tool

LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pay_calls (ref TEXT, key TEXT, at REAL)",
    "CREATE TABLE IF NOT EXISTS pay_effects (key TEXT PRIMARY KEY, ref TEXT, amount INTEGER)",
    "CREATE TABLE IF NOT EXISTS notify_calls (ref TEXT, key TEXT, at REAL)",
)
STAGES = 3


def _ledger() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["EFFECTS_LEDGER"], timeout=30, isolation_level=None)
    # what a killed process wrote is in the OS's cache already: only a power cut would lose
    # it, and the test kills processes, not the machine
    db.execute("PRAGMA synchronous=OFF")
    return db


def _reply_delay() -> None:
    time.sleep(float(os.environ.get("EFFECTS_TOOL_S", "0.005")))


@tool(side_effects=True)
def pay(ref: str, amount: int, idempotency_key: str) -> dict[str, object]:
    """Charge ``amount`` once per idempotency key."""
    db = _ledger()
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO pay_calls VALUES (?, ?, ?)", (ref, idempotency_key, time.time()))
        db.execute(
            "INSERT OR IGNORE INTO pay_effects VALUES (?, ?, ?)", (idempotency_key, ref, amount)
        )
        db.execute("COMMIT")
    finally:
        db.close()
    _reply_delay()
    return {"charged": amount, "key": idempotency_key}


@tool(side_effects=True)
def notify(ref: str, text: str, idempotency_key: str) -> str:
    """Send a message (every call is a message: the key is ignored)."""
    db = _ledger()
    try:
        db.execute("INSERT INTO notify_calls VALUES (?, ?, ?)", (ref, idempotency_key, time.time()))
    finally:
        db.close()
    _reply_delay()
    return f"sent {len(text)} chars"


@step
async def stage(x: int, ctx: Context) -> int:
    ref = f"{ctx.run_id}/{ctx.step_id}"
    draft = await ctx.models.chat("stub", f"{ref}/draft")
    await ctx.tools.call("pay", ref=ref, amount=x)
    await ctx.tools.call("notify", ref=ref, text=draft.text[:40])
    await ctx.models.chat("stub", f"{ref}/check")
    return x + 1


flow = Flow("effects-crash", inputs={"x": int}, source="bench.effects_flow:flow")
_prev = flow.input("x")
for _i in range(1, STAGES + 1):
    _prev = flow.add(stage, id=f"s{_i}", x=_prev)
flow.output(_prev)
