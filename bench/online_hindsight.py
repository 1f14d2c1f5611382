"""What an online router could gain over the static one, in hindsight: how cheaply each
ranking of the prompts reaches the static router's quality when it decides which prompts
skip the cascade for the strong model (the combined router's structure: the cascade --
the weak model, escalated when a validator rejects -- or the strong model alone).

For each task: the combined router's classifier fitted on the other task and its threshold
tuned there (``combined@<other>``'s point, as :mod:`bench.online_prior`); then, ranking the
prompts by each score and sending the top k to the strong model for every k, the least cost
(against the strong model alone) at which the quality reaches that point's. Scores: the
static prior's (its own curve); 10-fold scores *fitted on this task's labels* (what an online
router could at best learn, with every grade and no exploration): a logistic regression on the
MiniLM embedding for RouteLLM's label, ridge regressions for the gain after the cascade and
for the weak model being wrong; the prompt's length; random orders; the oracle (the true
gain). Also the weak model's cost against the strong model's, the most that skipping the weak
attempt could ever save.

    python -m bench.online_hindsight
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.online_prior import scores, static, tuned
from bench.online_warm import DATA, arms, task
from erpoz.eval.routing import _folds
from erpoz.routing.learned import LogisticClassifier
from erpoz.routing.online import HashingEmbed


def cost_at(d: dict[str, Any], rank: np.ndarray, goal: float) -> float:
    """The least cost share at which sending the top-ranked prompts to the strong model (the
    rest to the cascade) reaches ``goal``."""
    q0, c0 = arms(d, True)
    order = np.argsort(-rank, kind="stable")
    q = q0.mean() + np.concatenate([[0.0], np.cumsum((d["sq"] - q0)[order])]) / len(q0)
    c = (c0.sum() + np.concatenate([[0.0], np.cumsum((d["sc"] - c0)[order])])) / d["sc"].sum()
    ok = q >= goal - 1e-12
    return float(c[ok].min()) if ok.any() else float("nan")


Fit = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cross_validated(d: dict[str, Any], y: np.ndarray, fit: Fit, k: int = 10) -> np.ndarray:
    fold = np.asarray(_folds(len(y), k, 0))
    out = np.zeros(len(y))
    for f in range(k):
        train = fold != f
        out[~train] = fit(d["x"][train], y[train], d["x"][~train])
    return out


def logistic(x: np.ndarray, y: np.ndarray, xt: np.ndarray) -> np.ndarray:
    clf = LogisticClassifier("hindsight", HashingEmbed(), labels=("strong", "weak"))
    clf.fit_vectors(x, y.astype(bool))
    return np.asarray(clf.probabilities(xt))


def ridge(x: np.ndarray, y: np.ndarray, xt: np.ndarray, l2: float = 10.0) -> np.ndarray:
    a = np.c_[np.ones(len(x)), x]
    m = a.T @ a + l2 * np.eye(a.shape[1])
    m[0, 0] -= l2  # the intercept is not shrunk
    return np.asarray(np.c_[np.ones(len(xt)), xt] @ np.linalg.solve(m, a.T @ y))


async def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    g = await task(f"{DATA}/routellm-gsm8k")
    m = await task(f"{DATA}/routellm-mtbench")
    print(f"load average {os.getloadavg()[0]:.1f}")
    for d, o in ((g, m), (m, g)):
        t0 = time.process_time()
        s, t = scores(o, d["x"]), tuned(o)
        sq, sc = static(d, s, t)
        q0, _ = arms(d, True)
        gain = d["sq"] - q0
        length = np.log(np.asarray(d["tokens"], dtype=np.float64))
        rows = {
            f"static prior (combined@{o['name']})": s,
            "in-task logistic, RouteLLM's label (10-fold)": cross_validated(
                d, d["strong_better"], logistic
            ),
            "in-task ridge, gain after the cascade (10-fold)": cross_validated(d, gain, ridge),
            "in-task ridge, weak model wrong (10-fold)": cross_validated(d, 1 - d["wq"], ridge),
            "prompt length, longest first": length,
            "oracle (the true gain)": gain,
        }
        weak = float(d["wc"].sum() / d["sc"].sum())
        print(
            f"{d['name']}: combined@{o['name']} t={t:.3f}: quality {sq:.4f}, cost {sc:.1%}; "
            f"the weak model costs {weak:.1%} of the strong one"
        )
        for label, rank in rows.items():
            print(f"  {label:48s} {cost_at(d, rank, sq):6.1%}")
        rng = np.random.default_rng(0)
        rand = [cost_at(d, rng.random(len(q0)), sq) for _ in range(20)]
        print(f"  {'random order (mean of 20)':48s} {np.mean(rand):6.1%}")
        print(f"  [{time.process_time() - t0:.0f} s CPU]")


if __name__ == "__main__":
    asyncio.run(main())
