"""The tools of docs/tools.md's example: reading an invoice, and e-mailing a customer (a side
effect: here the mail only goes to an outbox in memory)."""

from __future__ import annotations

from erpoz.tools import tool

INVOICES = {1042: {"invoice": 1042, "total": 49.0, "charged": 2}}
OUTBOX: list[str] = []


@tool
def lookup_invoice(invoice: int) -> dict[str, object]:
    """Look an invoice up by its number."""
    return INVOICES.get(invoice, {"invoice": invoice, "total": None, "charged": 0})


@tool(side_effects=True)
def send_email(to: str, body: str) -> str:
    """Send an e-mail to a customer."""
    OUTBOX.append(f"{to}: {body}")
    return f"queued as mail #{len(OUTBOX)}"
