"""``python -m bench.router_bench``: what a router adds to a model call, in microseconds.

Each router picks among metered ``FunctionModel`` doubles that answer at once, so the time
of a routed call minus the time of calling the chosen model directly (the same ``Metered``
model, same request) is the router's decision: ordering, filtering, cost estimates, the
``route_decided`` event and the result's route. Cases:

* **fallback**: 5 models, the first answers;
* **cheapest-capable**: 5 candidates with different prices, all capable, the third cheapest;
* **cascade**: cheap → strong, one validator that accepts the cheap answer;
* **balance (weighted)** and **balance (least latency)**: 5 equal models;
* **online (learned state)**: cheap and strong, 2,000 quality signals already learned (the
  cheap model good everywhere). Two rows: the prompt embedded by ``HashingEmbed`` (hashing the
  words is part of the time), and with the embedding call taken out (a 384-dimensional vector,
  MiniLM's size, already computed: what MiniLM costs is its own few milliseconds), which is
  the decision itself -- the prompt's code, each model's posterior at it, the price of
  quality, a Thompson draw -- plus the event. Target for those: ≤ 100 µs.

Every case is measured twice: *in a run* (a recorder is bound, as inside a step, so decision
and ``model_called`` events are built and handed over; the store's own cost is not counted)
and *outside a run* (nothing recorded). Routed and direct loops are interleaved within each
repetition; the table shows the median over repetitions of (routed − direct) per call.
Target: ≤ 20 µs per decision, in a run (online router: ≤ 100 µs, without the embedding
call). The load average is printed with the table: the machine may be shared.

Options: ``--n`` calls per loop (default 5000), ``--reps`` (default 9), ``--json PATH``,
``--clock cpu`` (time by the process's CPU time: on a loaded machine, wall time counts waits).
A missed target does not change the exit status.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erpoz.models import (
    ChatModel,
    ChatRequest,
    EmbedModel,
    EmbedResult,
    Message,
    Metered,
    ModelSpec,
)
from erpoz.models._meter import Recorder, bind, unbind
from erpoz.routing import (
    CascadeRouter,
    CheapestCapableRouter,
    FallbackRouter,
    LoadBalanceRouter,
)
from erpoz.routing.online import HashingEmbed, OnlineRouter
from erpoz.testing import FunctionModel

TARGET_US = 20.0
ONLINE_TARGET_US = 100.0
REQUEST = ChatRequest((Message.system("You answer briefly."), Message.user("What is 2 + 2?")))


@dataclass
class Case:
    name: str
    router: ChatModel
    direct: ChatModel  # the model the router ends up calling
    target_us: float = TARGET_US


@dataclass
class Figure:
    case: str
    direct_us: float
    routed_us: float
    overhead_us: float
    overhead_no_run_us: float
    target_us: float = TARGET_US

    @property
    def met(self) -> bool:
        return self.overhead_us <= self.target_us


def _model(name: str, price: float) -> Metered:
    inner = FunctionModel(lambda r: "4", name=name)
    inner.calls = _NoList()  # keep memory flat over millions of calls
    return Metered(inner, ModelSpec(name, "bench", price_in=price, price_out=2 * price))


class _NoList(list[Any]):
    def append(self, item: Any) -> None:
        pass


def build_cases() -> list[Case]:
    five = [_model(f"m{i}", 1.0 + i) for i in range(5)]
    priced = [_model(f"p{i}", p) for i, p in enumerate((3.0, 2.0, 0.5, 4.0, 1.0))]
    cheap, strong = _model("cheap", 0.1), _model("strong", 10.0)
    return [
        Case("fallback (5, first answers)", FallbackRouter("fb", five), five[0]),
        Case("cheapest-capable (5 candidates)", CheapestCapableRouter("cc", priced), priced[2]),
        Case(
            "cascade (cheap answer accepted)",
            CascadeRouter("cs", [cheap, strong], [lambda req, res: True]),
            cheap,
        ),
        Case("balance, weighted (5)", LoadBalanceRouter("lb", five, seed=1), five[0]),
        Case(
            "balance, least latency (5)",
            LoadBalanceRouter("ll", five, strategy="least_latency"),
            five[0],
        ),
        Case(
            "online, words hashed (2,000 signals)",
            _learned_online(cheap, strong, HashingEmbed()),
            cheap,
            ONLINE_TARGET_US,
        ),
        Case(
            "online, embedding known (2,000 signals)",
            _learned_online(cheap, strong, _KnownEmbed()),
            cheap,
            ONLINE_TARGET_US,
        ),
    ]


class _KnownEmbed:
    """An embedding model whose vector is already computed (384 dimensions, as MiniLM's):
    the online router's decision without the embedding call."""

    name = "known"

    def __init__(self, dims: int = 384) -> None:
        import random

        rng = random.Random(1)
        self.vector = tuple(rng.gauss(0.0, 1.0) for _ in range(dims))

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        return EmbedResult(tuple(self.vector for _ in texts), self.name)


def _learned_online(cheap: ChatModel, strong: ChatModel, embedder: EmbedModel) -> OnlineRouter:
    """An online router that has learned, from 2,000 signals, that the cheap model is right."""
    import random

    router = OnlineRouter("ol", [cheap, strong], embedder, target=0.8, explore=0.1)
    rng = random.Random(0)
    for k in range(2000):
        arm = k % 2
        router.state.add_decision(
            f"d{k}", arm, rng.getrandbits(32), 1e-6 * (1 + 99 * arm), None, False
        )
        router.state.add_signal(f"d{k}", 1.0, 1.0, f"s{k}")
    return router


CLOCK: list[Callable[[], float]] = [time.perf_counter]
"""What a loop is timed with: wall time, or with ``--clock cpu`` the process's CPU time (on a
machine shared with other work, wall time counts the waits for a core; CPU time does not)."""


async def _loop(model: ChatModel, n: int) -> float:
    """Seconds per call of ``n`` sequential calls."""
    generate = model.generate
    req = REQUEST
    t0 = CLOCK[0]()
    for _ in range(n):
        await generate(req)
    return (CLOCK[0]() - t0) / n


async def _measure(case: Case, n: int, reps: int, in_run: bool) -> tuple[float, float, float]:
    """Median per-call µs of direct and routed calls and of their difference."""
    sink: list[Any] = []
    token = None
    if in_run:
        token = bind(Recorder(lambda kind, data: sink.append(data), "rbench"))
    try:
        await _loop(case.router, n // 5)  # warm up
        await _loop(case.direct, n // 5)
        direct, routed, diff = [], [], []
        for _ in range(reps):
            d = await _loop(case.direct, n)
            r = await _loop(case.router, n)
            sink.clear()
            direct.append(d)
            routed.append(r)
            diff.append(r - d)
    finally:
        if token is not None:
            unbind(token)
    med: Callable[[list[float]], float] = statistics.median
    return med(direct) * 1e6, med(routed) * 1e6, med(diff) * 1e6


def run(n: int, reps: int) -> list[Figure]:
    figures = []
    for case in build_cases():
        direct, routed, overhead = asyncio.run(_measure(case, n, reps, in_run=True))
        _, _, bare = asyncio.run(_measure(case, n, reps, in_run=False))
        figures.append(Figure(case.name, direct, routed, overhead, bare, case.target_us))
    return figures


def print_table(figures: list[Figure], console: Console, title: str) -> None:
    table = Table(title=title)
    for col in (
        "router",
        "direct µs",
        "routed µs",
        "overhead µs, in run",
        "overhead µs, no run",
        "target",
        "met?",
    ):
        table.add_column(col, justify="left" if col == "router" else "right", no_wrap=True)
    for f in figures:
        table.add_row(
            f.case,
            f"{f.direct_us:.1f}",
            f"{f.routed_us:.1f}",
            f"{f.overhead_us:.1f}",
            f"{f.overhead_no_run_us:.1f}",
            f"≤ {f.target_us:g}",
            "[green]yes[/green]" if f.met else "[bold red]NO[/]",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.router_bench", description="Per-decision overhead of routers."
    )
    parser.add_argument("--n", type=int, default=5000, help="calls per loop (default 5000)")
    parser.add_argument("--reps", type=int, default=9, help="repetitions (default 9)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write results as JSON")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time loops by wall time (default) or by this process's CPU time",
    )
    args = parser.parse_args(argv)
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    console = Console() if sys.stdout.isatty() else Console(width=120)
    t0 = time.perf_counter()
    figures = run(args.n, args.reps)
    title = (
        f"router decision overhead ({args.clock} time): median of {args.reps} × {args.n} calls, "
        f"Python {sys.version.split()[0]}"
    )
    print_table(figures, console, title)
    console.print(
        "[dim]µs per call; overhead = routed − direct call of the chosen metered model; "
        "'in run' builds the decision events as inside a step (store cost not counted).[/dim]"
    )
    load = Path("/proc/loadavg")
    where = load.read_text().split()[:3] if load.exists() else ["?"]
    console.print(f"total {time.perf_counter() - t0:.1f} s; load average {' '.join(where)}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"target_us": TARGET_US, "load": where, "figures": [asdict(f) for f in figures]},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
