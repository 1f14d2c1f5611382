"""Multimodal example: read a scanned notice, retrieve what explains it, route, answer.

    python examples/multimodal.py                     # offline: RapidOCR, MiniLM, extractive reader
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/multimodal.py   # answer step there

The flow is  image → OCR → embed + retrieve over a few documents → route → answer. Every model
call goes through ``ctx.models``: the project's ``erpoz.yaml`` if there is one, else the offline
default (with ``OPENAI_BASE_URL`` set, the ``default`` router tries that endpoint first and falls
back to the local reader).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from erpoz import Context, Engine, Flow, open_store, step
from erpoz.models import ModelHub
from erpoz.models.extractive import passages_prompt
from erpoz.project import load_hub

DOCUMENTS = {
    "late-fees": "A late fee of 15.00 EUR is charged when an invoice is paid after its due date. "
    "The fee is waived once per year on request.",
    "refunds": "Duplicate charges are refunded in full within 5 business days. Refunds go back "
    "to the card that was charged.",
    "payment-methods": "Invoices can be paid by card, by bank transfer or by direct debit. "
    "Bank transfers take up to 3 business days to arrive.",
    "support-hours": "The billing team answers on weekdays from 9:00 to 17:00 CET.",
}


class Passage(BaseModel):
    source: str
    text: str
    score: float


class Answer(BaseModel):
    text: str
    citations: list[str]
    model: str
    route: list[str]


@step
async def read_image(path: str, ctx: Context) -> str:
    """OCR the scanned notice."""
    result = await ctx.models.ocr("ocr", Path(path).read_bytes())
    return " ".join(line.text for line in result.lines)


@step
async def retrieve(question: str, notice: str, ctx: Context) -> list[Passage]:
    """Embed the question, the notice and the documents; keep the three closest."""
    sources = ["notice", *DOCUMENTS]
    texts = [notice, *DOCUMENTS.values()]
    result = await ctx.models.embed("minilm", [question, *texts])
    vectors = np.asarray(result.vectors)
    scores = vectors[1:] @ vectors[0]
    best = np.argsort(-scores)[:3]
    return [Passage(source=sources[i], text=texts[i], score=float(scores[i])) for i in best]


@step
async def answer(question: str, passages: list[Passage], ctx: Context) -> Answer:
    """Ask the ``default`` router (extractive reader offline, or a chat endpoint)."""
    prompt = passages_prompt(question, [(p.source, p.text) for p in passages])
    result = await ctx.models.chat("default", prompt, max_tokens=200)
    return Answer(
        text=result.text,
        citations=list(result.citations),
        model=result.model,
        route=list(result.route),
    )


flow = Flow("multimodal", inputs={"image": str, "question": str})
notice = flow.add(read_image, path=flow.input("image"))
passages = flow.add(retrieve, question=flow.input("question"), notice=notice)
flow.output(flow.add(answer, question=flow.input("question"), passages=passages))


def render_notice(path: Path) -> Path:
    """A scanned-looking payment notice, drawn with Pillow (no files shipped or downloaded)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    image = Image.new("L", (900, 320), color=246)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=34)
    lines = ["PAYMENT REMINDER", "Invoice INV-1042 is overdue.", "A late fee of 15.00 EUR applies."]
    for i, line in enumerate(lines):
        draw.text((40, 40 + i * 80), line, fill=20, font=font)
    image.filter(ImageFilter.GaussianBlur(0.6)).save(path)
    return path


async def main(question: str, store_url: str = "memory") -> None:
    store = open_store(store_url)
    engine = Engine(store, services={ModelHub: load_hub()})
    with tempfile.TemporaryDirectory() as tmp:
        image = render_notice(Path(tmp) / "notice.png")
        result = await engine.run(flow, {"image": str(image), "question": question})
    out: Answer = result.unwrap()
    print(out.text)
    print(
        f"cited: {', '.join(out.citations)} · answered by {out.model} via {' > '.join(out.route)}"
    )
    for event in await store.events(result.run_id):
        if event.kind in ("model_called", "route_decided"):
            d = event.data
            detail = f"{d['latency_ms']} ms" if "latency_ms" in d else d.get("reason", "")
            print(
                f"  {event.step:<10} {event.kind:<13} {d.get('model', d.get('router'))}: {detail}"
            )
    await store.close()


if __name__ == "__main__":
    asked = " ".join(sys.argv[1:]) or "Why is there a fee on my invoice?"
    asyncio.run(main(asked))
