"""``online-prior`` against the static router it starts from, fast: the prequential replay of
``erpoz eval routing`` on the shipped :meth:`erpoz.routing.prior.PriorRouter.decide` and
:class:`~erpoz.routing.online.BanditState`, without the models and events around them.

For each task and its other task: the combined router's classifier fitted on the other task
(MiniLM embeddings, RouteLLM's label), its threshold tuned there (10-fold scores, the least
strong calls reaching 95% of the strong model: ``combined@<other>``'s tuned point), and
``online-prior@<other>`` swept over the same thresholds as ``erpoz eval routing`` (quantiles
of the prior's scores here, and the tuned one), each pass from an empty state, in the
recorded order and ``--orders`` shuffled ones (seeds 1..N). Grades, costs and the cascade's
escalations come from one run of the real cascade over the recorded answers
(:func:`bench.online_warm.task`).

    python -m bench.online_prior --orders 2 --online-prior --vector-shrink 1 4 16 64

``online-rank@<other>`` (``PriorRouter(keep_share=True)``) is swept once per
``--vector-shrink``; ``--online-prior`` adds the default mode. Prints the static router's
tuned point and each sweep's at the same threshold and at the cheapest threshold whose mean
quality over the orders reaches the static point's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import numpy as np

from bench.online_warm import DATA, arms, task
from erpoz.eval.routing import TARGET, _folds, _quantile_thresholds
from erpoz.routing.learned import LogisticClassifier
from erpoz.routing.online import HashingEmbed
from erpoz.routing.prior import VECTOR_SHRINK, PriorRouter, quantized
from erpoz.testing import FunctionModel


def scores(train: dict[str, Any], x: np.ndarray) -> np.ndarray:
    clf = LogisticClassifier("prior", HashingEmbed(), labels=("strong", "weak"))
    clf.fit_vectors(train["x"], train["strong_better"])
    return np.asarray(clf.probabilities(x))


def static(d: dict[str, Any], s: np.ndarray, t: float) -> tuple[float, float]:
    q0, c0 = arms(d, True)
    go = s >= t
    return float(np.where(go, d["sq"], q0).mean()), float(
        np.where(go, d["sc"], c0).sum() / d["sc"].sum()
    )


def tuned(o: dict[str, Any]) -> float:
    """combined@other's threshold: 10-fold scores on the other task, quantile thresholds."""
    fold = np.asarray(_folds(len(o["sq"]), 10, 0))
    cv = np.zeros(len(o["sq"]))
    for k in range(10):
        cv[fold == k] = scores(
            {**o, "x": o["x"][fold != k], "strong_better": o["strong_better"][fold != k]},
            o["x"][fold == k],
        )
    goal = TARGET * float(o["sq"].mean())
    ok = [(static(o, cv, t)[1], t) for t in _quantile_thresholds(cv.tolist(), 21)]
    ok = [(c, t) for c, t in ok if static(o, cv, t)[0] >= goal - 1e-12]
    return min(ok)[1]


def one_pass(
    d: dict[str, Any], s: np.ndarray, order: list[int], t: float, vector_shrink: float | None
) -> tuple[float, float]:
    """One prequential pass of online-prior (``vector_shrink`` ``None``) or of online-rank
    (``keep_share``, with that ``vector_shrink``)."""
    cheap, strong = (FunctionModel(lambda r: "", name=n) for n in ("cheap", "strong"))
    # decide() calls no model and no classifier: the prior's score is given
    router = PriorRouter(
        "online",
        cheap,
        strong,
        HashingEmbed(),
        _Prior(),
        threshold=t,
        keep_share=vector_shrink is not None,
        vector_shrink=vector_shrink or VECTOR_SHRINK,
    )
    q0, c0 = arms(d, True)
    quality = cost = 0.0
    embeddings = [quantized(v) for v in d["x"]]  # as the log keeps them
    for step, i in enumerate(order):
        code, tokens = d["codes"][i], d["tokens"][i]
        choice = router.decide(float(s[i]), code, tokens, embeddings[i])
        router.state.note(str(step), choice.embedding, choice.prior)
        q = q0[i] if choice.arm == 0 else d["sq"][i]
        c = c0[i] if choice.arm == 0 else d["sc"][i]
        router.state.add_decision(
            str(step), choice.arm, code, float(c), float(c), choice.explored, tokens
        )
        router.state.add_signal(str(step), float(q), 1.0, f"s{step}")
        quality += q
        cost += c
    return quality / len(order), cost / float(d["sc"].sum())


class _Prior:
    name = "prior"

    async def classify(self, text: str) -> Any:
        raise AssertionError("the bench gives decide() the prior's score itself")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2)
    parser.add_argument(
        "--vector-shrink",
        type=float,
        nargs="+",
        default=[VECTOR_SHRINK],
        help="online-rank's vector_shrink (PriorRouter keep_share): one or more, each a sweep",
    )
    parser.add_argument(
        "--online-prior", action="store_true", help="sweep online-prior (the default mode) too"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    g = await task(f"{DATA}/routellm-gsm8k")
    m = await task(f"{DATA}/routellm-mtbench")
    print(f"load average {os.getloadavg()[0]:.1f}; orders: recorded + {args.orders}")
    for d, o in ((m, g), (g, m)):
        s = scores(o, d["x"])
        t = tuned(o)
        sq, sc = static(d, s, t)
        print(f"{d['name']}: combined@{o['name']} t={t:.3f}: quality {sq:.4f}, cost {sc:.1%}")
        shrinks: list[float | None] = [None] if args.online_prior else []
        for vs in [*shrinks, *args.vector_shrink]:
            sweep(d, o["name"], s, t, (sq, sc), args.orders, vs)


def sweep(
    d: dict[str, Any],
    other: str,
    s: np.ndarray,
    t: float,
    point: tuple[float, float],
    orders: int,
    vector_shrink: float | None,
) -> None:
    """online-prior@other (or online-rank@other) over the thresholds, in the recorded order
    and ``orders`` more."""
    t0 = time.process_time()
    sq, sc = point
    grid = sorted(set(_quantile_thresholds(s.tolist(), 21)) | {t})
    res = []
    for k in range(orders + 1):
        order = list(range(len(s)))
        if k:
            random.Random(k).shuffle(order)
        res.append([one_pass(d, s, order, th, vector_shrink) for th in grid])
    r = np.asarray(res)  # orders x thresholds x (quality, cost)
    mean, sd = r.mean(axis=0), r.std(axis=0, ddof=1) if len(r) > 1 else 0 * r[0]
    j0 = grid.index(t)
    name = (
        "online-prior"
        if vector_shrink is None
        else f"online-rank (vector_shrink {vector_shrink:g})"
    )
    print(
        f"  {name}@{other} at t={t:.3f}: "
        f"{mean[j0, 0]:.4f} ± {sd[j0, 0]:.4f}, cost {mean[j0, 1]:.1%} ± {sd[j0, 1]:.1%} "
        f"(recorded order {r[0, j0, 0]:.4f}, {r[0, j0, 1]:.1%})"
    )
    ok = [j for j in range(len(grid)) if mean[j, 0] >= sq - 1e-12]
    if ok:
        j = min(ok, key=lambda j: mean[j, 1])
        print(
            f"    cheapest at its quality: t={grid[j]:.3f}: {mean[j, 0]:.4f} ± "
            f"{sd[j, 0]:.4f}, cost {mean[j, 1]:.1%} ± {sd[j, 1]:.1%} "
            f"({mean[j, 1] / sc - 1:+.0%} against the static point)"
        )
    else:
        print("    never at its quality")
    print(f"    [{time.process_time() - t0:.0f} s CPU]")


if __name__ == "__main__":
    asyncio.run(main())
