"""Routers measured on recorded answers, with RouteLLM's metrics, in-task and across tasks.

Each model of a :class:`~erpoz.eval.data.Dataset` becomes a
:class:`~erpoz.models.replay.ReplayChat` model, metered with its prices like any configured
model; each router is a real erpoz router over them, and every prompt goes through
``router.generate`` as a flow's call would. The ``model_called`` events of each call give the
calls made and their cost (a recorded cost replaces the priced one where the data has it); the
grade of the answering model scores the answer. Routers never see the grades, except:

- the learned routers, fitted on other folds' grades (k-fold: no prompt is routed by a
  classifier that saw it) -- or, across tasks, on another data set's;
- the online router, told each answer's grade *after* it answered (prequential replay: predict,
  then learn), as user feedback would tell it.

The *weak* model is the cheapest, the *strong* one the dearest (by price). A router swept over
its setting gives a curve: quality (accuracy, or mean score) against the share of prompts that
called the strong model. From it, as RouteLLM defines them: PGR of a point ``(q - weak) /
(strong - weak)``; APGR, the area under the curve over its span, as a PGR; CPT(x%), the least
share of strong calls at which the curve reaches PGR x%. Bootstrap confidence intervals resample
the prompts.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models import (
    ChatModel,
    ChatRequest,
    ClassifyResult,
    EmbedModel,
    EmbedResult,
    Message,
    Metered,
    ModelSpec,
    Recorder,
    Usage,
    bind,
    count_tokens,
    unbind,
)
from ..models.replay import Recorded, ReplayChat, request_key
from ..routing.balance import LoadBalanceRouter
from ..routing.cascade import CascadeRouter, Validator
from ..routing.learned import ClassifierRouter, LogisticClassifier
from ..routing.online import OnlineRouter
from ..routing.prior import PriorRouter
from ..routing.validators import (
    FinalAnswer,
    answer_follows,
    arithmetic,
    choice_answer,
    final_answer,
    finished,
    json_answer,
    no_hedging,
)
from ..store import Event
from .data import KNOWN_PRICES, Dataset, find_data, load_dataset

__all__ = [
    "CROSS_TASK",
    "ROUTERS",
    "Curve",
    "Point",
    "Report",
    "apgr",
    "cpt",
    "evaluate_routing",
    "find_data",
    "load_routellm_gsm8k",
    "oracle_quality",
    "prices_for",
    "summarize",
]

#: Where the output of a model with no recorded answer text is assumed to be this long.
OUTPUT_TOKENS = 256
TARGET = 0.95
"""The quality target, as a share of the strong model's: RouteLLM's "95% of GPT-4"."""


def load_routellm_gsm8k(path: str, *, limit: int | None = None) -> Dataset:
    """RouteLLM's GSM8K folder or CSV (kept for callers of the first version)."""
    return load_dataset(path, limit=limit)


# --- prices -----------------------------------------------------------------------------------
def prices_for(
    dataset: Dataset, given: dict[str, tuple[float, float]] | None = None
) -> dict[str, tuple[float, float]]:
    """Each model's USD per million tokens (input, output): ``given``, else what the data
    states, else :data:`~erpoz.eval.data.KNOWN_PRICES`; a model with none is an error."""
    out = {}
    for m in dataset.models:
        found = (given or {}).get(m) or dataset.prices.get(m) or KNOWN_PRICES.get(m)
        if found is None:
            raise ConfigError(
                f"no price for model {m!r}: give it (--price '{m}=IN,OUT', USD per million "
                "tokens) or in the data's first line",
                file=dataset.source,
            )
        out[m] = found
    return out


# --- results ------------------------------------------------------------------------------------
@dataclass(slots=True)
class Point:
    """One operating point: its setting, the share of prompts that called the strong model,
    quality, PGR, what every call cost, calls per model. The per-prompt outcomes are kept
    (not written out) for the bootstrap."""

    setting: str
    threshold: float | None
    strong_share: float
    quality: float
    pgr: float
    cost_usd: float
    calls: dict[str, int]
    cost_vs_strong: float = 0.0
    graded: list[float] = field(default_factory=list, repr=False)
    strong: list[bool] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "threshold": self.threshold,
            "strong_share": self.strong_share,
            "quality": self.quality,
            "pgr": self.pgr,
            "cost_usd": self.cost_usd,
            "cost_vs_strong": self.cost_vs_strong,
            "calls": self.calls,
        }


@dataclass(frozen=True, slots=True)
class Spread:
    """One setting of an online router over several orders of the same prompts: mean and
    standard deviation of its share of strong calls, quality and cost against the strong
    model alone, and its APGR's (the whole sweep's, in each order)."""

    router: str
    setting: str
    threshold: float | None
    orders: int
    strong_share: tuple[float, float]
    quality: tuple[float, float]
    cost_vs_strong: tuple[float, float]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return (mean, sd)


@dataclass(slots=True)
class Curve:
    """A router's points; ``split`` is ``in-task`` (designed or fitted on this task's other
    folds), ``cross-task`` (fitted on ``trained_on``) or ``online`` (prequential)."""

    router: str
    description: str
    points: list[Point]
    split: str = "in-task"
    trained_on: str | None = None
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    at_target: Point | None = None
    """The measured point with the fewest strong calls whose quality reaches the target."""
    tuned: Point | None = None
    """Across tasks: the point whose setting was tuned on ``trained_on`` to reach its target."""
    ci: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    online_match: Point | None = None
    """The online routers' cheapest point at least as good as ``tuned`` (same task)."""
    online_match_router: str = ""
    """The online curve ``online_match`` is from."""
    orders: list[list[Point]] = field(default_factory=list, repr=False)
    """Online routers: the same sweep replayed in shuffled orders of the prompts."""
    spread: list[Spread] = field(default_factory=list)
    """Online routers: per setting, mean and spread over the recorded and shuffled orders."""
    match_spread: Spread | None = None
    """Across tasks: the online setting whose mean quality over the orders is at least
    ``tuned``'s, at the least mean cost."""

    def to_json(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "description": self.description,
            "split": self.split,
            "trained_on": self.trained_on,
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
            "at_target": None if self.at_target is None else self.at_target.to_json(),
            "tuned": None if self.tuned is None else self.tuned.to_json(),
            "online_match": None if self.online_match is None else self.online_match.to_json(),
            "online_match_router": self.online_match_router,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "orders": len(self.orders),
            "spread": [asdict(x) for x in self.spread],
            "match_spread": None if self.match_spread is None else asdict(self.match_spread),
            "points": [p.to_json() for p in self.points],
        }


@dataclass(slots=True)
class Report:
    task: str
    source: str
    items: int
    contaminated_removed: int
    models: list[str]
    weak: str
    strong: str
    metric: str
    weak_quality: float
    strong_quality: float
    target_quality: float
    prices: dict[str, tuple[float, float]]
    alone_cost_usd: dict[str, float]
    curves: list[Curve] = field(default_factory=list)
    oracle: list[Point] = field(default_factory=list)
    folds: int = 10
    seed: int = 0
    bootstrap: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def strong_only_cost_usd(self) -> float:
        return self.alone_cost_usd[self.strong]

    @property
    def weak_only_cost_usd(self) -> float:
        return self.alone_cost_usd[self.weak]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["curves"] = [c.to_json() for c in self.curves]
        doc["oracle"] = [p.to_json() for p in self.oracle]
        doc["prices"] = {m: list(p) for m, p in self.prices.items()}
        return doc


def _pgr(q: float, weak: float, strong: float) -> float:
    gap = strong - weak
    return (q - weak) / gap if gap else 0.0


def _sorted(points: Sequence[Point]) -> list[Point]:
    return sorted(points, key=lambda p: (p.strong_share, p.quality))


def apgr(points: Sequence[Point], weak: float, strong: float) -> float | None:
    """RouteLLM's APGR: area under quality over the curve's own span of strong shares, less
    the weak model's, over the strong model's less the weak model's."""
    return _apgr([(p.strong_share, p.quality) for p in _sorted(points)], weak, strong)


def _apgr(pts: Sequence[tuple[float, float]], weak: float, strong: float) -> float | None:
    lo, hi = pts[0][0], pts[-1][0]
    if hi <= lo or strong == weak:
        return None
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pts))
    return (area - weak * (hi - lo)) / ((strong - weak) * (hi - lo))


def cpt(points: Sequence[Point], share_of_gap: float) -> float | None:
    """The smallest share of strong calls at which the curve, straight between its points,
    reaches PGR ``share_of_gap``; ``None`` when it never does."""
    return _cpt([(p.strong_share, p.pgr) for p in _sorted(points)], share_of_gap)


def _cpt(pts: Sequence[tuple[float, float]], share_of_gap: float) -> float | None:
    if pts[0][1] >= share_of_gap:
        return pts[0][0]
    for a, b in itertools.pairwise(pts):
        if b[1] >= share_of_gap > a[1]:
            t = (share_of_gap - a[1]) / (b[1] - a[1])
            return a[0] + t * (b[0] - a[0])
    return None


def oracle_quality(weak: Sequence[float], strong: Sequence[float], share: float) -> float:
    """RouteLLM's optimal router at a share of strong calls: the strong model answers where
    it gains most over the weak one, as far as the share allows."""
    gains = sorted((s - w for w, s in zip(weak, strong, strict=True)), reverse=True)
    k = int(share * len(weak) + 1e-9)
    return (sum(weak) + sum(g for g in gains[:k] if g > 0)) / len(weak)


# --- routers under test -----------------------------------------------------------------------
GENERAL_VALIDATORS: tuple[tuple[str, Validator], ...] = (
    ("finished", finished),
    ("arithmetic", arithmetic),
    ("final_answer", final_answer),
    ("no_hedging", no_hedging),
    ("answer_follows", answer_follows),
    ("choice_answer", choice_answer),
    ("json_answer", json_answer),
)
"""The cascade's validators, in the order its curve switches them on."""

WHOLE_NUMBER = FinalAnswer(whole=True)

ROUTERS: dict[str, str] = {
    "random": "LoadBalanceRouter over weak and strong, weighted p : 1-p (seeded draws); p swept",
    "learned": "ClassifierRouter: logistic regression on MiniLM embeddings of the prompt "
    "(k-fold), threshold swept",
    "cascade": "CascadeRouter cheap → strong; the general validators switched on one by one",
    "combined": "ClassifierRouter (learned, threshold swept) over [the cascade with all "
    "validators, the strong model]",
    "cascade-whole": "as cascade, with final_answer asking for a whole number",
    "combined-whole": "as combined, with final_answer asking for a whole number",
    "online": "OnlineRouter over every model: learns each answer's grade after it answered "
    "(prequential); its target, a share of the best model's observed quality, swept",
    "online-cascade": "as online, over the cascade (all validators) and the strong model: the "
    "validators' verdicts on each cheap answer decide its escalation, the router which prompts "
    "skip the cheap model",
    "online-prior": "PriorRouter over [the cascade (all validators), the strong model]: the "
    "combined router's classifier as its prior (in-task: k-fold; @<task>: fitted on that "
    "task), corrected prequentially where this task's grades disagree; threshold swept",
    "online-rank": "as online-prior, keeping the share of strong calls its threshold gives "
    "(keep_share): this task's grades, on the prompts' whole embeddings, decide which prompts "
    "get them; threshold swept",
}
"""The routers ``erpoz eval routing`` knows, and what each is."""

DEFAULT_ROUTERS = ("random", "learned", "cascade", "combined", "online")
#: The routers that start from a static router and correct it online (prior.py), and whether
#: each keeps the share of strong calls its threshold gives (``keep_share``).
PRIOR_ROUTERS: dict[str, bool] = {"online-prior": False, "online-rank": True}
NEEDS_EMBEDDINGS = frozenset({"learned", "combined", "combined-whole", *PRIOR_ROUTERS})
NEEDS_ANSWERS = frozenset(
    {"cascade", "combined", "cascade-whole", "combined-whole", "online-cascade"}
)
CROSS_TASK = ("learned", "combined", "online", "online-cascade", "online-prior", "online-rank")
"""The routers that learn, and so are measured across tasks (fitted on ``train``)."""


class _KnownVectors:
    """An EmbedModel that answers from vectors already computed (the prompts, embedded once
    in a batch), and asks ``inner`` for any other text."""

    def __init__(self, inner: EmbedModel) -> None:
        self.name = inner.name
        self.inner = inner
        self._rows: dict[str, tuple[float, ...]] = {}

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if missing:
            fresh = await self.inner.embed(missing)
            for t, v in zip(missing, fresh.vectors, strict=True):
                self._rows[t] = tuple(float(x) for x in v)
        return EmbedResult(tuple(self._rows[t] for t in texts), self.name)


class _Harness:
    """The data set's models, replayed and metered with their prices, and a way to run every
    prompt through a router and score it."""

    def __init__(self, dataset: Dataset, prices: dict[str, tuple[float, float]]) -> None:
        self.dataset = dataset
        self.items = dataset.items
        self.requests = [ChatRequest((Message.user(i.prompt),)) for i in self.items]
        self.models: dict[str, ChatModel] = {}
        for k, name in enumerate(dataset.models):
            records = [
                (request_key(req), Recorded(item.answers[k] or "", _usage(item, k), name, "stop"))
                for item, req in zip(self.items, self.requests, strict=True)
            ]
            p_in, p_out = prices[name]
            self.models[name] = Metered(
                ReplayChat(name, records, source=dataset.source, repeat="first"),
                ModelSpec(name, "replay", price_in=p_in, price_out=p_out, context_window=10**9),
            )
        by_price = sorted(dataset.models, key=lambda m: (sum(prices[m]), dataset.models.index(m)))
        self.prices = prices
        self.order = by_price
        self.weak_name, self.strong_name = by_price[0], by_price[-1]
        self.weak, self.strong = self.models[self.weak_name], self.models[self.strong_name]
        self.wi, self.si = dataset.index(self.weak_name), dataset.index(self.strong_name)
        self.weak_q = dataset.mean_quality(self.wi)
        self.strong_q = dataset.mean_quality(self.si)

    async def run(
        self,
        setting: str,
        threshold: float | None,
        router_for: Callable[[int], ChatModel],
        after: Callable[[int, ChatModel, str, list[tuple[str, dict[str, Any]]]], None]
        | None = None,
    ) -> Point:
        """Every prompt through ``router_for(i)``; ``after(i, router, model, events)`` is told
        who answered (the online router learns there)."""
        events: list[tuple[str, dict[str, Any]]] = []
        rec = Recorder(lambda k, d: events.append((k, dict(d))), "eval")
        token = bind(rec)
        graded: list[float] = []
        strong: list[bool] = []
        calls = dict.fromkeys(self.dataset.models, 0)
        cost = 0.0
        try:
            for i, (item, request) in enumerate(zip(self.items, self.requests, strict=True)):
                events.clear()
                router = router_for(i)
                result = await router.generate(request)
                answered = self.dataset.index(result.model)
                graded.append(item.quality[answered])
                made = [d for k, d in events if k == "model_called"]
                for d in made:
                    m = str(d["model"])
                    calls[m] += 1
                    recorded = item.cost[self.dataset.index(m)] if item.cost else None
                    cost += recorded if recorded is not None else float(d.get("cost_usd") or 0.0)
                strong.append(any(d["model"] == self.strong_name for d in made))
                if after is not None:
                    after(i, router, result.model, list(events))
        finally:
            unbind(token)
        n = len(self.items)
        q = sum(graded) / n
        return Point(
            setting,
            threshold,
            sum(strong) / n,
            q,
            _pgr(q, self.weak_q, self.strong_q),
            cost,
            calls,
            graded=graded,
            strong=strong,
        )


def _usage(item: Any, k: int) -> Usage:
    recorded = item.usage[k] if item.usage else None
    if recorded is not None:
        return Usage(recorded.input_tokens, recorded.output_tokens)
    answer = item.answers[k]
    out = count_tokens(answer) if answer else OUTPUT_TOKENS
    return Usage(count_tokens(item.prompt), out)


def _folds(n: int, k: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold = [0] * n
    for rank, i in enumerate(order):
        fold[i] = rank % k
    return fold


def _quantile_thresholds(scores: Sequence[float], points: int) -> list[float]:
    """Thresholds at evenly spaced quantiles of the scores (the lowest sends every prompt to
    the strong model), and one above the highest (none), as RouteLLM picks them."""
    import numpy as np

    qs = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, points))
    top = float(np.nextafter(float(qs[-1]), math.inf))
    return sorted({float(q) for q in qs[:-1]} | {top})


Progress = Callable[[str, int, int], None]


def _always(router: ChatModel) -> Callable[[int], ChatModel]:
    return lambda i: router


def _by_fold(routers: Sequence[ChatModel], fold_of: Sequence[int]) -> Callable[[int], ChatModel]:
    return lambda i: routers[fold_of[i]]


@dataclass(slots=True)
class _Learned:
    """Classifiers for the learned routers of one task: per fold (in-task) or one (across)."""

    classifiers: list[LogisticClassifier]
    fold_of: list[int]
    scores: list[float]


def _labels(dataset: Dataset, weak: int, strong: int) -> list[bool]:
    """Where the strong model did better than the weak one (RouteLLM's label, for right /
    wrong answers: the weak one wrong and the strong one right)."""
    return [i.quality[strong] > i.quality[weak] for i in dataset.items]


@dataclass
class _Context:
    """What one evaluation shares between routers."""

    h: _Harness
    embedder: EmbedModel | None
    folds: int
    points: int
    seed: int
    progress: Progress | None
    orders: int = 0
    learned: _Learned | None = None
    train: _Harness | None = None
    train_learned: _Learned | None = None

    def tell(self, router: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(router, done, total)


async def _embedder(ctx: _Context) -> _KnownVectors:
    if ctx.embedder is None:
        from ..models.local_embed import MiniLMEmbed

        ctx.embedder = MiniLMEmbed()
    if not isinstance(ctx.embedder, _KnownVectors):
        ctx.embedder = _KnownVectors(ctx.embedder)
    return ctx.embedder


async def _cross_validated(ctx: _Context, h: _Harness) -> _Learned:
    """One classifier per fold, fitted on the other folds' prompts; each prompt's score by
    the classifier of its own fold (that never saw it)."""
    import numpy as np

    known = await _embedder(ctx)
    prompts = [i.prompt for i in h.items]
    x = np.asarray((await known.embed(prompts)).vectors, dtype=np.float64)
    y = np.asarray(_labels(h.dataset, h.wi, h.si), dtype=bool)
    k = max(2, min(ctx.folds, len(prompts)))
    fold_of = _folds(len(prompts), k, ctx.seed)
    folds = np.asarray(fold_of)
    classifiers = []
    scores = np.zeros(len(prompts))
    for f in range(k):
        train = folds != f
        clf = LogisticClassifier(f"learned-fold{f}", known, labels=("strong", "weak"))
        clf.fit_vectors(x[train], y[train])
        classifiers.append(clf)
        scores[~train] = clf.probabilities(x[~train])
    return _Learned(classifiers, fold_of, [float(s) for s in scores])


async def _fitted_on(ctx: _Context, train: _Harness, test: _Harness) -> _Learned:
    """One classifier fitted on all of ``train``; its scores of ``test``'s prompts."""
    import numpy as np

    known = await _embedder(ctx)
    x = np.asarray((await known.embed([i.prompt for i in train.items])).vectors, dtype=np.float64)
    y = np.asarray(_labels(train.dataset, train.wi, train.si), dtype=bool)
    clf = LogisticClassifier(f"learned-{train.dataset.name}", known, labels=("strong", "weak"))
    clf.fit_vectors(x, y)
    xt = np.asarray((await known.embed([i.prompt for i in test.items])).vectors, dtype=np.float64)
    scores = [float(s) for s in clf.probabilities(xt)]
    return _Learned([clf], [0] * len(test.items), scores)


def _validators(whole: bool) -> tuple[Validator, ...]:
    return tuple(
        WHOLE_NUMBER if whole and n == "final_answer" else v for n, v in GENERAL_VALIDATORS
    )


def _cascade(
    h: _Harness, whole: bool = False, validators: Sequence[Validator] | None = None
) -> CascadeRouter:
    chosen = _validators(whole) if validators is None else tuple(validators)
    return CascadeRouter("cascade", [h.models[m] for m in h.order], chosen)


async def _random_curve(ctx: _Context) -> list[Point]:
    h, points = ctx.h, ctx.points
    out = []
    grid = [i / (points - 1) for i in range(points)]
    for j, p in enumerate(grid):
        router = LoadBalanceRouter("random", [h.weak, h.strong], weights=[1 - p, p], seed=ctx.seed)
        out.append(await h.run(f"p={p:.2f}", p, _always(router)))
        ctx.tell("random", j + 1, len(grid))
    return out


async def _cascade_curve(ctx: _Context, name: str, whole: bool) -> list[Point]:
    h = ctx.h
    chosen = [
        (n, WHOLE_NUMBER if whole and n == "final_answer" else v) for n, v in GENERAL_VALIDATORS
    ]
    out = []
    for j in range(len(chosen) + 1):
        on = chosen[:j]
        cascade = _cascade(h, validators=[v for _, v in on])
        setting = "+".join(n for n, _ in on) if on else "validators off"
        out.append(await h.run(setting, None, _always(cascade)))
        ctx.tell(name, j + 1, len(chosen) + 1)
    return out


async def _learned_curve(
    ctx: _Context, name: str, learned: _Learned, combined: bool, whole: bool = False
) -> list[Point]:
    h = ctx.h
    thresholds = _quantile_thresholds(learned.scores, ctx.points)
    out = []
    if combined:
        out.append(await h.run("validators off", None, _always(_cascade(h, validators=()))))
    for j, t in enumerate(thresholds):
        out.append(await h.run(f"t={t:.3f}", t, _learned_router(h, learned, combined, whole, t)))
        ctx.tell(name, j + 1, len(thresholds))
    return out


def _learned_router(
    h: _Harness, learned: _Learned, combined: bool, whole: bool, t: float
) -> Callable[[int], ChatModel]:
    by_fold: list[ChatModel] = []
    for c in learned.classifiers:
        weak: ChatModel = _cascade(h, whole) if combined else h.weak
        by_fold.append(
            ClassifierRouter("combined" if combined else "learned", c, weak, h.strong, threshold=t)
        )
    return _by_fold(by_fold, learned.fold_of)


#: The online router's targets swept: shares of the best model's observed quality.
ONLINE_TARGETS = tuple(round(0.60 + 0.02 * i, 2) for i in range(21))


def _online_models(h: _Harness, with_cascade: bool) -> list[ChatModel]:
    if with_cascade:  # (chosen on GSM8K over [weak, cascade, strong]: fewer arms to learn)
        return [_cascade(h), h.strong]
    return [h.models[m] for m in h.order]


@dataclass
class _Prior:
    """Another task's recorded grades, to warm-start an online router (transfer): its
    prompts, and per member of the router (cheap to strong) the grade of each, on [0, 1]."""

    prompts: list[str]
    grades: list[list[float]]
    weight: float = 8.0


#: How many signals' worth per model the other task's evidence weighs in a warm start: a
#: prior that a few dozen of this task's own signals override. Set by reasoning, not tuned.
WARM_WEIGHT = 8.0


async def _prior_of(train: _Harness, h: _Harness, with_cascade: bool) -> _Prior | None:
    """The warm start an online router over ``h``'s models gets from ``train``: the train
    task's models matched by rank of price (cheap to strong); the cascade's grade there is its
    replayed answer's. ``None`` when the two tasks do not have as many models."""
    if len(train.order) != len(h.order):
        return None
    prompts = [i.prompt for i in train.items]
    norm = train.dataset.normalised
    strong = [norm(i.quality[train.si]) for i in train.items]
    if with_cascade:
        cascade = await train.run("warm start", None, _always(_cascade(train)))
        return _Prior(prompts, [[norm(g) for g in cascade.graded], strong], WARM_WEIGHT)
    grades = [[norm(i.quality[train.dataset.index(m)]) for i in train.items] for m in train.order]
    return _Prior(prompts, grades, WARM_WEIGHT)


async def _online_point(
    h: _Harness,
    embedder: EmbedModel,
    share: float,
    with_cascade: bool,
    seed: int,
    feedback: float,
    prior: _Prior | None = None,
) -> Point:
    """One prequential pass: each prompt routed, then the router told the answer's grade
    (for a ``feedback`` share of the answers, drawn with ``seed``), in the data's order;
    warm-started from ``prior`` (another task's grades) when given."""
    router = OnlineRouter(
        "online",
        _online_models(h, with_cascade),
        embedder,
        target=share,
        relative=True,
        seed=seed,
    )
    if prior is not None:
        await router.warm_start(prior.prompts, prior.grades, prior.weight)
    return await _prequential(h, router, seed, feedback, f"target={share:.2f}", share)


async def _prequential(
    h: _Harness,
    router: OnlineRouter,
    seed: int,
    feedback: float,
    setting: str,
    threshold: float,
) -> Point:
    """Every prompt through ``router`` in the data's order; after each answer, the router
    reads its decision back from the log and is told that answer's grade (for a ``feedback``
    share of the answers, drawn with ``seed``) -- never the grade of a model it did not call."""
    draw = random.Random(seed)
    seq = 0

    def learn(
        i: int, r: ChatModel, answered: str, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        nonlocal seq
        log = []
        for kind, data in events:
            if kind == "route_decided" and data.get("router") == router.name:
                seq += 1
                log.append(_event(seq, kind, data))
        if draw.random() < feedback:
            grade = h.items[i].quality[h.dataset.index(answered)]
            seq += 1
            log.append(_event(seq, "feedback", {"score": h.dataset.normalised(grade)}))
        router.learn(log)

    return await h.run(setting, threshold, _always(router), after=learn)


class _ScoredPrior:
    """A :class:`~erpoz.models.Classifier` answering with scores already computed for the
    prompts (per prompt, by the classifier of its fold, or the other task's): the prior of
    ``online-prior``, as a :class:`ClassifierRouter` would ask its classifier."""

    def __init__(self, name: str, prompts: Sequence[str], scores: Sequence[float]) -> None:
        self.name = name
        self._scores = dict(zip(prompts, scores, strict=True))

    async def classify(self, text: str) -> ClassifyResult:
        p = self._scores[text]
        return ClassifyResult({"strong": p, "weak": 1.0 - p}, self.name)


async def _prior_curve(
    ctx: _Context,
    h: _Harness,
    label: str,
    learned: _Learned,
    feedback: float,
    extra: Sequence[float] = (),
    keep_share: bool = False,
) -> list[Point]:
    """``online-prior``'s sweep: a prequential pass per threshold (the quantiles of its
    prior's scores, as the combined router's, and ``extra``), each from an empty state."""
    embedder = await _embedder(ctx)
    prior = _ScoredPrior("prior", [i.prompt for i in ctx.h.items], learned.scores)
    thresholds = sorted(set(_quantile_thresholds(learned.scores, ctx.points)) | set(extra))
    out = []
    for j, t in enumerate(thresholds):
        cheap = _cascade(h) if h.dataset.has_answers else h.weak
        router = PriorRouter(
            "online",
            cheap,
            h.strong,
            embedder,
            prior,
            threshold=t,
            seed=ctx.seed,
            keep_share=keep_share,
        )
        out.append(await _prequential(h, router, ctx.seed, feedback, f"t={t:.3f}", t))
        ctx.tell(label, j + 1, len(thresholds))
    return out


def _event(seq: int, kind: str, data: dict[str, Any]) -> Event:
    return Event("replay", seq, 0.0, kind, "route", 0, data, None, "", "")


async def _online_curve(
    ctx: _Context,
    h: _Harness,
    name: str,
    feedback: float,
    label: str | None = None,
    prior: _Prior | None = None,
) -> list[Point]:
    out = []
    embedder = await _embedder(ctx)
    for j, share in enumerate(ONLINE_TARGETS):
        point = await _online_point(
            h, embedder, share, name.startswith("online-cascade"), ctx.seed, feedback, prior
        )
        out.append(point)
        ctx.tell(label or name, j + 1, len(ONLINE_TARGETS))
    return out


async def _online_orders(
    ctx: _Context,
    name: str,
    feedback: float,
    prior: _Prior | None = None,
    sweep: Callable[[_Harness, str], Awaitable[list[Point]]] | None = None,
) -> list[list[Point]]:
    """The online sweep again in ``ctx.orders`` shuffled orders of the prompts (seeds
    ``seed + 1``, ``seed + 2``, ...), each pass learning from nothing (or the same prior)."""
    out = []
    h = ctx.h
    for k in range(1, ctx.orders + 1):
        order = list(range(len(h.items)))
        random.Random(ctx.seed + k).shuffle(order)
        shuffled = _Harness(h.dataset.take(order), h.prices)
        label = f"{name}, order {k}"
        if sweep is not None:
            out.append(await sweep(shuffled, label))
        else:
            out.append(await _online_curve(ctx, shuffled, name, feedback, label, prior))
    return out


def _spreads(curve: Curve, strong_alone: float) -> list[Spread]:
    """Per setting, mean and spread over the recorded order and the shuffled ones."""
    passes = [curve.points, *curve.orders]
    out = []
    for j, p in enumerate(curve.points):
        same = [ps[j] for ps in passes]
        out.append(
            Spread(
                curve.router,
                p.setting,
                p.threshold,
                len(same),
                _mean_sd([q.strong_share for q in same]),
                _mean_sd([q.quality for q in same]),
                _mean_sd([q.cost_usd / strong_alone if strong_alone else 0.0 for q in same]),
            )
        )
    return out


# --- the evaluation ---------------------------------------------------------------------------
async def evaluate_routing(
    dataset: Dataset,
    routers: Iterable[str] = DEFAULT_ROUTERS,
    *,
    prices: dict[str, tuple[float, float]] | None = None,
    embedder: EmbedModel | None = None,
    train: Dataset | None = None,
    train_prices: dict[str, tuple[float, float]] | None = None,
    folds: int = 10,
    points: int = 21,
    seed: int = 0,
    bootstrap: int = 1000,
    feedback: float = 1.0,
    orders: int = 0,
    progress: Progress | None = None,
) -> Report:
    """Run every prompt through each router at each of its settings; see the module.

    ``embedder`` (MiniLM by default) embeds the prompts for the learned and online routers;
    ``train``, another task's data, adds each learning router fitted there (``<router>@<task>``,
    cross-task); ``folds`` is k of the in-task cross-validation; ``points`` the thresholds
    swept; ``bootstrap`` the resamples of the confidence intervals (0: none); ``feedback`` the
    share of answers whose grade the online router is told; ``orders`` how many shuffled
    orders of the prompts the online routers are replayed in besides the recorded one (their
    mean and spread per setting).
    """
    names = list(dict.fromkeys(routers))
    _check_settings(names, points, feedback, orders)
    priced = prices_for(dataset, prices)
    h = _Harness(dataset, priced)
    ctx = _Context(h, embedder, folds, points, seed, progress, orders)
    report = _new_report(dataset, h, priced, max(2, min(folds, len(h.items))), seed, bootstrap)
    _add_oracle(report, h)
    for m in dataset.models:
        alone = await h.run(f"{m} alone", None, _always(h.models[m]))
        report.alone_cost_usd[m] = alone.cost_usd
    if not dataset.has_answers:
        names = _without_answer_readers(report, names)
    if NEEDS_EMBEDDINGS & set(names):
        ctx.learned = await _cross_validated(ctx, h)
    for name in names:
        report.curves.append(await _measured_curve(ctx, report, name, feedback))
    if train is not None:
        await _cross_task(ctx, report, names, train, train_prices, feedback)
    if bootstrap:
        _bootstrap(report, h, bootstrap, seed)
    for curve in report.curves:
        _compare_with_strong(report, curve)
    return report


def _check_settings(names: Sequence[str], points: int, feedback: float, orders: int) -> None:
    unknown = [r for r in names if r not in ROUTERS]
    if unknown:
        raise ConfigError(f"unknown router(s) {', '.join(unknown)} (known: {', '.join(ROUTERS)})")
    if points < 2:
        raise ConfigError("points: at least 2")
    if not 0.0 < feedback <= 1.0:
        raise ConfigError("feedback: a share of answers in (0, 1]")
    if orders < 0:
        raise ConfigError("orders: 0 or more")


def _new_report(
    dataset: Dataset,
    h: _Harness,
    priced: dict[str, tuple[float, float]],
    folds: int,
    seed: int,
    bootstrap: int,
) -> Report:
    """The report before any router is measured: the data, its models and their quality."""
    return Report(
        dataset.name,
        dataset.source,
        len(h.items),
        dataset.contaminated_removed,
        list(dataset.models),
        h.weak_name,
        h.strong_name,
        dataset.metric,
        h.weak_q,
        h.strong_q,
        TARGET * h.strong_q,
        priced,
        {},
        folds=folds,
        seed=seed,
        bootstrap=bootstrap,
    )


def _add_oracle(report: Report, h: _Harness) -> None:
    """The oracle's curve: at each share of strong calls, the best quality any router could
    reach (the prompts the weak model fails most go to the strong one)."""
    weak_grades = [i.quality[h.wi] for i in h.items]
    strong_grades = [i.quality[h.si] for i in h.items]
    for s in [i / 20 for i in range(21)]:
        q = oracle_quality(weak_grades, strong_grades, s)
        report.oracle.append(
            Point(f"{s:.0%}", s, s, q, _pgr(q, h.weak_q, h.strong_q), math.nan, {})
        )


def _without_answer_readers(report: Report, names: list[str]) -> list[str]:
    """Data that records no answers cannot be read by validators: the routers that need them
    are left out, with a warning that says so."""
    skipped = [n for n in names if n in NEEDS_ANSWERS]
    if skipped:
        report.warnings.append(
            f"not evaluated: {', '.join(skipped)} (validators read answers, and this data "
            "records none)"
        )
    return [n for n in names if n not in NEEDS_ANSWERS]


async def _measured_curve(ctx: _Context, report: Report, name: str, feedback: float) -> Curve:
    """One router's curve, summarized into the report (an online router's also replayed in
    shuffled orders)."""
    curve = Curve(name, ROUTERS[name], await _curve(ctx, name, feedback))
    if name in PRIOR_ROUTERS:
        assert ctx.learned is not None
        learned = ctx.learned
        keep = PRIOR_ROUTERS[name]
        curve.split = "online"
        curve.orders = await _online_orders(
            ctx,
            name,
            feedback,
            sweep=lambda sh, lab: _prior_curve(ctx, sh, lab, learned, feedback, (), keep),
        )
        curve.spread = _spreads(curve, report.strong_only_cost_usd)
    elif name.startswith("online"):
        curve.split = "online"
        curve.orders = await _online_orders(ctx, name, feedback)
        curve.spread = _spreads(curve, report.strong_only_cost_usd)
    summarize(curve, report)
    return curve


def _compare_with_strong(report: Report, curve: Curve) -> None:
    """Each cost as a share of the strong model's alone; the settings costlier than it are
    warned about."""
    for extra in (curve.tuned, curve.online_match):
        if extra is not None and report.strong_only_cost_usd:
            extra.cost_vs_strong = extra.cost_usd / report.strong_only_cost_usd
    _flag_costly(report, curve)


def _flag_costly(report: Report, curve: Curve) -> None:
    """Every measured setting of ``curve`` -- its points, its tuned point, its points in
    other orders -- that costs more than the strong model alone goes into the warnings."""
    strong_alone = report.strong_only_cost_usd
    tuned = [curve.tuned] if curve.tuned is not None and curve.tuned not in curve.points else []
    passes = [("", [*curve.points, *tuned])]
    passes += [(f", order {k}", ps) for k, ps in enumerate(curve.orders, start=1)]
    for where, points in passes:
        for p in points:
            p.cost_vs_strong = p.cost_usd / strong_alone if strong_alone else 0.0
            if p.cost_usd > strong_alone * (1 + 1e-9):
                report.warnings.append(
                    f"{curve.router} ({p.setting}{where}) costs {p.cost_vs_strong:.1%} of the "
                    f"strong model alone, at {p.strong_share:.1%} strong calls: costlier than "
                    "not routing"
                )


async def _curve(ctx: _Context, name: str, feedback: float) -> list[Point]:
    if name == "random":
        return await _random_curve(ctx)
    if name in ("cascade", "cascade-whole"):
        return await _cascade_curve(ctx, name, name == "cascade-whole")
    if name in PRIOR_ROUTERS:
        assert ctx.learned is not None
        keep = PRIOR_ROUTERS[name]
        return await _prior_curve(ctx, ctx.h, name, ctx.learned, feedback, (), keep)
    if name.startswith("online"):
        return await _online_curve(ctx, ctx.h, name, feedback)
    assert ctx.learned is not None
    return await _learned_curve(
        ctx, name, ctx.learned, name != "learned", whole=name == "combined-whole"
    )


async def _cross_task(
    ctx: _Context,
    report: Report,
    names: Sequence[str],
    train: Dataset,
    train_prices: dict[str, tuple[float, float]] | None,
    feedback: float,
) -> None:
    """Each learning router fitted on ``train`` and measured here: its whole curve, and the
    point whose setting reaches the target on ``train`` (tuned there, used here)."""
    th = _Harness(train, prices_for(train, train_prices))
    h = ctx.h
    source = _Context(th, ctx.embedder, ctx.folds, ctx.points, ctx.seed, None)
    for name in CROSS_TASK:
        if name not in names:
            continue
        label = f"{name}@{train.name}"
        if name in PRIOR_ROUTERS:
            curve = await _prior_cross_task(ctx, report, source, feedback, name)
        elif name.startswith("online"):
            cascade = name == "online-cascade"
            if cascade and not (train.has_answers and h.dataset.has_answers):
                continue
            curve = await _online_cross_task(ctx, report, name, source, cascade, feedback)
        else:
            combined = name == "combined"
            if combined and not (train.has_answers and h.dataset.has_answers):
                continue
            fitted = await _fitted_on(ctx, th, h)
            points = await _learned_curve(ctx, label, fitted, combined)
            curve = Curve(
                label, f"{ROUTERS[name]}; fitted on {train.name}", points, "cross-task", train.name
            )
            t = await _tuned_threshold(source, combined)
            if t is not None:
                curve.tuned = await h.run(
                    f"t={t:.3f} (tuned on {train.name})",
                    t,
                    _learned_router(h, fitted, combined, False, t),
                )
        summarize(curve, report)
        report.curves.append(curve)
    # the online routers that saw none of this task's grades but through the stream (the
    # in-task online-prior's classifier was fitted on other folds of them)
    learning = [
        c for c in report.curves if c.router.startswith("online") and c.router not in PRIOR_ROUTERS
    ]
    online = [(c.router, p) for c in learning for p in c.points]
    spread = [x for c in learning if c.orders for x in c.spread]
    for curve in report.curves:
        if online and curve.tuned is not None:
            good = [(r, p) for r, p in online if p.quality >= curve.tuned.quality - 1e-12]
            best = min(good, key=lambda rp: rp[1].cost_usd) if good else None
            curve.online_match = None if best is None else best[1]
            curve.online_match_router = "" if best is None else best[0]
            fair = [x for x in spread if x.quality[0] >= curve.tuned.quality - 1e-12]
            curve.match_spread = min(fair, key=lambda x: x.cost_vs_strong[0]) if fair else None


async def _online_cross_task(
    ctx: _Context,
    report: Report,
    name: str,
    source: _Context,
    cascade: bool,
    feedback: float,
) -> Curve:
    """The online router carried over from ``source``'s task: warm-started on its grades
    (transfer) and its target tuned there; it goes on learning here, in every order."""
    h, th = ctx.h, source.h
    label = f"{name}@{th.dataset.name}"
    tuned_share = await _online_tuned(source, feedback, cascade)
    prior = await _prior_of(th, h, cascade)
    if prior is None:  # no warm start possible: only the target comes from the other task
        same = next((c for c in report.curves if c.router == name), None)
        points = same.points if same else await _online_curve(ctx, h, name, feedback, label)
        what = f"{ROUTERS[name]}; its target tuned on {th.dataset.name}"
    else:
        points = await _online_curve(ctx, h, name, feedback, label, prior)
        same = None
        what = (
            f"{ROUTERS[name]}; warm-started on {th.dataset.name}'s grades "
            f"({prior.weight:g} signals per model), its target tuned there"
        )
    curve = Curve(label, what, points, "cross-task", th.dataset.name)
    if same is not None:
        curve.orders, curve.spread = same.orders, same.spread
    else:
        curve.orders = await _online_orders(ctx, name, feedback, prior)
        curve.router = label
        curve.spread = _spreads(curve, report.strong_only_cost_usd)
    curve.tuned = next((p for p in points if p.threshold == tuned_share), None)
    return curve


async def _prior_cross_task(
    ctx: _Context, report: Report, source: _Context, feedback: float, name: str = "online-prior"
) -> Curve:
    """``online-prior`` carried over from ``source``'s task: the combined router's classifier
    fitted there and its threshold tuned there (the static router a user of that task would
    run), corrected here prequentially; its curve sweeps the threshold, the tuned one
    included."""
    h, th = ctx.h, source.h
    label = f"{name}@{th.dataset.name}"
    keep = PRIOR_ROUTERS[name]
    fitted = await _fitted_on(ctx, th, h)
    cascade = th.dataset.has_answers and h.dataset.has_answers
    t = await _tuned_threshold(source, cascade)
    extra = () if t is None else (t,)
    points = await _prior_curve(ctx, h, label, fitted, feedback, extra, keep)
    curve = Curve(
        label,
        f"{ROUTERS[name]}; its prior fitted on {th.dataset.name}, the threshold tuned there",
        points,
        "cross-task",
        th.dataset.name,
    )
    curve.orders = await _online_orders(
        ctx,
        label,
        feedback,
        sweep=lambda sh, lab: _prior_curve(ctx, sh, lab, fitted, feedback, extra, keep),
    )
    curve.spread = _spreads(curve, report.strong_only_cost_usd)
    curve.tuned = next((p for p in points if p.threshold == t), None)
    return curve


async def _tuned_threshold(source: _Context, combined: bool) -> float | None:
    """The threshold with the fewest strong calls that reaches the target on the source task
    (cross-validated there)."""
    learned = await _cross_validated(source, source.h)
    pts = await _learned_curve(source, "tuning", learned, combined)
    target = TARGET * source.h.strong_q
    reaching = [p for p in pts if p.quality >= target - 1e-12 and p.threshold is not None]
    best = min(reaching, key=lambda p: p.strong_share) if reaching else None
    return None if best is None else best.threshold


async def _online_tuned(source: _Context, feedback: float, cascade: bool = False) -> float:
    """The least target share whose prequential pass reaches the target on the source task."""
    goal = TARGET * source.h.strong_q
    embedder = await _embedder(source)
    for share in ONLINE_TARGETS:
        p = await _online_point(source.h, embedder, share, cascade, source.seed, feedback)
        if p.quality >= goal - 1e-12:
            return share
    return ONLINE_TARGETS[-1]


def summarize(curve: Curve, report: Report) -> Curve:
    """Fill in a curve's APGR, CPT(50%), CPT(80%) and its cheapest point at the target."""
    curve.apgr = apgr(curve.points, report.weak_quality, report.strong_quality)
    curve.cpt50 = cpt(curve.points, 0.5)
    curve.cpt80 = cpt(curve.points, 0.8)
    reaching = [p for p in curve.points if p.quality >= report.target_quality - 1e-12]
    curve.at_target = min(reaching, key=lambda p: p.strong_share) if reaching else None
    return curve


# --- confidence intervals -----------------------------------------------------------------------
def _bootstrap(report: Report, h: _Harness, n: int, seed: int) -> None:
    """95% intervals of APGR, CPT(50%), CPT(80%) and the share of strong calls at the target,
    by resampling the prompts ``n`` times (the same resamples for every curve)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = len(h.items)
    counts = rng.multinomial(size, np.full(size, 1.0 / size), size=n).astype(np.float64)
    weak = counts @ np.asarray([i.quality[h.wi] for i in h.items]) / size
    strong = counts @ np.asarray([i.quality[h.si] for i in h.items]) / size
    for curve in report.curves:
        q = np.asarray([p.graded for p in curve.points], dtype=np.float64)
        s = np.asarray([p.strong for p in curve.points], dtype=np.float64)
        quality = q @ counts.T / size  # points × resamples
        share = s @ counts.T / size
        stats: dict[str, list[float | None]] = {
            "apgr": [],
            "cpt50": [],
            "cpt80": [],
            "at_target": [],
        }
        for b in range(n):
            order = np.lexsort((quality[:, b], share[:, b]))
            pts = [(float(share[i, b]), float(quality[i, b])) for i in order]
            w, st = float(weak[b]), float(strong[b])
            pgr = [(x, _pgr(y, w, st)) for x, y in pts]
            stats["apgr"].append(_apgr(pts, w, st))
            stats["cpt50"].append(_cpt(pgr, 0.5))
            stats["cpt80"].append(_cpt(pgr, 0.8))
            hit = [x for x, y in pts if y >= TARGET * st - 1e-12]
            stats["at_target"].append(min(hit) if hit else None)
        curve.ci = {k: _interval(v) for k, v in stats.items()}


def _interval(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """The 2.5% and 97.5% quantiles; a resample where the figure is undefined (the curve never
    reaches the level) counts as beyond any value (an end at infinity is ``None``)."""
    import numpy as np

    arr = np.asarray([math.inf if v is None else v for v in values], dtype=np.float64)
    lo, hi = (float(x) for x in np.quantile(arr, [0.025, 0.975], method="inverted_cdf"))
    return (lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None)
