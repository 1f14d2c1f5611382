"""Routers measured on recorded answers: RouteLLM's GSM8K data, RouteLLM's metrics.

For each of the GSM8K test questions left after RouteLLM's decontamination, the data holds the
answer of a weak model (Mixtral-8x7B) and of a strong one (GPT-4) and whether each was right.
Both models become :class:`~erpoz.models.replay.ReplayChat` models, metered with per-token
prices like any configured model; each router is a real erpoz router over them, and every
question goes through ``router.generate`` exactly as a flow's call would. The ``model_called``
events of each call give the calls made and their cost (a cascade's weak call that was
escalated included); the answering model's correctness column scores the answer. Routers
never see the correctness columns; the learned ones are fitted on the other folds' columns
only (k-fold cross-validation: no question is routed by a classifier that saw it).

A router swept over its threshold gives a curve: accuracy against the share of questions
that called the strong model. From it, as RouteLLM defines them:

- PGR (performance gap recovered) of a point: ``(accuracy - weak) / (strong - weak)``;
- APGR: the area under the curve between its first and last share, less the weak model's,
  over the strong model's less the weak model's (RouteLLM's ``np.trapz`` formula);
- CPT(x%): the smallest share of strong calls at which the curve (straight between its
  points) reaches PGR x%.

The oracle (RouteLLM's "optimal") calls the strong model only where the weak one is wrong and
the strong one right, up to a given share.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..models._meter import Metered, Recorder, bind, unbind
from ..models._protocol import ChatModel, EmbedModel
from ..models._types import ChatRequest, EmbedResult, Message, ModelSpec
from ..models.replay import (
    ROUTELLM_MODELS,
    Recorded,
    ReplayChat,
    read_contaminated,
    read_routellm_rows,
    request_key,
    routellm_files,
)
from ..routing.balance import LoadBalanceRouter
from ..routing.cascade import CascadeRouter, Validator
from ..routing.learned import ClassifierRouter, LogisticClassifier
from ..routing.validators import (
    FinalAnswer,
    answer_follows,
    arithmetic,
    final_answer,
    finished,
    no_hedging,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_PRICES",
    "ROUTERS",
    "Curve",
    "Dataset",
    "Item",
    "Point",
    "Prices",
    "Report",
    "evaluate_routing",
    "find_data",
    "load_routellm_gsm8k",
    "oracle_accuracy",
    "summarize",
]

DATA_DIR_NAME = "routellm-gsm8k"
WEAK = "mixtral-8x7b"
STRONG = "gpt-4"


# --- the data ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Item:
    """One question: both recorded answers and whether each was right (for scoring only)."""

    prompt: str
    weak_answer: str
    strong_answer: str
    weak_correct: bool
    strong_correct: bool


@dataclass(frozen=True, slots=True)
class Dataset:
    items: tuple[Item, ...]
    source: str
    rows: int
    contaminated_removed: int

    @property
    def weak_accuracy(self) -> float:
        return sum(i.weak_correct for i in self.items) / len(self.items)

    @property
    def strong_accuracy(self) -> float:
        return sum(i.strong_correct for i in self.items) / len(self.items)

    def records(self, side: str) -> list[tuple[str, Recorded]]:
        """Replay records of one side (``weak`` or ``strong``): each question as one user
        message, keyed as a request for it is."""
        out = []
        for item in self.items:
            text = item.weak_answer if side == "weak" else item.strong_answer
            key = request_key(ChatRequest((Message.user(item.prompt),)))
            out.append((key, Recorded(text, None, ROUTELLM_MODELS[side], "stop")))
        return out


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def load_routellm_gsm8k(path: str | os.PathLike[str], *, limit: int | None = None) -> Dataset:
    """RouteLLM's GSM8K responses (a folder with ``gsm8k_responses.csv`` and
    ``contaminated_prompts.jsonl``, or the CSV), without the contaminated prompts; the first
    ``limit`` questions when given."""
    csv_path, contaminated = routellm_files(path)
    rows = read_routellm_rows(csv_path)
    skip = read_contaminated(contaminated) if contaminated is not None else set()
    weak, strong = ROUTELLM_MODELS["weak"], ROUTELLM_MODELS["strong"]
    needed = ("prompt", weak, strong, f"{weak}_response", f"{strong}_response")
    if rows:
        missing = [c for c in needed if c not in rows[0]]
        if missing:
            raise ConfigError(
                f"not RouteLLM's GSM8K responses: no column {', '.join(missing)}",
                file=str(csv_path),
            )
    items: list[Item] = []
    removed = 0
    for row in rows:
        if row["prompt"] in skip:
            removed += 1
            continue
        items.append(
            Item(
                row["prompt"],
                row[f"{weak}_response"],
                row[f"{strong}_response"],
                _truthy(row[weak]),
                _truthy(row[strong]),
            )
        )
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ConfigError("no questions to evaluate", file=str(csv_path))
    return Dataset(tuple(items), str(csv_path), len(rows), removed)


def find_data(start: str | os.PathLike[str] | None = None) -> Path | None:
    """Where RouteLLM's GSM8K data is, when not given: ``$ERPOZ_ROUTELLM_DATA``, else a
    ``shared/data/routellm-gsm8k`` folder in the current directory or one of its parents."""
    named = os.environ.get("ERPOZ_ROUTELLM_DATA")
    if named:
        return Path(named)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "data" / DATA_DIR_NAME
        if (candidate / "gsm8k_responses.csv").is_file():
            return candidate
    return None


# --- prices ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens, input and output, of the two models."""

    weak_in: float = 0.60
    weak_out: float = 0.60
    strong_in: float = 10.00
    strong_out: float = 30.00


DEFAULT_PRICES = Prices()
"""Mixtral-8x7B-Instruct at $0.60 / $0.60 per million tokens (Together AI's serverless price
when the answers were recorded, 2024) and gpt-4-1106-preview at $10 / $30 (OpenAI's price for
GPT-4 Turbo). See docs/routing.md."""


# --- results -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Point:
    """One operating point of a router: its setting, the share of questions that called the
    strong model, accuracy, PGR, and what every call cost."""

    setting: str
    threshold: float | None
    strong_share: float
    accuracy: float
    pgr: float
    cost_usd: float
    weak_calls: int
    strong_calls: int


@dataclass(slots=True)
class Curve:
    router: str
    description: str
    points: list[Point]
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    at_target: Point | None = None
    """The measured point with the fewest strong calls whose accuracy reaches the target."""


@dataclass(slots=True)
class Report:
    source: str
    questions: int
    contaminated_removed: int
    weak_accuracy: float
    strong_accuracy: float
    target_accuracy: float
    prices: Prices
    weak_only_cost_usd: float
    strong_only_cost_usd: float
    curves: list[Curve] = field(default_factory=list)
    oracle: list[Point] = field(default_factory=list)
    folds: int = 10
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pgr(acc: float, weak: float, strong: float) -> float:
    gap = strong - weak
    return (acc - weak) / gap if gap else 0.0


def _sorted(points: Sequence[Point]) -> list[Point]:
    return sorted(points, key=lambda p: (p.strong_share, p.accuracy))


def apgr(points: Sequence[Point], weak: float, strong: float) -> float | None:
    """RouteLLM's APGR: area under accuracy over the curve's own span of strong shares, less
    the weak model's, over the strong model's less the weak model's."""
    pts = _sorted(points)
    lo, hi = pts[0].strong_share, pts[-1].strong_share
    if hi <= lo or strong == weak:
        return None
    area = sum(
        (b.strong_share - a.strong_share) * (a.accuracy + b.accuracy) / 2
        for a, b in itertools.pairwise(pts)
    )
    return (area - weak * (hi - lo)) / ((strong - weak) * (hi - lo))


def cpt(points: Sequence[Point], share_of_gap: float) -> float | None:
    """The smallest share of strong calls at which the curve, straight between its points,
    reaches PGR ``share_of_gap``; ``None`` when it never does."""
    pts = _sorted(points)
    if pts[0].pgr >= share_of_gap:
        return pts[0].strong_share
    for a, b in itertools.pairwise(pts):
        if b.pgr >= share_of_gap > a.pgr:
            t = (share_of_gap - a.pgr) / (b.pgr - a.pgr)
            return a.strong_share + t * (b.strong_share - a.strong_share)
    return None


def oracle_accuracy(items: Sequence[Item], share: float) -> float:
    """RouteLLM's optimal router at a share of strong calls: the strong model answers only
    where the weak one is wrong and the strong one right, as far as the share allows."""
    n = len(items)
    right = sum(i.weak_correct for i in items)
    helps = sum(1 for i in items if not i.weak_correct and i.strong_correct)
    return (right + min(share * n, helps)) / n


# --- routers under test --------------------------------------------------------------------------
GENERAL_VALIDATORS: tuple[tuple[str, Validator], ...] = (
    ("finished", finished),
    ("arithmetic", arithmetic),
    ("final_answer", final_answer),
    ("no_hedging", no_hedging),
    ("answer_follows", answer_follows),
)
"""The cascade's validators, in the order its curve switches them on."""

WHOLE_NUMBER = FinalAnswer(whole=True)


def _whole_validators() -> tuple[Validator, ...]:
    return tuple(WHOLE_NUMBER if n == "final_answer" else v for n, v in GENERAL_VALIDATORS)


ROUTERS: dict[str, str] = {
    "random": "LoadBalanceRouter over both models, weighted p : 1-p (seeded draws); p swept",
    "learned": "ClassifierRouter: logistic regression on MiniLM embeddings of the question "
    "(k-fold), threshold swept",
    "cascade": "CascadeRouter weak → strong; the general validators switched on one by one",
    "combined": "ClassifierRouter (learned, threshold swept) over [the cascade with all "
    "validators, the strong model]",
    "cascade-whole": "as cascade, with final_answer asking for a whole number (GSM8K's "
    "answers are)",
    "combined-whole": "as combined, with final_answer asking for a whole number",
}
"""The routers ``erpoz eval routing`` knows, and what each is."""

NEEDS_EMBEDDINGS = frozenset({"learned", "combined", "combined-whole"})


class _KnownVectors:
    """An EmbedModel that answers from vectors already computed for known texts (the
    questions, embedded once in a batch), and asks ``inner`` for any other text."""

    def __init__(self, inner: EmbedModel, texts: Sequence[str], vectors: Any) -> None:
        self.name = inner.name
        self.inner = inner
        self._rows = {t: tuple(float(x) for x in v) for t, v in zip(texts, vectors, strict=True)}

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        missing = [t for t in texts if t not in self._rows]
        if missing:
            fresh = await self.inner.embed(missing)
            self._rows.update(zip(missing, fresh.vectors, strict=True))
        return EmbedResult(tuple(self._rows[t] for t in texts), self.name)


class _Harness:
    """Both replay models, metered with their prices, and a way to run every question
    through a router and score it."""

    def __init__(self, dataset: Dataset, prices: Prices) -> None:
        self.dataset = dataset
        self.items = dataset.items
        self.weak: ChatModel = Metered(
            ReplayChat(WEAK, dataset.records("weak"), source=dataset.source),
            ModelSpec(WEAK, "replay", price_in=prices.weak_in, price_out=prices.weak_out),
        )
        self.strong: ChatModel = Metered(
            ReplayChat(STRONG, dataset.records("strong"), source=dataset.source),
            ModelSpec(STRONG, "replay", price_in=prices.strong_in, price_out=prices.strong_out),
        )
        self.requests = [ChatRequest((Message.user(i.prompt),)) for i in self.items]
        self.weak_acc = dataset.weak_accuracy
        self.strong_acc = dataset.strong_accuracy

    async def run(
        self, setting: str, threshold: float | None, router_for: Callable[[int], ChatModel]
    ) -> Point:
        calls: list[dict[str, Any]] = []
        rec = Recorder(lambda k, d: calls.append(dict(d)) if k == "model_called" else None, "eval")
        token = bind(rec)
        right = escalated = 0
        try:
            for i, (item, request) in enumerate(zip(self.items, self.requests, strict=True)):
                before = len(calls)
                result = await router_for(i).generate(request)
                # scoring: the answering model's correctness column, read after the decision
                right += item.strong_correct if result.model == STRONG else item.weak_correct
                escalated += any(c["model"] == STRONG for c in calls[before:])
        finally:
            unbind(token)
        n = len(self.items)
        acc = right / n
        return Point(
            setting,
            threshold,
            escalated / n,
            acc,
            _pgr(acc, self.weak_acc, self.strong_acc),
            sum(float(c.get("cost_usd") or 0.0) for c in calls),
            sum(1 for c in calls if c["model"] == WEAK),
            sum(1 for c in calls if c["model"] == STRONG),
        )


def _folds(n: int, k: int, seed: int) -> list[int]:
    """The fold of each question: a seeded shuffle dealt into ``k`` folds."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold = [0] * n
    for rank, i in enumerate(order):
        fold[i] = rank % k
    return fold


def _quantile_thresholds(scores: Sequence[float], points: int) -> list[float]:
    """Thresholds at evenly spaced quantiles of the scores (the lowest sends every question
    to the strong model), and one above the highest (none), as RouteLLM picks them."""
    import numpy as np

    qs = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, points))
    top = float(np.nextafter(float(qs[-1]), math.inf))
    return sorted({float(q) for q in qs[:-1]} | {top})


Progress = Callable[[str, int, int], None]


def _always(router: ChatModel) -> Callable[[int], ChatModel]:
    return lambda i: router


def _by_fold(routers: Sequence[ChatModel], fold_of: Sequence[int]) -> Callable[[int], ChatModel]:
    """Each question goes to the router of its own fold (whose classifier never saw it)."""
    return lambda i: routers[fold_of[i]]


async def evaluate_routing(
    dataset: Dataset,
    routers: Iterable[str] = tuple(ROUTERS),
    *,
    prices: Prices = DEFAULT_PRICES,
    embedder: EmbedModel | None = None,
    folds: int = 10,
    points: int = 21,
    seed: int = 0,
    progress: Progress | None = None,
) -> Report:
    """Run every question through each router at each of its settings; see the module.

    ``embedder`` (MiniLM by default) embeds the questions for the learned routers;
    ``folds`` is k of the cross-validation; ``points`` the number of thresholds swept (the
    random router's weights and the learned routers' quantiles); ``seed`` fixes the random
    draws and the folds. ``progress(router, done, total)`` is told after each setting.
    """
    names = list(dict.fromkeys(routers))
    unknown = [r for r in names if r not in ROUTERS]
    if unknown:
        raise ConfigError(f"unknown router(s) {', '.join(unknown)} (known: {', '.join(ROUTERS)})")
    if points < 2:
        raise ConfigError("points: at least 2")
    h = _Harness(dataset, prices)
    n = len(h.items)
    k = max(2, min(folds, n))
    report = Report(
        dataset.source,
        n,
        dataset.contaminated_removed,
        h.weak_acc,
        h.strong_acc,
        0.95 * h.strong_acc,
        prices,
        0.0,
        0.0,
        folds=k,
        seed=seed,
    )
    shares = [i / 20 for i in range(21)]
    report.oracle = [
        Point(
            f"{s:.0%}",
            s,
            s,
            acc := oracle_accuracy(h.items, s),
            _pgr(acc, h.weak_acc, h.strong_acc),
            math.nan,
            0,
            0,
        )
        for s in shares
    ]
    weak_only = await h.run("weak only", None, _always(h.weak))
    strong_only = await h.run("strong only", None, _always(h.strong))
    report.weak_only_cost_usd = weak_only.cost_usd
    report.strong_only_cost_usd = strong_only.cost_usd

    classifiers: list[LogisticClassifier] = []
    fold_of: list[int] = []
    scores: list[float] = []
    if NEEDS_EMBEDDINGS & set(names):
        classifiers, fold_of, scores = await _cross_validated(h, embedder, k, seed)

    def tell(router: str, done: int, total: int) -> None:
        if progress is not None:
            progress(router, done, total)

    for name in names:
        curve = Curve(name, ROUTERS[name], [])
        if name == "random":
            grid = [i / (points - 1) for i in range(points)]
            for j, p in enumerate(grid):
                router = LoadBalanceRouter(
                    "random", [h.weak, h.strong], weights=[1 - p, p], seed=seed
                )
                curve.points.append(await h.run(f"p={p:.2f}", p, _always(router)))
                tell(name, j + 1, len(grid))
        elif name in ("cascade", "cascade-whole"):
            chosen = list(GENERAL_VALIDATORS)
            if name == "cascade-whole":
                chosen = [(n_, WHOLE_NUMBER if n_ == "final_answer" else v) for n_, v in chosen]
            for j in range(len(chosen) + 1):
                on = chosen[:j]
                cascade = CascadeRouter("cascade", [h.weak, h.strong], [v for _, v in on])
                setting = "+".join(n_ for n_, _ in on) if on else "validators off"
                curve.points.append(await h.run(setting, None, _always(cascade)))
                tell(name, j + 1, len(chosen) + 1)
        elif name == "learned":
            thresholds = _quantile_thresholds(scores, points)
            for j, t in enumerate(thresholds):
                by_fold = [
                    ClassifierRouter("learned", c, h.weak, h.strong, threshold=t)
                    for c in classifiers
                ]
                curve.points.append(await h.run(f"t={t:.3f}", t, _by_fold(by_fold, fold_of)))
                tell(name, j + 1, len(thresholds))
        else:  # combined, combined-whole
            validators = (
                _whole_validators()
                if name == "combined-whole"
                else tuple(v for _, v in GENERAL_VALIDATORS)
            )
            thresholds = _quantile_thresholds(scores, points)
            off = CascadeRouter("cascade", [h.weak, h.strong])
            curve.points.append(await h.run("validators off", None, _always(off)))
            for j, t in enumerate(thresholds):
                cascade = CascadeRouter("cascade", [h.weak, h.strong], validators)
                by_fold = [
                    ClassifierRouter("combined", c, cascade, h.strong, threshold=t)
                    for c in classifiers
                ]
                curve.points.append(await h.run(f"t={t:.3f}", t, _by_fold(by_fold, fold_of)))
                tell(name, j + 1, len(thresholds))
        summarize(curve, report)
        report.curves.append(curve)
    return report


def summarize(curve: Curve, report: Report) -> Curve:
    """Fill in a curve's APGR, CPT(50%), CPT(80%) and its cheapest point at the target."""
    curve.apgr = apgr(curve.points, report.weak_accuracy, report.strong_accuracy)
    curve.cpt50 = cpt(curve.points, 0.5)
    curve.cpt80 = cpt(curve.points, 0.8)
    reaching = [p for p in curve.points if p.accuracy >= report.target_accuracy - 1e-12]
    curve.at_target = min(reaching, key=lambda p: p.strong_share) if reaching else None
    return curve


async def _cross_validated(
    h: _Harness, embedder: EmbedModel | None, k: int, seed: int
) -> tuple[list[LogisticClassifier], list[int], list[float]]:
    """One classifier per fold, fitted on the other folds' questions, labelled ``True``
    where the weak answer was wrong and the strong one right; the fold of each question; and
    each question's score by the classifier of its own fold (that never saw it)."""
    import numpy as np

    if embedder is None:
        from ..models.local_embed import MiniLMEmbed

        embedder = MiniLMEmbed()
    prompts = [i.prompt for i in h.items]
    embedded = await embedder.embed(prompts)
    x: npt.NDArray[np.float64] = np.asarray(embedded.vectors, dtype=np.float64)
    known = _KnownVectors(embedder, prompts, embedded.vectors)
    y = np.asarray([(not i.weak_correct) and i.strong_correct for i in h.items], dtype=bool)
    fold_of = _folds(len(prompts), k, seed)
    folds = np.asarray(fold_of)
    classifiers = []
    scores = np.zeros(len(prompts))
    for f in range(k):
        train = folds != f
        clf = LogisticClassifier(f"learned-fold{f}", known, labels=("strong", "weak"))
        clf.fit_vectors(x[train], y[train])
        classifiers.append(clf)
        scores[~train] = clf.probabilities(x[~train])
    await asyncio.sleep(0)
    return classifiers, fold_of, [float(s) for s in scores]
