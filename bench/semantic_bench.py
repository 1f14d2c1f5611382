"""How long the semantic router takes to decide, with the real MiniLM embedding of each prompt.

``python -m bench.semantic_bench`` builds a ``SemanticRouter`` over four routes (six example
prompts each) with ``MiniLMEmbed`` and ``FunctionModel`` targets, embeds the examples, warms
up, then times ``router.choose(request)`` for ~300 distinct prompts, one after the other,
inside a bound recorder (so the ``route_decided`` event is built as in a run). It prints
p50/p95 per request, and the same for the parts, timed in turn with it on each prompt: the
prompt's embedding alone, and the router without it (an embedder that hands back
precomputed vectors). The target is
p50 ≤ 5 ms per decision on a 2-core CPU.

Options: ``--n`` prompts (300), ``--warmup`` (30), ``--precision`` auto|float32|bfloat16
(repeatable; default auto and float32), ``--json PATH`` to write the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erpoz.models import ChatModel, ChatRequest, EmbedResult, Message
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.models.local_embed import MiniLMEmbed
from erpoz.routing.semantic import SemanticRouter
from erpoz.testing import FunctionModel

TARGET_P50_MS = 5.0

ROUTES = {
    "billing": [
        "I was charged twice for my subscription",
        "How do I get a refund for my invoice?",
        "Update the credit card on my account",
        "Why is my bill higher this month?",
        "Can I pay by bank transfer instead of card?",
        "Cancel my plan and stop the payments",
    ],
    "code": [
        "My Python script raises a KeyError",
        "How do I fix a segmentation fault in C?",
        "The build fails with a compiler error",
        "Write a function that reverses a linked list",
        "Why does my SQL query return duplicate rows?",
        "Explain this JavaScript stack trace",
    ],
    "shipping": [
        "Where is my parcel?",
        "My package arrived damaged",
        "How long does delivery to Canada take?",
        "Can I change the delivery address of my order?",
        "The tracking number does not work",
        "Do you ship to post office boxes?",
    ],
    "account": [
        "I forgot my password",
        "How do I enable two-factor authentication?",
        "Change the email address on my profile",
        "My account was locked after too many attempts",
        "Delete my account and my data",
        "Someone else logged into my account",
    ],
}

SUBJECTS = [
    "my invoice",
    "the refund for order",
    "my Python code",
    "the Rust compiler on line",
    "my parcel with tracking number",
    "the delivery of order",
    "my password reset for user",
    "the two-factor code on account",
]
ASKS = [
    "What is going on with {s} {n}?",
    "Can you help me with {s} {n}, please?",
    "I have a problem with {s} {n} since yesterday.",
    "Why does {s} {n} not work as expected?",
    "Please check {s} {n} as soon as you can.",
]


def prompts(n: int) -> list[str]:
    """``n`` distinct prompts (no two alike, so nothing downstream can cache)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        subject = SUBJECTS[i % len(SUBJECTS)]
        ask = ASKS[(i // len(SUBJECTS)) % len(ASKS)]
        out.append(ask.format(s=subject, n=1000 + i))
        i += 1
    return out


class Precomputed:
    """An EmbedModel that hands back vectors computed beforehand: the router without MiniLM."""

    name = "precomputed"

    def __init__(self, vectors: dict[str, tuple[float, ...]]) -> None:
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        return EmbedResult(tuple(self.vectors[t] for t in texts), self.name)


def build(embedder: Any) -> SemanticRouter:
    routes: dict[str, tuple[ChatModel, list[str]]] = {
        route: (FunctionModel(lambda r: "ok", name=f"{route}-bot"), examples)
        for route, examples in ROUTES.items()
    }
    return SemanticRouter("support", embedder, routes)


async def timed(
    fns: dict[str, Callable[[str], Awaitable[Any]]], texts: list[str], warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each ``fn(text)``, after ``warmup`` untimed rounds. The
    functions take turns on each text, so a burst of other work on the machine hits them
    alike."""
    out: dict[str, list[float]] = {key: [] for key in fns}
    for i, text in enumerate(texts):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            await fn(text)
            if i >= warmup:
                out[key].append((time.perf_counter() - t0) * 1000)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "mean_ms": statistics.fmean(ordered),
        "n": len(ordered),
    }


async def measure(precision: str, n: int, warmup: int) -> dict[str, Any]:
    embedder = MiniLMEmbed(precision=precision)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    await embedder.load()
    load_s = time.perf_counter() - t0
    router = build(embedder)
    t0 = time.perf_counter()
    await router.warm()
    examples_ms = (time.perf_counter() - t0) * 1000
    texts = prompts(n + warmup)
    events: list[dict[str, Any]] = []
    token = bind(Recorder(lambda kind, data: events.append(dict(data))))
    try:
        requests = {t: ChatRequest((Message.user(t),)) for t in texts}
        examples = [e for ex in ROUTES.values() for e in ex]
        every = [*texts, *examples]
        vectors = (await embedder.embed(every)).vectors
        bare = build(Precomputed(dict(zip(every, vectors, strict=True))))
        await bare.warm()
        times = await timed(
            {
                "decide": lambda t: router.choose(requests[t]),
                "embed": lambda t: embedder.embed([t]),
                "router_only": lambda t: bare.choose(requests[t]),
            },
            texts,
            warmup,
        )
        routed = {e["winner"] for e in events}
    finally:
        unbind(token)
    return {
        "precision": precision,
        "dtype": embedder.dtype,
        "load_s": load_s,
        "examples_ms": examples_ms,
        "decide": summary(times["decide"]),
        "embed": summary(times["embed"]),
        "router_only": summary(times["router_only"]),
        "routes_taken": sorted(routed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.semantic_bench", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="timed prompts (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed prompts first")
    parser.add_argument(
        "--precision",
        action="append",
        choices=["auto", "float32", "bfloat16"],
        help="MiniLM precision to measure (repeatable; default: auto and float32)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    precisions = args.precision or ["auto", "float32"]

    console = Console(width=120)
    results = [asyncio.run(measure(p, args.n, args.warmup)) for p in precisions]

    table = Table(title=f"Semantic router decision, {args.n} distinct prompts after warm-up")
    for col in ("measurement", "precision", "p50 ms", "p95 ms", "mean ms", "target", "met?"):
        table.add_column(col, justify="left" if col in ("measurement", "precision") else "right")
    for r in results:
        dtype = f"{r['precision']} ({r['dtype']})"
        for key, label, target in (
            ("decide", "decision: embed + score + record", TARGET_P50_MS),
            ("embed", "  of which: MiniLM embedding", None),
            ("router_only", "  router alone (precomputed vector)", None),
        ):
            s = r[key]
            met = "–" if target is None else ("yes" if s["p50_ms"] <= target else "no")
            table.add_row(
                label,
                dtype,
                f"{s['p50_ms']:.2f}",
                f"{s['p95_ms']:.2f}",
                f"{s['mean_ms']:.2f}",
                "–" if target is None else f"p50 ≤ {target:g}",
                met,
            )
    console.print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for r in results:
        console.print(
            f"{r['precision']}: weights loaded in {r['load_s']:.1f} s, "
            f"{sum(len(e) for e in ROUTES.values())} examples embedded in "
            f"{r['examples_ms']:.0f} ms; routes taken: {', '.join(r['routes_taken'])}"
        )
    console.print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f} (figures are noisy when other work runs)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
