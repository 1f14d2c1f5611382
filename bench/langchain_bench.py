"""``python -m bench.langchain_bench``: what erpoz adds to a call of a LangChain chat model.

The same LangChain model is called by four paths, interleaved round-robin (one call of each
path per round, so drift in the machine hits every path alike), each call timed on its own:

* **direct**: ``await model.ainvoke(messages)``, LangChain alone: the floor;
* **adapter**: ``LangChainChat(model).generate(request)``: erpoz's message and result
  conversion, no metering;
* **hub**: ``hub.unbound().chat(name, ...)``: through ``ModelHub`` and ``Metered`` (budget
  check, cost accounting), as code outside a run calls a model;
* **ctx.models**: ``await ctx.models.chat(name, ...)`` in a step of a run on a memory store
  (the ``model_called`` event appended to the log included), interleaved inside that step with
  direct calls of its own, and compared with those.

Two models: ``ChatOpenAI`` (langchain-openai) against erpoz's OpenAI-compatible stub server in a
separate process (a real HTTP round trip, what a deployment pays), and langchain-core's
``GenericFakeChatModel`` (no I/O: LangChain's own cost per call, so erpoz's share shows in
microseconds). And a flow as a Runnable: ``as_runnable(flow).ainvoke(x)`` against
``engine.run(flow, {...})`` on the same engine (the runnable's loop hop and LangChain's callback
manager).

Medians (p50) and p99 in ms, what each path adds to its baseline at p50, the ratio of p50s, the
1-minute load average at start and end. Options: ``--n`` rounds (default 1000), ``--warmup``
(default 100), ``--json PATH``. No target: the figures are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from itertools import cycle
from pathlib import Path
from typing import Any

from langchain_core import __version__ as lc_version
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from rich.console import Console
from rich.table import Table

import erpoz
from erpoz import Engine, Flow
from erpoz.integrations.langchain import LangChainChat, as_runnable
from erpoz.models import ChatRequest, Message, ModelHub, ModelSpec
from erpoz.store import MemoryStore

from .chat_overhead import stub_server

SYSTEM = "You answer in one short sentence."
PROMPT = "What is the capital of France?"
MESSAGES = (Message.system(SYSTEM), Message.user(PROMPT))
LC_MESSAGES = [SystemMessage(content=SYSTEM), HumanMessage(content=PROMPT)]
Call = Callable[[], Awaitable[Any]]


async def interleaved(calls: dict[str, Call], n: int, warmup: int) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {name: [] for name in calls}
    clock = time.perf_counter_ns
    for i in range(warmup + n):
        for name, call in calls.items():
            t0 = clock()
            await call()
            dt = clock() - t0
            if i >= warmup:
                times[name].append(dt)
    return times


def pct(xs: list[int], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e6


def rows(case: str, times: dict[str, list[int]], baseline: str) -> list[dict[str, Any]]:
    base = pct(times[baseline], 0.5)
    out = []
    for name, xs in times.items():
        p50 = pct(xs, 0.5)
        out.append(
            {
                "case": case,
                "path": name,
                "n": len(xs),
                "p50_ms": p50,
                "p99_ms": pct(xs, 0.99),
                "mean_ms": statistics.fmean(xs) / 1e6,
                "added_p50_ms": None if name == baseline else p50 - base,
                "ratio_p50": p50 / base if base else None,
                "baseline": baseline,
            }
        )
    return out


def hub_for(model: BaseChatModel) -> tuple[ModelHub, LangChainChat]:
    adapter = LangChainChat(model, "lc")
    hub = ModelHub()
    hub.add(adapter, ModelSpec("lc", "langchain", price_in=1.0, price_out=2.0))
    return hub, adapter


async def model_case(label: str, model: BaseChatModel, n: int, warmup: int) -> list[dict[str, Any]]:
    hub, adapter = hub_for(model)
    request = ChatRequest(MESSAGES)

    async def direct() -> Any:
        return await model.ainvoke(LC_MESSAGES)

    outside = await interleaved(
        {
            "direct (LangChain ainvoke)": direct,
            "adapter (LangChainChat.generate)": lambda: adapter.generate(request),
            "hub.unbound().chat": lambda: hub.unbound().chat("lc", MESSAGES),
        },
        n,
        warmup,
    )

    @erpoz.step
    async def measure(rounds: int, ctx: erpoz.Context) -> dict[str, list[int]]:
        async def via_ctx() -> Any:
            return await ctx.models.chat("lc", MESSAGES)

        return await interleaved(
            {"direct in the step": direct, "ctx.models.chat": via_ctx}, rounds, warmup
        )

    flow = Flow("measure", inputs={"rounds": int})
    flow.add(measure, rounds=flow.input("rounds"))
    result = await Engine(MemoryStore(), services={ModelHub: hub}).run(flow, {"rounds": n})
    inside: dict[str, list[int]] = result.unwrap()
    return rows(label, outside, "direct (LangChain ainvoke)") + rows(
        label, inside, "direct in the step"
    )


@erpoz.step
def shout(text: str) -> str:
    return text.upper()


def runnable_case(n: int, warmup: int) -> list[dict[str, Any]]:
    flow = Flow("shout", inputs={"text": str})
    flow.add(shout, text=flow.input("text"))
    plan = flow.compile()
    engine = Engine(MemoryStore())
    runnable = as_runnable(plan, engine=engine)
    try:

        async def main() -> dict[str, list[int]]:
            portal = runnable._portal

            async def direct() -> Any:  # engine.run on the same engine and loop
                return await portal.acall(engine.run(plan, {"text": "x"}))

            return await interleaved(
                {
                    "engine.run (same loop hop)": direct,
                    "as_runnable(flow).ainvoke": lambda: runnable.ainvoke("x"),
                },
                n,
                warmup,
            )

        times = asyncio.run(main())
    finally:
        runnable.close()
    return rows("flow as Runnable", times, "engine.run (same loop hop)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    out: list[dict[str, Any]] = []
    with stub_server(in_process=False) as base_url:
        openai_model = ChatOpenAI(
            base_url=base_url, api_key="sk-bench", model="stub-model", max_retries=0
        )
        out += asyncio.run(
            model_case("ChatOpenAI → stub server", openai_model, args.n, args.warmup)
        )
    fake = GenericFakeChatModel(messages=cycle(["Paris is the capital of France."]))
    out += asyncio.run(model_case("GenericFakeChatModel (no I/O)", fake, args.n, args.warmup))
    out += runnable_case(args.n, args.warmup)
    load1 = os.getloadavg()[0]

    table = Table(title="What erpoz adds to a LangChain chat model call")
    for col in ("case", "path", "p50 ms", "p99 ms", "added p50", "× baseline"):
        table.add_column(col, justify="left" if col in ("case", "path") else "right")
    for r in out:
        added = r["added_p50_ms"]
        table.add_row(
            r["case"],
            r["path"],
            f"{r['p50_ms']:.4f}",
            f"{r['p99_ms']:.4f}",
            "—" if added is None else f"{added * 1000:+.1f} µs",
            f"{r['ratio_p50']:.2f}×",
        )
    console = Console(width=150)
    console.print(table)
    console.print(
        f"n={args.n} per path (warm-up {args.warmup}); load average {load0:.2f} → {load1:.2f}; "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, langchain-core "
        f"{lc_version}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": out,
                    "load_average": [load0, load1],
                    "python": platform.python_version(),
                    "langchain_core": lc_version,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
