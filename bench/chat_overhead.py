"""``python -m bench.chat_overhead``: what erpoz adds to one chat call, in milliseconds.

One OpenAI-compatible stub server (``erpoz.models.stub_server``, in a separate process by
default so that it does not compete with the client for the GIL) answers every call. The same
request goes out by five paths:

* **openai SDK** (the baseline): ``await AsyncOpenAI(...).chat.completions.create(...)``, the
  official client, as an application that calls the model without erpoz would;
* **direct httpx**: ``await client.post(url, content=json.dumps(body))`` and ``json.loads`` of
  the answer, with the very ``httpx.AsyncClient`` the provider uses and the body it would send:
  the floor a hand-written client pays (below the SDK, which validates and builds objects);
* **provider**: ``OpenAICompatChat.generate(request)``, the ``openai`` provider alone;
* **hub**: ``hub.unbound().chat(...)``, through ``ModelHub`` and ``Metered`` (budget check,
  accounting) as code outside a run calls a model;
* **ctx.models**: ``await ctx.models.chat(...)`` inside a flow step on a memory store (the
  ``model_called`` event appended to the run's log included).

Calls are sequential and interleaved round-robin (SDK, direct, provider, hub, SDK, ...), so drift
in the server or the machine hits every path alike; ``--warmup`` rounds are dropped first.
The ``ctx.models`` path runs inside one step of one run, interleaved with SDK calls of its
own, and is compared with those. Each call is timed on its own (``perf_counter_ns``); the
table gives p50 / p99 / mean and what each path adds to the SDK call at p50 and p99.
Target: ≤ 0.5 ms added at p50.

Options: ``--n`` calls per path (default 2000), ``--warmup`` (default 200), ``--in-process``
(serve from a thread of this process), ``--json PATH``. A missed target does not change the
exit status.
"""

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import erpoz
from erpoz import Engine
from erpoz.models import ChatRequest, Message, ModelHub, ModelSpec
from erpoz.models.openai_compat import OpenAICompatChat
from erpoz.models.stub_server import OpenAIStubServer
from erpoz.store import MemoryStore

TARGET_MS = 0.5
SYSTEM = "You answer in one short sentence."
PROMPT = "What is the capital of France?"
MAX_TOKENS = 64

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Stats:
    path: str
    baseline: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None


@contextmanager
def stub_server(in_process: bool) -> Any:
    """Yield the base URL of a running stub server (a child process unless ``in_process``)."""
    if in_process:
        with OpenAIStubServer() as server:
            yield server.base_url
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "erpoz.models.stub_server"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the stub server did not start (said {url!r})")
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


def make_hub(base_url: str) -> tuple[ModelHub, OpenAICompatChat]:
    spec = ModelSpec(
        "bench",
        "openai",
        params={"base_url": base_url, "model": "stub-model", "api_key": "sk-bench"},
        price_in=2.5,
        price_out=10.0,
        context_window=128_000,
    )
    model = OpenAICompatChat(spec)
    hub = ModelHub()
    hub.add(model, spec)
    return hub, model


def direct_call(model: OpenAICompatChat) -> Call:
    """The floor: the provider's own client and the body it sends, posted by hand."""
    url = model.base_url + "/chat/completions"
    body = {
        "model": model.model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": MAX_TOKENS,
    }

    async def call() -> Any:
        response = await model.client.post(url, content=json.dumps(body).encode())
        response.raise_for_status()
        return json.loads(response.content)["choices"][0]["message"]["content"]

    return call


def sdk_call(model: OpenAICompatChat) -> tuple[Call, Any]:
    """The baseline: the official ``openai`` SDK's client, same server, same request."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=model.base_url, api_key="sk-bench", max_retries=0)
    messages: Any = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT},
    ]

    async def call() -> Any:
        answer = await client.chat.completions.create(
            model=model.model, messages=messages, max_tokens=MAX_TOKENS
        )
        return answer.choices[0].message.content

    return call, client


MESSAGES = (Message.system(SYSTEM), Message.user(PROMPT))
BASELINE = "openai SDK"


async def interleaved(calls: dict[str, Call], n: int, warmup: int) -> dict[str, list[int]]:
    """Run ``warmup`` + ``n`` rounds, one call of each path per round; ns per call."""
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


def summarise(times: dict[str, list[int]], baseline: str) -> list[Stats]:
    def pct(xs: list[int], q: float) -> float:
        ordered = sorted(xs)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e6

    base = times[baseline]
    out = []
    for name, xs in times.items():
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        added = name != baseline
        out.append(
            Stats(
                name,
                baseline,
                len(xs),
                p50,
                p99,
                statistics.fmean(xs) / 1e6,
                p50 - pct(base, 0.5) if added else None,
                p99 - pct(base, 0.99) if added else None,
            )
        )
    return out


async def outside_a_run(base_url: str, n: int, warmup: int) -> list[Stats]:
    hub, model = make_hub(base_url)
    request = ChatRequest(MESSAGES, max_tokens=MAX_TOKENS)
    sdk, client = sdk_call(model)
    try:
        times = await interleaved(
            {
                BASELINE: sdk,
                "direct httpx": direct_call(model),
                "provider.generate": lambda: model.generate(request),
                "hub.unbound().chat": lambda: hub.unbound().chat(
                    "bench", MESSAGES, max_tokens=MAX_TOKENS
                ),
            },
            n,
            warmup,
        )
    finally:
        await model.aclose()
        await client.close()
    return summarise(times, BASELINE)


async def inside_a_step(base_url: str, n: int, warmup: int) -> list[Stats]:
    hub, model = make_hub(base_url)
    sdk, client = sdk_call(model)

    @erpoz.step
    async def measure(rounds: int, ctx: erpoz.Context) -> dict[str, list[int]]:
        async def via_ctx() -> Any:
            return await ctx.models.chat("bench", MESSAGES, max_tokens=MAX_TOKENS)

        return await interleaved(
            {f"{BASELINE} (in step)": sdk, "ctx.models.chat (in step)": via_ctx},
            rounds,
            warmup,
        )

    flow = erpoz.Flow("chat_overhead", inputs={"rounds": int})
    flow.output(flow.add(measure, rounds=flow.input("rounds")))
    store = MemoryStore()
    try:
        result = await Engine(store, services={ModelHub: hub}).run(flow, {"rounds": n})
        times = result.unwrap()
        calls = [e for e in await store.events(result.run_id) if e.kind == "model_called"]
        if len(calls) != n + warmup:
            raise RuntimeError(f"expected {n + warmup} model_called events, got {len(calls)}")
    finally:
        await model.aclose()
        await client.close()
        await store.close()
    return summarise(times, f"{BASELINE} (in step)")


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def print_table(rows: list[Stats], title: str, console: Console) -> None:
    table = Table(title=title)
    for col in ("path", "p50 ms", "p99 ms", "mean ms", "added p50", "added p99", "≤ 0.5 ms?"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in rows:
        met = "–"
        if r.added_p50_ms is not None:
            met = "[green]yes[/]" if r.added_p50_ms <= TARGET_MS else "[bold red]NO[/]"
        table.add_row(
            r.path,
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _ms(r.mean_ms),
            _ms(r.added_p50_ms, True),
            _ms(r.added_p99_ms, True),
            met,
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chat_overhead",
        description="Latency erpoz adds to one chat call, against the official openai SDK.",
        epilog="example: python -m bench.chat_overhead --n 2000 --warmup 200",
    )
    parser.add_argument("--n", type=int, default=2000, help="timed calls per path (2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed rounds first (200)")
    parser.add_argument(
        "--in-process", action="store_true", help="run the stub server in a thread of this process"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)

    console = Console() if sys.stdout.isatty() else Console(width=120)
    t0 = time.perf_counter()
    with stub_server(args.in_process) as url:
        rows = asyncio.run(outside_a_run(url, args.n, args.warmup))
        rows += asyncio.run(inside_a_step(url, args.n, args.warmup))
    took = time.perf_counter() - t0
    where = "in-process thread" if args.in_process else "separate process"
    print_table(
        rows,
        f"one chat call, {args.n} sequential calls per path after {args.warmup} warm-up rounds "
        f"(stub server: {where}; Python {platform.python_version()})",
        console,
    )
    console.print(
        "[dim]added = path − the openai SDK call measured in the same interleaved rounds; "
        f"target ≤ {TARGET_MS} ms at p50. total {took:.1f} s[/dim]"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": vars(args) | {"json": str(args.json)}, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
