"""Flows that wait durably (docs/durable.md): a reminder that sleeps, and a purchase that waits
for a decision sent to it. Neither holds a process while it waits.

    erpoz run examples/durable.py:reminder -i note="call Ada" -i delay_s=1 --hold 0
    erpoz run examples/durable.py:purchase -i item=laptop --run-id buy-7
"""

from __future__ import annotations

from erpoz import Context, Flow, step


@step
async def wait(delay_s: float, ctx: Context) -> float:
    """Sleep in a step of its own: when the run wakes, only this step runs again."""
    await ctx.sleep(delay_s)
    return delay_s


@step
def remind(note: str, waited: float) -> str:
    return f"reminder after {waited:g} s: {note}"


reminder = Flow("reminder", inputs={"note": str, "delay_s": float}, source=f"{__file__}:reminder")
reminder.add(
    remind,
    note=reminder.input("note"),
    waited=reminder.add(wait, delay_s=reminder.input("delay_s")),
)


@step
async def decide(item: str, ctx: Context) -> str:
    """Wait up to a day for a decision (`erpoz runs send RUN decision approved`)."""
    decision = await ctx.recv("decision", timeout=24 * 3600)
    verdict = decision if decision is not None else "no answer"
    await ctx.set_event("decided", verdict)  # for whoever waits on this run
    return f"{item}: {verdict}"


purchase = Flow("purchase", inputs={"item": str}, source=f"{__file__}:purchase")
purchase.add(decide, item=purchase.input("item"))
