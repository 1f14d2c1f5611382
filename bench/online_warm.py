"""The online router's prequential replay, fast: cold against warm-started (transfer).

``erpoz eval routing`` replays each pass through the real routers, models and events (about
a millisecond a prompt, minutes per sweep on GSM8K). This replays the same passes on the
shipped :class:`erpoz.routing.online.BanditState` directly -- the same features, choices,
price of quality and exploration -- with each prompt's grades, costs and cascade escalation
taken from one run of the real cascade over the recorded answers. For each task and its
other task: the online routers cold (learning from nothing) and warm-started on the other
task's grades (``WARM_WEIGHT`` signals per model), the target swept as in the evaluation, in
the recorded order and ``--orders`` shuffled ones (seeds 1..N, as the evaluation shuffles).

    python -m bench.online_warm --orders 3

Prints, per router: the mean curve's APGR (over its own span, and over 0-100% with the weak
and strong ends), and the cheapest target whose mean quality over the orders reaches the
given levels (the static routers' tuned points of docs/routing.md), with its mean cost
against the strong model alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import numpy as np

from erpoz.eval import load_dataset
from erpoz.eval.routing import (
    ONLINE_TARGETS,
    WARM_WEIGHT,
    _always,
    _cascade,
    _Harness,
    _usage,
    prices_for,
)
from erpoz.routing._decision import prompt_tokens
from erpoz.routing.online import BanditState, ContextHash

DATA = os.environ.get("ERPOZ_SHARED_DATA", "../shared/data")
#: The static routers' tuned points (docs/routing.md), as grades on [0, 1].
LEVELS = {
    "gsm8k": {"learned@mt-bench": 0.7988, "combined@mt-bench": 0.8233},
    "mt-bench": {"learned@gsm8k": (9.0035 - 1) / 9, "combined@gsm8k": (9.0486 - 1) / 9},
}


async def task(path: str) -> dict[str, Any]:
    """Grades, costs, cascade escalations and prompt features of one task."""
    from erpoz.models.local_embed import MiniLMEmbed

    ds = load_dataset(path)
    h = _Harness(ds, prices_for(ds, None))
    escalated: list[bool] = []

    def after(i: int, r: Any, answered: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        escalated.append(any(d.get("model") == h.strong_name for _, d in events))

    await h.run("cascade", None, _always(_cascade(h)), after=after)
    prompts = [i.prompt for i in h.items]
    x = np.asarray((await MiniLMEmbed().embed(prompts)).vectors)
    hashing = ContextHash(32, 0)
    codes = [hashing.code(v) for v in x]

    def cost(k: int) -> np.ndarray:
        p = h.prices[ds.models[k]]
        return np.asarray(
            [
                (u.input_tokens * p[0] + u.output_tokens * p[1]) / 1e6
                for u in (_usage(i, k) for i in h.items)
            ]
        )

    return {
        "name": ds.name,
        "codes": codes,
        "tokens": [prompt_tokens(r) for r in h.requests],
        "wq": np.asarray([ds.normalised(i.quality[h.wi]) for i in h.items]),
        "sq": np.asarray([ds.normalised(i.quality[h.si]) for i in h.items]),
        "wc": cost(h.wi),
        "sc": cost(h.si),
        "esc": np.asarray(escalated),
        "x": x,
        "strong_better": np.asarray([i.quality[h.si] > i.quality[h.wi] for i in h.items]),
    }


def arms(d: dict[str, Any], cascade: bool) -> tuple[np.ndarray, np.ndarray]:
    """The cheap arm's grade and cost per prompt (the cascade's, or the weak model's)."""
    if not cascade:
        return d["wq"], d["wc"]
    return np.where(d["esc"], d["sq"], d["wq"]), d["wc"] + np.where(d["esc"], d["sc"], 0.0)


def one_pass(
    d: dict[str, Any], order: list[int], share: float, cascade: bool, prior: Any
) -> tuple[float, float, float]:
    state = BanditState(2, 32)
    if prior is not None:
        state.warm_start(*prior)
    rng = random.Random(0)
    q0, c0 = arms(d, cascade)
    quality = cost = strong = 0.0
    for step, i in enumerate(order):
        code, tokens = d["codes"][i], d["tokens"][i]
        choice = state.choose(code, state.relative_target(share), 0.1, rng, tokens)
        a = choice.arm
        q = q0[i] if a == 0 else d["sq"][i]
        c = c0[i] if a == 0 else d["sc"][i]
        strong += a == 1 or bool(cascade and d["esc"][i])
        state.add_decision(str(step), a, code, float(c), float(c), choice.explored, tokens)
        state.add_signal(str(step), float(q), 1.0, f"s{step}")
        quality += q
        cost += c
    n = len(order)
    return quality / n, cost / float(d["sc"].sum()), strong / n


def sweep(d: dict[str, Any], cascade: bool, prior: Any, orders: int) -> np.ndarray:
    out = []
    for k in range(orders + 1):
        order = list(range(len(d["wq"])))
        if k:
            random.Random(k).shuffle(order)
        out.append([one_pass(d, order, s, cascade, prior) for s in ONLINE_TARGETS])
    return np.asarray(out)  # orders x targets x (quality, cost share, strong share)


def report(d: dict[str, Any], label: str, res: np.ndarray) -> str:
    w, s = float(d["wq"].mean()), float(d["sq"].mean())
    mean = res.mean(axis=0)
    pts = sorted((float(m[2]), (float(m[0]) - w) / (s - w)) for m in mean)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    span = float(np.trapezoid(ys, xs) / (xs[-1] - xs[0])) if xs[-1] > xs[0] else float("nan")
    full = float(np.trapezoid([0.0, *ys, 1.0], [0.0, *xs, 1.0]))
    parts = [f"{label:34s} APGR {span:.3f} over {xs[0]:.0%}-{xs[-1]:.0%} ({full:.3f} over 0-100%)"]
    for name, level in LEVELS[d["name"]].items():
        ok = [j for j in range(len(ONLINE_TARGETS)) if mean[j, 0] >= level - 1e-12]
        if not ok:
            parts.append(f"  at {name}'s quality: never")
            continue
        j = min(ok, key=lambda j: mean[j, 1])
        parts.append(
            f"  at {name}'s quality: target {ONLINE_TARGETS[j]:.2f}, {mean[j, 0]:.4f}, cost "
            f"{mean[j, 1]:.1%} ± {res[:, j, 1].std():.1%}"
        )
    return "\n".join(parts)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    g = await task(f"{DATA}/routellm-gsm8k")
    m = await task(f"{DATA}/routellm-mtbench")
    print(f"load average {os.getloadavg()[0]:.1f}; orders: recorded + {args.orders}")
    for d, other in ((m, g), (g, m)):
        for cascade in (False, True):
            name = "online-cascade" if cascade else "online"
            q0, _ = arms(other, cascade)
            prior = (other["codes"], other["tokens"], [q0, other["sq"]], WARM_WEIGHT)
            for label, p in ((f"{name} (cold)", None), (f"{name}@{other['name']} (warm)", prior)):
                t = time.process_time()
                res = sweep(d, cascade, p, args.orders)
                print(f"{d['name']}: {report(d, label, res)} [{time.process_time() - t:.0f} s CPU]")


if __name__ == "__main__":
    asyncio.run(main())
