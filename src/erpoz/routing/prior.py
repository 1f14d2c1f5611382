"""An online router that starts from a static router and corrects it where the log disagrees.

:class:`PriorRouter` routes between a cheap model (or a cascade) and a strong one the way a
:class:`~erpoz.routing.learned.ClassifierRouter` does -- the strong model when a classifier's
score of ``label`` (the *prior*: typically a router fitted and tuned on another task) reaches
``threshold`` -- and learns, from the quality signals of the run log (feedback, reviews,
guards, its validators: see :mod:`erpoz.routing.online`), where on *this* traffic the prior is
wrong.

**By default** (``keep_share=False``), per model, the same Bayesian linear model of quality
as :class:`OnlineRouter`'s (a prompt's kind from its embedding's hyperplane code, and its
length). From them, the strong model's expected gain over the cheap one on the prompt, less
its mean gain over the recent prompts (``g``), is weighed against the prior by their
precisions: it calls the strong model when ``(1 - w) * (score - threshold) + w * g >= 0``,
with ``w = PRIOR_SD² / (PRIOR_SD² + (confidence * s)²)`` (``s`` the gain's posterior standard
deviation). With no evidence ``w`` is near 0 and the router *is* the static router; on a kind
of prompt it has seen much of, this traffic's evidence decides -- how many prompts go to the
strong model as well as which.

**Keeping the threshold's share** (``keep_share=True``). Per model, a Bayesian linear model
(ridge regression) of its quality signals on the prompt's whole embedding: a bias (its
overall rate, its prior 0.5 weighing half a signal) and a weight per dimension whose prior of
0 weighs ``vector_shrink`` signals; from them the strong model's expected gain ``g`` on this
prompt and its standard deviation ``s``. The threshold keeps what it was tuned for -- *how
many* prompts go to the strong model: ``share``, the part of the recent prompts whose prior
score reaches it; the evidence decides *which*: the *margin* is the gain that as many of the
recent prompts reach (the ``1 - share`` quantile of their expected gains). It calls the
strong model when ``(1 - w) * (score - threshold) + w * (g - margin) >= 0``, ``w`` as above.
It re-ranks: it does not correct a share that is wrong for this traffic (the default mode
does).

What it can observe is kept honest: a grade is only ever told for the model that answered.
Where the prior sends every prompt of a kind to the strong model, the cheap one is never
graded there; ``explore`` (a share of the decisions, default 5%) sends such a prompt to the
cheap model instead -- its cost and its quality are those of a real call, counted like any
other -- so that a prior that overspends can be corrected too. A prior that underspends (the
cheap model fails where it was trusted) is corrected from its own observed failures.

**State is a view over the log.** Each decision's ``route_decided`` event carries the prior's
score and, with ``keep_share``, the prompt's embedding (int8 with one scale, base64: about 520
characters for MiniLM's 384 dimensions); the router decides on that same quantized embedding,
so a router rebuilt from the log (another process, a restart) holds the same state.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, ModelError
from ..models import ChatModel, ChatRequest, Classifier, EmbedModel
from .cascade import Validator
from .online import (
    MEMORY,
    PRIOR_WEIGHT,
    SHRINK,
    BanditState,
    Choice,
    OnlineRouter,
    _query_text,
)

if TYPE_CHECKING:
    from ..store import Event, Store

__all__ = ["PriorRouter"]

#: The prior's own uncertainty about the strong model's gain on a prompt (a standard
#: deviation, in quality): about what four signals of a coin-flip grade pin down
#: (0.5 / sqrt(4)). Evidence whose uncertainty is below it outweighs the prior. Set by
#: reasoning, not tuned.
PRIOR_SD = 0.25

#: The exploration budget by default: a share of decisions that may try the cheap model
#: where the prior sends the strong one.
EXPLORE = 0.05

#: With ``keep_share``: how many signals' worth the prior that an embedding dimension says
#: nothing (weight 0) weighs. Chosen on GSM8K among 1, 4, 16 and 64 (bench/online_prior.py);
#: MT-Bench is held out from that choice (see docs/routing.md).
VECTOR_SHRINK = 64.0

#: How many recent decisions stand for the traffic (the prior's share, the margin).
WINDOW = 64


class PriorRouter(OnlineRouter):
    """A chat model: ``cheap`` or ``strong`` by ``classifier``'s score of ``label`` against
    ``threshold`` (the static router it starts as), corrected by what the log says of each
    model on prompts like this one (see the module). ``confidence`` scales the gain's standard
    deviation when it is weighed against the prior (``PRIOR_SD``); ``explore`` the share of
    decisions that may try ``cheap`` where the corrected prior sends ``strong``;
    ``keep_share`` keeps the share of strong calls the threshold gives and learns only which
    prompts get them, from the whole embedding (``vector_shrink``: how many signals' worth an
    embedding dimension needs to move a model's estimate); the other options are
    :class:`OnlineRouter`'s."""

    kind: ClassVar[str] = "online"

    def __init__(
        self,
        name: str,
        cheap: ChatModel,
        strong: ChatModel,
        embedder: EmbedModel,
        classifier: Classifier,
        *,
        label: str = "strong",
        threshold: float = 0.5,
        explore: float = EXPLORE,
        bits: int = 32,
        confidence: float = 1.0,
        shrink: float = SHRINK,
        keep_share: bool = False,
        vector_shrink: float = VECTOR_SHRINK,
        validators: Sequence[Validator] = (),
        validator_weight: float = 1.0,
        store: Store | str | None = None,
        refresh_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        if not isinstance(classifier, Classifier):
            raise ConfigError(
                f"router '{name}' needs a classifier (its prior), not {type(classifier).__name__}"
            )
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ConfigError(f"router '{name}': threshold is between 0 and 1, not {threshold}")
        if not confidence > 0:  # 0 would trust one grade over the prior from the first call
            raise ConfigError(f"router '{name}': confidence > 0, not {confidence}")
        if not vector_shrink > 0:
            raise ConfigError(f"router '{name}': vector_shrink > 0, not {vector_shrink}")
        super().__init__(
            name,
            [cheap, strong],
            embedder,
            target=threshold,
            explore=explore,
            bits=bits,
            confidence=confidence,
            shrink=shrink,
            validators=validators,
            validator_weight=validator_weight,
            store=store,
            refresh_s=refresh_s,
            seed=seed,
        )
        self.state: PriorState = PriorState(
            2, bits, shrink=shrink, confidence=confidence, vector_shrink=vector_shrink
        )
        self.classifier = classifier
        self.label = label
        self.threshold = threshold
        self.confidence = confidence
        self.keep_share = keep_share
        self._pending: dict[int, Any] = {}
        # the prior (and how it is corrected) is part of what makes decisions comparable
        how = f"|share|{vector_shrink}" if keep_share else ""
        self.space = self.space[:6] + _short(f"{classifier.name}|{label}{how}")

    async def prior(self, request: ChatRequest) -> float:
        """The prior's score of ``label`` for this request's last user message."""
        scores = (await self.classifier.classify(_query_text(request))).scores
        if self.label not in scores:
            raise ModelError(
                f"classifier '{self.classifier.name}' gives no score for label "
                f"'{self.label}' (it gives: {', '.join(sorted(scores)) or 'none'})",
                model=self.name,
            )
        return float(scores[self.label])

    async def code(self, request: ChatRequest) -> int:
        """The prompt's code (see :class:`~erpoz.routing.online.ContextHash`); its quantized
        embedding is kept for the decision."""
        vectors = (await self.embedder.embed([_query_text(request)])).vectors
        if not vectors:
            raise ModelError("the embedding model returned no vector", model=self.name)
        if self.keep_share:
            self._pending[id(request)] = quantized(vectors[0])
        return self.contexts.code(vectors[0])

    async def _choose(self, request: ChatRequest, code: int, tokens: int | None) -> Choice:
        embedding = self._pending.pop(id(request), None)
        prior = await self.prior(request)
        with self.state.lock:
            return self.decide(prior, code, tokens, embedding)

    def decide(self, prior: float, code: int, tokens: int | None, embedding: Any = None) -> Choice:
        """The model for a prompt whose prior score is ``prior``, of ``code``, ``tokens`` and
        (quantized, see :func:`quantized`; with ``keep_share``) ``embedding`` (see the module);
        the caller holds the state's lock."""
        if not self.keep_share:
            return self._decide_by_kind(prior, code, tokens)
        gains = self.state.gains
        share = gains.share(prior, self.threshold)
        g, spread, mean, sd = gains.evidence(embedding)
        margin = gains.margin(share)
        trust = PRIOR_SD**2 / (PRIOR_SD**2 + (self.confidence * spread) ** 2)
        lean = (1.0 - trust) * (prior - self.threshold)
        if trust > 0:  # (an infinite margin: the share is none or all)
            lean += trust * (g - margin)
        arm = 1 if lean >= 0 else 0
        low = (mean[0] - self.state.z * sd[0], mean[1])
        table = tuple((low[a], gains.weight[a]) for a in range(2))
        budget = self.state.explored < self.explore * (self.state.decisions + 1)
        if arm == 1 and self.explore > 0 and budget and self._rng.random() < self.explore:
            return Choice(
                0,
                True,
                f"explored: the cheap model where the prior ({prior:.3f}; learned gain "
                f"{g:+.3f} against the margin {margin:.3f} at weight {trust:.2f}) sends the "
                "strong one",
                table,
                prior,
                embedding,
            )
        reason = (
            f"prior {prior:.3f} against threshold {self.threshold:.3g}; learned gain {g:+.3f} "
            f"against the margin {margin:.3f} (the strong model's share {share:.2f}) at "
            f"weight {trust:.2f}: {'strong' if arm else 'cheap'}"
        )
        return Choice(arm, False, reason, table, prior, embedding)

    def evidence(self, code: int, tokens: int | None) -> tuple[float, float, Any, Any]:
        """What this traffic says of a prompt by its kind (code and length): the strong
        model's expected gain over the cheap one there, less its mean gain over the recent
        prompts; the weight that deserves against the prior (its precision over the prior's:
        0 with no evidence, towards 1 with much); and each model's mean and standard deviation
        there."""
        import numpy as np

        state = self.state
        phi = state.features([code], [tokens])
        recent = list(state.recent)
        if recent:
            around = state.features([c for c, _ in recent], [t for _, t in recent]).mean(axis=0)
        else:
            around = phi[0]
        mean, sd = state.posterior(np.vstack([phi, around[None, :]]))
        gain = float(mean[0, 1] - mean[0, 0]) - float(mean[1, 1] - mean[1, 0])
        spread = math.hypot(float(sd[0, 0]), float(sd[0, 1]))
        trust = PRIOR_SD**2 / (PRIOR_SD**2 + (self.confidence * spread) ** 2)
        return gain, trust, mean[0], sd[0]

    def _decide_by_kind(self, prior: float, code: int, tokens: int | None) -> Choice:
        gain, trust, mean, sd = self.evidence(code, tokens)
        lean = (1.0 - trust) * (prior - self.threshold) + trust * gain
        arm = 1 if lean >= 0 else 0
        low = (float(mean[0] - self.state.z * sd[0]), float(mean[1] - self.state.z * sd[1]))
        table = tuple((low[a], self.state.weight[a]) for a in range(2))
        budget = self.state.explored < self.explore * (self.state.decisions + 1)
        if arm == 1 and self.explore > 0 and budget and self._rng.random() < self.explore:
            return Choice(
                0,
                True,
                f"explored: the cheap model where the prior ({prior:.3f}; learned "
                f"{gain:+.3f} at weight {trust:.2f}) sends the strong one",
                table,
                prior,
            )
        reason = (
            f"prior {prior:.3f} against threshold {self.threshold:.3g}; learned gain "
            f"{gain:+.3f} over the usual at weight {trust:.2f}: {'strong' if arm else 'cheap'}"
        )
        return Choice(arm, False, reason, table, prior)

    def _decided(
        self,
        request: ChatRequest,
        decision: str,
        context: tuple[int, int],
        choice: Choice,
        cost: float | None,
        quality: float | None,
        *,
        error: str | None = None,
    ) -> None:
        with self.state.lock:
            self.state.note(decision, choice.embedding, choice.prior)
        super()._decided(request, decision, context, choice, cost, quality, error=error)

    def _decision_fields(self, choice: Choice) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.threshold}
        if choice.embedding is not None:
            out["embedding"] = encode_embedding(choice.embedding)
        return out

    def _learn_decision(self, e: Event, data: Mapping[str, Any], key: tuple[str, str]) -> bool:
        decision = str(data.get("decision") or "")
        prior = data.get("prior")
        if decision and isinstance(prior, int | float) and data.get("space") == self.space:
            embedding = decode_embedding(data.get("embedding"))
            with self.state.lock:
                self.state.note(decision, embedding, float(prior))
        return super()._learn_decision(e, data, key)


class PriorState(BanditState):
    """:class:`~erpoz.routing.online.BanditState` (calls, costs, the kinds of prompt by
    their code) and, beside it, :class:`EmbeddingGains`: each model's quality on the prompts'
    whole embeddings, fed by the same decisions and signals."""

    def __init__(
        self, arms: int, bits: int, *, shrink: float, confidence: float, vector_shrink: float
    ) -> None:
        super().__init__(arms, bits, shrink=shrink, confidence=confidence)
        self.gains = EmbeddingGains(vector_shrink)
        self._notes: OrderedDict[str, tuple[Any, float | None]] = OrderedDict()

    def note(self, decision: str, embedding: Any, prior: float | None) -> None:
        """What a decision about to be counted saw: the prompt's embedding and prior score."""
        self._notes[decision] = (embedding, prior)
        if len(self._notes) > 1024:  # noted but never counted (an event of another router)
            self._notes.popitem(last=False)

    def add_decision(
        self,
        decision: str,
        arm: int,
        code: int,
        cost: float | None,
        estimate: float | None,
        explored: bool,
        tokens: int | None = None,
    ) -> bool:
        new = super().add_decision(decision, arm, code, cost, estimate, explored, tokens)
        embedding, prior = self._notes.pop(decision, (None, None))
        if new:
            self.gains.add_decision(decision, arm, embedding, prior)
        return new

    def add_signal(self, decision: str, score: float, weight: float, signal: str) -> bool:
        new = super().add_signal(decision, score, weight, signal)
        if new:
            self.gains.add_signal(decision, min(1.0, max(0.0, float(score))), weight)
        return new


class EmbeddingGains:
    """Per model (cheap, strong), a Bayesian linear model of its quality signals on the
    prompts' embeddings (a bias, its prior 0.5 weighing ``PRIOR_WEIGHT`` signals; a weight per
    dimension, its prior 0 weighing ``shrink`` signals), kept as ``A⁻¹`` and ``b`` (sums: the
    same whatever order the log is read in); and the recent decisions' prior scores and
    embeddings, which stand for the traffic."""

    def __init__(self, shrink: float, window: int = WINDOW) -> None:
        self.shrink = shrink
        self.dims = 0
        self._inv: Any = None
        self._b: Any = None
        self._theta: Any = None
        self.weight = [0.0, 0.0]
        self.total = [0.0, 0.0]
        self._arm_of: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self.recent: deque[tuple[float, Any]] = deque(maxlen=window)

    def _start(self, dims: int) -> None:
        import numpy as np

        self.dims = dims
        prior = np.diag([PRIOR_WEIGHT] + [self.shrink] * dims)
        self._inv = np.repeat(np.linalg.inv(prior)[None], 2, axis=0)
        self._b = np.zeros((2, dims + 1))
        self._b[:, 0] = PRIOR_WEIGHT * 0.5
        self._theta = np.einsum("aij,aj->ai", self._inv, self._b)

    def _phi(self, embedding: Any) -> Any:
        """The features of an embedding (1, then the embedding), or ``None`` when it does not
        fit the model (absent, or of another length than the first one seen)."""
        import numpy as np

        if embedding is None:
            return None
        v = np.asarray(embedding, dtype=np.float64).ravel()
        if not self.dims and len(v):
            self._start(len(v))
        if len(v) != self.dims:
            return None
        return np.concatenate(([1.0], v))

    def add_decision(self, decision: str, arm: int, embedding: Any, prior: float | None) -> None:
        phi = self._phi(embedding)
        if prior is not None:
            self.recent.append((prior, phi))
        if phi is None:
            return
        self._arm_of[decision] = (arm, phi)
        if len(self._arm_of) > MEMORY:
            self._arm_of.popitem(last=False)

    def add_signal(self, decision: str, score: float, weight: float) -> None:
        known = self._arm_of.get(decision)
        if known is None:
            return
        arm, phi = known
        inv = self._inv[arm]
        v = inv @ phi  # Sherman-Morrison: (A + w φφᵀ)⁻¹ from A⁻¹
        inv -= (weight / (1.0 + weight * float(phi @ v))) * (v[:, None] * v[None, :])
        self._b[arm] += weight * score * phi
        self._theta[arm] = inv @ self._b[arm]
        self.weight[arm] += weight
        self.total[arm] += weight * score

    def _noise(self) -> Any:
        import numpy as np

        p = np.asarray([(self.total[a] + 1.0) / (self.weight[a] + 2.0) for a in range(2)])
        return np.sqrt(np.clip(p * (1.0 - p), 0.01, 0.25))

    def evidence(self, embedding: Any) -> tuple[float, float, list[float], list[float]]:
        """The strong model's expected gain over the cheap one on a prompt, its standard
        deviation, and each model's mean and standard deviation there (no evidence: a gain
        of 0 with a standard deviation that gives the prior all the weight)."""
        phi = self._phi(embedding)
        if phi is None:
            return 0.0, math.inf, [0.5, 0.5], [0.5, 0.5]
        mean = [min(1.0, max(0.0, float(self._theta[a] @ phi))) for a in range(2)]
        noise = self._noise()
        sd = [
            float(noise[a]) * math.sqrt(max(float(phi @ self._inv[a] @ phi), 0.0)) for a in (0, 1)
        ]
        gain = float(self._theta[1] @ phi - self._theta[0] @ phi)
        return gain, math.hypot(sd[0], sd[1]), mean, sd

    def share(self, prior: float, threshold: float) -> float:
        """The part of the recent prompts, this one included, whose prior score reaches the
        threshold."""
        scores = [p for p, _ in self.recent] + [prior]
        return sum(p >= threshold for p in scores) / len(scores)

    def margin(self, share: float) -> float:
        """The expected gain that ``share`` of the recent prompts reach (``inf`` for none,
        ``-inf`` for all; 0 with no embeddings seen)."""
        import numpy as np

        if share <= 0.0:
            return math.inf
        if share >= 1.0:
            return -math.inf
        rows = [phi for _, phi in self.recent if phi is not None]
        if not rows:
            return 0.0
        x = np.vstack(rows)
        gains = x @ self._theta[1] - x @ self._theta[0]
        return float(np.quantile(gains, 1.0 - share))


def quantized(vector: Sequence[float]) -> tuple[float, ...]:
    """An embedding as the log keeps it: int8 steps of its largest component / 127."""
    return decode_embedding(encode_embedding(vector)) or ()


def encode_embedding(vector: Sequence[float]) -> dict[str, Any]:
    """``{"scale": s, "int8": base64}`` of an embedding (see :func:`quantized`)."""
    import numpy as np

    v = np.asarray(vector, dtype=np.float64)
    scale = float(np.abs(v).max()) if len(v) else 0.0
    steps = np.round(v / scale * 127.0) if scale > 0 else np.zeros(len(v))
    raw = np.clip(steps, -127, 127).astype(np.int8).tobytes()
    return {"scale": scale, "int8": base64.b64encode(raw).decode("ascii")}


def decode_embedding(data: Any) -> tuple[float, ...] | None:
    """The embedding of :func:`encode_embedding`'s form; ``None`` for anything else."""
    import numpy as np

    if not isinstance(data, Mapping):
        return None
    scale, raw = data.get("scale"), data.get("int8")
    if not isinstance(scale, int | float) or not isinstance(raw, str):
        return None
    try:
        steps = np.frombuffer(base64.b64decode(raw, validate=True), dtype=np.int8)
    except ValueError:
        return None
    return tuple(float(x) for x in steps.astype(np.float64) * (float(scale) / 127.0))


def _short(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:6]
