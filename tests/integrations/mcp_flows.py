"""Flows that ``erpoz mcp serve`` exposes in the tests (loaded as ``mcp_flows.py:NAME``)."""

from __future__ import annotations

from pydantic import BaseModel

from erpoz import Flow, ReviewRequired, step


class Order(BaseModel):
    item: str
    quantity: int = 1


@step
def quote(order: Order, discount: float) -> dict[str, object]:
    total = round(order.quantity * 12.5 * (1 - discount), 2)
    return {"item": order.item, "total": total}


quoting = Flow(
    "quote",
    inputs={"order": Order, "discount": float},
    defaults={"discount": 0.0},
    description="Quote the price of an order.",
)
quoting.output(quoting.add(quote, order=quoting.input("order"), discount=quoting.input("discount")))


@step
def refund(amount: float) -> str:
    if amount > 100:
        raise ReviewRequired("refunds over 100 need a person", output=f"refund {amount}")
    return f"refund {amount}"


refunding = Flow("refund", inputs={"amount": float})
refunding.output(refunding.add(refund, amount=refunding.input("amount")))


@step
def explode(text: str) -> str:
    raise ValueError(f"cannot handle {text!r}")


broken = Flow("broken", inputs={"text": str})
broken.output(broken.add(explode, text=broken.input("text")))
