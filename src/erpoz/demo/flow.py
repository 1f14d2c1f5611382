"""The flagship flow: a customer question about a scanned document, answered with citations.

    intake (input guards) → read_scan (OCR) → retrieve (hybrid search, documents guarded)
    → answer (the ``default`` router: the offline extractive reader, or a chat endpoint)
    → validate (groundedness and confidence; a person reviews when they are low)
    → deliver (the answer with its sources; delivery guards apply)

Every model call goes through ``ctx.models``, every search through ``ctx.memory``, every guard
through the project's policy: the run's log holds each decision.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel

from erpoz import Context, Flow, ReviewRequired, step
from erpoz.models.extractive import passages_prompt

#: Below this groundedness (mean support of the answer's sentences by its sources, 0..1) or
#: this reader confidence, a person checks the answer before it goes out.
MIN_GROUNDED = 0.6
MIN_CONFIDENCE = 0.35


class Scan(BaseModel):
    """What OCR read on the image (empty when there was none)."""

    text: str
    lines: int
    confidence: float


class Passage(BaseModel):
    """A retrieved chunk, as cited: ``id`` is ``source#n``."""

    id: str
    source: str
    heading: str
    text: str
    score: float


class Draft(BaseModel):
    text: str
    citations: list[str]
    model: str
    route: list[str]
    confidence: float | None


class Answer(BaseModel):
    """What the flow delivers."""

    question: str
    text: str
    sources: list[str]
    model: str
    grounded: float
    confidence: float | None


@step
async def intake(question: str, ctx: Context) -> str:
    """Input guards: the question as it may go on (card numbers redacted, e-mail addresses
    pseudonymised, injected instructions blocked, as the policy says)."""
    if not question.strip():
        raise ValueError("the question is empty")
    return await ctx.guard(question, at="model_input")


@step
async def read_scan(image: str, ctx: Context) -> Scan:
    """OCR the scanned document; its text is outside content, guarded like a tool result."""
    if not image:
        return Scan(text="", lines=0, confidence=1.0)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {image}")
    result = await ctx.models.ocr("ocr", path.read_bytes())
    text = "\n".join(line.text for line in result.lines)
    text = await ctx.guard(text, at="tool_result")
    confidence = min((line.score for line in result.lines), default=0.0)
    return Scan(text=text, lines=len(result.lines), confidence=round(confidence, 3))


@step
async def retrieve(question: str, scan: Scan, ctx: Context) -> list[Passage]:
    """Hybrid search (vectors + BM25) over the ingested documents with the question and what
    the scan says; each passage passes the guards before any model reads it."""
    query = f"{question} {scan.text[:300]}".strip()
    hits = await ctx.memory.search(query, k=4, mode="hybrid")
    passages = []
    for hit in hits:
        text = await ctx.guard(hit.text, at="tool_result")
        passages.append(
            Passage(
                id=hit.id,
                source=hit.source,
                heading=" > ".join(hit.heading),
                text=text,
                score=round(hit.score, 4),
            )
        )
    ctx.emit(
        "retrieved",
        {"mode": "hybrid", "k": 4, "hits": [{"id": p.id, "score": p.score} for p in passages]},
    )
    return passages


@step
async def answer(question: str, scan: Scan, passages: list[Passage], ctx: Context) -> Draft:
    """Ask the ``default`` router with the scan and the passages as numbered sources."""
    sources = [("scan", scan.text)] if scan.text else []
    sources += [(p.id, p.text) for p in passages]
    if not sources:
        raise ValueError("nothing to answer from: the memory is empty and there is no scan")
    result = await ctx.models.chat("default", passages_prompt(question, sources), max_tokens=300)
    return Draft(
        text=result.text,
        citations=list(result.citations),
        model=result.model,
        route=list(result.route),
        confidence=result.confidence,
    )


@step
async def validate(
    question: str, draft: Draft, passages: list[Passage], scan: Scan, ctx: Context
) -> Answer:
    """Groundedness (each sentence of the answer against its sources, MiniLM) and the
    model's confidence; when either is low, a person reviews the answer first."""
    from erpoz.guards import GroundednessGuard

    sources = [p.text for p in passages] + ([scan.text] if scan.text else [])
    guard = GroundednessGuard()
    grounded = await asyncio.to_thread(guard.score, draft.text, sources)
    grounded = round(grounded, 3)
    ctx.emit(
        "answer_validated",
        {
            "grounded": grounded,
            "confidence": draft.confidence,
            "min_grounded": MIN_GROUNDED,
            "min_confidence": MIN_CONFIDENCE,
        },
    )
    by_id = {p.id: p for p in passages}
    out = Answer(
        question=question,
        text=draft.text,
        sources=[
            f"{c}: {by_id[c].source} > {by_id[c].heading}" if c in by_id else c
            for c in draft.citations
        ],
        model=draft.model,
        grounded=grounded,
        confidence=draft.confidence,
    )
    low = []
    if grounded < MIN_GROUNDED:
        low.append(f"groundedness {grounded} < {MIN_GROUNDED}")
    if draft.confidence is not None and draft.confidence < MIN_CONFIDENCE:
        low.append(f"confidence {draft.confidence:.2f} < {MIN_CONFIDENCE}")
    if not draft.citations:
        low.append("no sources cited")
    if low:
        raise ReviewRequired(
            "low confidence: " + "; ".join(low),
            output=out,
            evidence={"grounded": grounded, "confidence": draft.confidence},
        )
    return out


@step
async def deliver(answer: Answer) -> Answer:
    """The answer as it goes out (the delivery checkpoint's guards run on it)."""
    return answer


flow = Flow(
    "demo",
    inputs={"question": str, "image": str},
    defaults={"image": ""},
    source="erpoz.demo.flow:flow",
)
_question = flow.add(intake, question=flow.input("question"))
_scan = flow.add(read_scan, image=flow.input("image"))
_passages = flow.add(retrieve, question=_question, scan=_scan)
_draft = flow.add(answer, question=_question, scan=_scan, passages=_passages)
_checked = flow.add(validate, question=_question, draft=_draft, passages=_passages, scan=_scan)
flow.output(flow.add(deliver, answer=_checked))
