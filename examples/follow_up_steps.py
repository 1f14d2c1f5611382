"""The steps of examples/follow_up.yaml besides the built-in wait."""

from __future__ import annotations

from typing import Any

from erpoz import step


@step
def answer(customer: str, reply: Any) -> str:
    if reply is None:
        return f"{customer} did not reply: close the ticket"
    return f"{customer} replied {reply!r}: reopen the ticket"
