"""Steps of the example flow ``triage.yaml``: a support ticket is classified, its entities
extracted, facts looked up in parallel, a reply drafted and revised until it passes checks.

Deterministic and offline on purpose: the model-backed steps come with erpoz's model layer.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel

from erpoz import Context, RetryPolicy, ReviewRequired, step


class Ticket(BaseModel):
    text: str
    category: str
    invoice_ids: list[str]
    sentences: list[str]


class Fact(BaseModel):
    source: str
    text: str


class Draft(BaseModel):
    text: str
    revision: int = 0
    valid: bool = False
    problems: list[str] = []


_CATEGORIES = {
    "billing": ("invoice", "charge", "charged", "refund", "payment", "bill"),
    "access": ("password", "login", "locked", "account"),
    "bug": ("error", "crash", "broken", "bug"),
}


@step
def classify(ticket: str) -> Ticket:
    """Sort the ticket into a category by keywords and pull out invoice numbers."""
    words = set(re.findall(r"[a-z]+", ticket.lower()))
    scores = {cat: len(words & set(keys)) for cat, keys in _CATEGORIES.items()}
    category = max(scores, key=lambda c: scores[c]) if any(scores.values()) else "other"
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", ticket) if s.strip()]
    return Ticket(
        text=ticket,
        category=category,
        invoice_ids=re.findall(r"\bINV-\d+\b", ticket),
        sentences=sentences,
    )


@step
async def sentiment(sentence: str) -> float:
    """Score one sentence (mapped over every sentence of the ticket)."""
    await asyncio.sleep(0.01)
    negative = sum(w in sentence.lower() for w in ("twice", "angry", "wrong", "never", "broken"))
    return round(-0.4 * negative, 2)


@step(retry=RetryPolicy(attempts=3, backoff=0.05))
async def billing_history(ticket: Ticket, ctx: Context) -> Fact:
    """Look up the invoices (a stand-in for a billing API call, recorded as a tool event)."""
    await asyncio.sleep(0.02)
    found = ", ".join(ticket.invoice_ids) or "no invoice number"
    ctx.emit("tool_called", {"tool": "billing.lookup", "invoices": ticket.invoice_ids})
    return Fact(source="billing", text=f"{found}: two identical charges of 49.00 EUR on 3 Nov")


@step(cache=True)
async def policy(category: str) -> Fact:
    """Fetch the policy paragraph for the category (cached across runs)."""
    await asyncio.sleep(0.02)
    text = {
        "billing": "Duplicate charges are refunded in full within 5 business days.",
        "access": "Accounts are unlocked after identity verification.",
    }.get(category, "Tickets are answered within one business day.")
    return Fact(source="policy", text=text)


@step
def draft(ticket: Ticket, facts: list[Fact], mood: list[float]) -> Draft:
    """Write a first reply from the facts."""
    opening = "We are sorry for the trouble. " if sum(mood) < 0 else ""
    body = " ".join(f.text for f in facts)
    return Draft(text=f"{opening}About your {ticket.category} request: {body}")


@step
def revise(draft: Draft) -> Draft:
    """Check the draft and fix what fails (runs in a bounded loop until valid)."""
    problems = []
    text = draft.text
    if not text.rstrip().endswith(("Best regards, Support", "Support")):
        problems.append("missing sign-off")
        text = text.rstrip() + "\n\nBest regards, Support"
    if len(text) > 600:
        problems.append("too long")
        text = text[:560] + "…\n\nBest regards, Support"
    return Draft(text=text, revision=draft.revision + 1, valid=not problems, problems=problems)


@step
def approve_refund(ticket: Ticket, reply: Draft) -> str:
    """Refunds over the limit need a person; small ones go out directly."""
    amount = 49.0 * max(1, len(ticket.invoice_ids))
    if "urgent" in ticket.text.lower() or amount > 500:
        raise ReviewRequired(f"refund of {amount:.2f} EUR needs approval", output=reply.text)
    return reply.text
