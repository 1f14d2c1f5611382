"""``python -m bench.checkpoint_bench``: what the guard checkpoints add to a model call in a step.

One step calls ``ctx.models.chat`` on an in-process model that answers at once (a
``FunctionModel``, so the model costs nothing and only erpoz is measured) with a ~1 KB prompt
of support-mail prose. The same step runs with three ``Guardrails`` services, interleaved:

* **none**: no guardrails (the model policy and checkpoints are skipped);
* **policy only**: a policy with a model rule and data rules but no guards;
* **pii + injection + toxicity**: at ``model_input`` and ``model_output``, with a redact
  rule for cards (this prompt has no card, so the text passes) — the guard_decided events
  are appended to the run's log as in production.

Each call is timed on its own (``perf_counter_ns``) inside the step; the table gives p50 /
p95 and what each setting adds to "none" at p50. Options: ``--n`` (default 1000),
``--warmup`` (default 100), ``--json PATH``.
"""

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erpoz import Context, Engine, Flow, open_store, step
from erpoz.guards import Check, Guardrails, InjectionDetector, PIIDetector, ToxicityGuard
from erpoz.models import ModelHub, ModelSpec
from erpoz.policy import Policy, Rule
from erpoz.testing import FunctionModel

PROMPT = (
    "Hello, thanks for getting back to me so quickly about the delivery schedule. The parcel "
    "with order HF-20418833 arrived on Tuesday, but the kettle inside does not heat any more "
    "after a week of normal use. I descaled it as the manual says and the light still "
    "blinks twice when I press the switch. Could you tell me whether this is covered by the "
    "warranty and how I should send it back? I would prefer a replacement over a refund if "
    "that is possible, since we use it every morning. The invoice says it was delivered on "
    "14 March 2025 and paid in full. I also noticed the lid hinge feels loose, though that "
    "may be unrelated. Please let me know what information you need from me, and whether I "
    "should keep the original box for the return. Best regards from a long-time customer."
)


def settings() -> dict[str, Guardrails | None]:
    policy = Policy(
        (
            Rule("no gpt for free", "deny", model="gpt-*", tenant="free"),
            Rule("cards", "redact", data="pii.credit_card"),
            Rule("orders", "block", data="injection", min_score=0.5),
        )
    )
    both = frozenset({"model_input", "model_output"})
    guards = [
        Check(PIIDetector(), both),
        Check(InjectionDetector(), both),
        Check(ToxicityGuard(), both),
    ]
    return {
        "none": None,
        "policy only": Guardrails([], policy),
        "pii + injection + toxicity": Guardrails(guards, policy),
    }


async def measure(n: int, warmup: int) -> dict[str, list[float]]:
    hub = ModelHub()
    hub.add(FunctionModel(lambda r: "It is covered for 2 years.", name="m"), ModelSpec("m", "t"))
    times: dict[str, list[float]] = {}
    for name, rails in settings().items():
        samples: list[float] = []

        @step
        async def ask(prompt: str, ctx: Context) -> int:
            for i in range(n + warmup):
                t0 = time.perf_counter_ns()
                await ctx.models.chat("m", prompt)
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - t0) / 1e6)  # noqa: B023
            return n

        flow = Flow("bench", inputs={"prompt": str})
        flow.add(ask, prompt=flow.input("prompt"))
        services: dict[type, object] = {ModelHub: hub}
        if rails is not None:
            services[Guardrails] = rails
        else:
            services[Guardrails] = Guardrails()  # nothing configured: the fast path
        store = open_store("memory")
        result = await Engine(store, services=services).run(flow, {"prompt": PROMPT})
        assert result.ok, result.error
        times[name] = samples
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ToxicityGuard().load()
    times = asyncio.run(measure(args.n, args.warmup))
    base = statistics.median(times["none"])
    table = Table(title=f"ctx.models.chat in a step, {len(PROMPT)}-char prompt, n={args.n}")
    for col in ("setting", "p50 ms", "p95 ms", "added p50 ms"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    out: dict[str, Any] = {}
    for name, xs in times.items():
        xs.sort()
        p50, p95 = statistics.median(xs), xs[int(len(xs) * 0.95)]
        out[name] = {"p50_ms": p50, "p95_ms": p95, "added_p50_ms": p50 - base}
        table.add_row(name, f"{p50:.3f}", f"{p95:.3f}", f"{p50 - base:+.3f}")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
