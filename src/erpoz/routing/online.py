"""Routing from observed quality: a contextual bandit that learns from the run log.

:class:`OnlineRouter` sends each request to one of its models. It learns, per model and per
*kind of prompt*, how good the answers were -- from the quality signals the log already holds:

- its own validators' verdicts on the answer (abstentions teach nothing);
- ``guard_decided`` events at the ``model_output`` checkpoint of its calls (passed or not);
- ``review_resolved`` events of the step that called it (approve 1, edit 0.5, reject 0);
- ``feedback`` events a step emits (``ctx.emit("feedback", {"score": 0.0})`` after the call,
  or later and elsewhere with ``{"decision": <id>, "router": <name>, "score": s}``; ``s`` in
  [0, 1]);

and what each model cost (the ``model_called`` costs of its calls). It sends traffic to the
cheapest mix of models whose *pessimistic* estimate of quality (a lower confidence bound) keeps
the expected quality over the traffic seen at or above ``target``, and spends at most
``explore`` of its decisions on the model a Thompson draw from the posteriors prefers (a
cheaper one only where it might be good enough: safe exploration).

**Kinds of prompt.** The prompt's embedding (MiniLM, or any embedding model; a
:class:`HashingEmbed` of its words where none is wanted) is hashed by ``bits`` seeded random
hyperplanes into a code: prompts alike share most bits. A model's quality on a prompt is a
Bayesian linear model of its signals on the code's bits and the prompt's length, shrunk
towards the model's overall rate (see :class:`BanditState`); with little evidence on a kind,
its estimate stays near that rate and its uncertainty is wide.

**State is a view over the log.** Every decision is a ``route_decided`` event (kind
``online``) carrying its id, the prompt's code and length, the model, what it cost and its
validators' score; the state is a sum over such events and the signals that refer to them,
the same in whatever order they are read. :meth:`OnlineRouter.sync` reads the store's new
events (every ``refresh_s`` seconds on its own, when given a store), so a restarted process,
or several workers sharing a PostgreSQL store, route from the same evidence.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BudgetExceeded, ConfigError, ModelError
from ..models import (
    ChatModel,
    ChatRequest,
    ChatResult,
    EmbedModel,
    EmbedResult,
    Message,
    Recorder,
    StreamChunk,
    bind,
    current_recorder,
    unbind,
)
from ._decision import (
    FALL_THROUGH,
    Verdict,
    cost_field,
    decided,
    members_of,
    prompt_tokens,
    routed,
)
from .cascade import Validator

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ..store import Event, Store

__all__ = [
    "BanditState",
    "Choice",
    "ContextHash",
    "HashingEmbed",
    "OnlineRouter",
    "feedback",
]

KIND = "online"
#: How many decisions (and signals) the state remembers by id, to attach late signals.
MEMORY = 200_000
_REVIEW_SCORES = {"approve": 1.0, "edit": 0.5, "reject": 0.0}
#: How many signals' worth a model's uninformed prior (overall quality 0.5) weighs.
PRIOR_WEIGHT = 0.5
#: How many signals' worth the prior that a kind of prompt is like the rest weighs: the
#: shrinkage of the per-kind estimate towards the model's overall rate.
SHRINK = 4.0
#: The price of quality is set again after this many decisions and signals.
REPRICE = 128


# --- features ---------------------------------------------------------------------------------
class HashingEmbed:
    """An :class:`~erpoz.models.EmbedModel` without weights: each word and pair of words adds
    +1 or -1 (by hash) to one of ``dims`` dimensions. Instant and offline; prompts that share
    words land near each other. The cheap stand-in for MiniLM (tests, tiny deployments)."""

    _WORD = re.compile(r"[a-z0-9]+")

    def __init__(self, dims: int = 256, name: str = "hashing") -> None:
        if dims < 8:
            raise ConfigError(f"hashing embedding: dims >= 8, not {dims}")
        self.dims = dims
        self.name = name

    def vector(self, text: str) -> tuple[float, ...]:
        v = [0.0] * self.dims
        words = self._WORD.findall(text.lower())
        for token in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
            v[h % self.dims] += 1.0 if (h >> 63) else -1.0
        norm = math.hypot(*v) or 1.0
        return tuple(x / norm for x in v)

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        return EmbedResult(tuple(self.vector(t) for t in texts), self.name)


class ContextHash:
    """The kind of a prompt: the signs of its embedding against ``bits`` random hyperplanes
    (seeded, so every process draws the same), as an integer code. Prompts alike share most
    bits; the code is what the log records of a prompt."""

    def __init__(self, bits: int = 32, seed: int = 0) -> None:
        if not 0 <= bits <= 62:
            raise ConfigError(f"online router: bits is 0 to 62, not {bits}")
        self.bits = bits
        self.seed = seed
        self._planes: npt.NDArray[np.float64] | None = None

    def code(self, vector: Sequence[float]) -> int:
        import numpy as np

        if self.bits == 0:
            return 0
        x = (
            vector
            if isinstance(vector, np.ndarray)
            else np.fromiter(vector, np.float64, len(vector))
        )
        planes = self._planes
        if planes is None or planes.shape[1] != x.shape[0]:
            planes = np.random.default_rng(self.seed).standard_normal((self.bits, x.shape[0]))
            self._planes = planes
        packed = np.packbits((planes @ x) > 0).tobytes()  # first plane the highest bit
        return int.from_bytes(packed, "big") >> (-self.bits % 8)


# --- the state --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Choice:
    """A decision: the model's index, whether it explored, why, and each model's estimate."""

    arm: int
    explored: bool
    reason: str
    estimates: tuple[tuple[float, float], ...]  # (pessimistic quality, evidence) per model
    prior: float | None = None  # a prior router's score, where one decided (see prior.py)
    embedding: Any = None  # the prompt's embedding, where the decision used it (see prior.py)


class BanditState:
    """Sums over decisions and signals -- what the log says -- and the routing they imply.

    Per model, a Bayesian linear model of the quality signals it received on the features of
    their prompts' codes: a bias (the model's overall rate, its prior 0.5 weighing
    :data:`PRIOR_WEIGHT` signals) and one feature per bit (±1, scaled to unit length) whose
    weights have a prior of 0 weighing ``shrink`` signals -- so a kind of prompt departs from
    the model's overall rate only as far as its own evidence carries it (shrinkage towards the
    global rate). Its state is ``A = prior + sum w·φφᵀ`` and ``b = sum w·φ·y``: sums, the same
    whatever order events are read in. A decision is two small matrix products per model:
    its cost does not grow with the evidence. Per model, calls and cost too. The codes of the
    last ``window`` decisions stand for the traffic when the price of quality is set.
    """

    def __init__(
        self,
        arms: int,
        bits: int,
        *,
        shrink: float = SHRINK,
        confidence: float = 1.0,
        window: int = 64,
        kept: int = 20_000,
        memory: int = MEMORY,
    ) -> None:
        import numpy as np

        if shrink <= 0:
            raise ConfigError(f"online router: shrink > 0, not {shrink}")
        self.arms = arms
        self.bits = bits
        self.dim = bits + 2
        self.z = confidence
        self.memory = memory
        self.kept = kept
        self.obs: list[list[tuple[int, float, float]]] = [[] for _ in range(arms)]
        prior = np.diag([PRIOR_WEIGHT] + [shrink] * (bits + 1))
        self._inv = np.repeat(np.linalg.inv(prior)[None], arms, axis=0)  # A⁻¹ per model
        self._b = np.zeros((arms, self.dim))
        self._b[:, 0] = PRIOR_WEIGHT * 0.5
        self._theta = np.einsum("aij,aj->ai", self._inv, self._b)
        self._shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
        self._scale = 1.0 / math.sqrt(bits) if bits else 1.0
        # ±1/√bits for each bit of each byte value, highest bit first
        self._bits_of = (
            np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1) * 2.0 - 1.0
        ) * self._scale
        self.weight = [0.0] * arms
        self.total = [0.0] * arms
        self.calls = [0] * arms
        self.cost = [0.0] * arms
        self.estimated = [0.0] * arms
        self.estimates = [0] * arms
        self.decisions = 0
        self.explored = 0
        self.signals = 0
        self.recent: deque[tuple[int, int | None]] = deque(maxlen=window)
        self._decided: OrderedDict[str, tuple[int, int, int | None]] = OrderedDict()
        self._signalled: OrderedDict[str, None] = OrderedDict()
        self._mu: float | None = None
        self._mu_target = -1.0
        self._dirty = 0
        self._costs: Any = None
        self._noise: Any = None
        self.lock = threading.Lock()

    # --- updates --------------------------------------------------------------------------
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
        """Count a decision once (by id); ``False`` when it was already counted. ``tokens``
        is the prompt's length (``None``: unknown)."""
        if decision in self._decided or not 0 <= arm < self.arms:
            return False
        self._decided[decision] = (arm, code, tokens)
        if len(self._decided) > self.memory:
            self._decided.popitem(last=False)
        self.recent.append((code, tokens))
        self.decisions += 1
        self.explored += explored
        if cost is not None:
            self.calls[arm] += 1
            self.cost[arm] += cost
        if estimate is not None:
            self.estimated[arm] += estimate
            self.estimates[arm] += 1
        self._dirty += 1
        if self._costs is not None and self.calls[arm] <= 1:
            self._costs = None  # a model's first cost: the estimate changes much
        return True

    def add_signal(self, decision: str, score: float, weight: float, signal: str) -> bool:
        """A quality signal (``score`` in [0, 1]) about a decision, once (by ``signal`` id);
        ``False`` when the decision is unknown (too old, or another router's) or seen."""
        where = self._decided.get(decision)
        if where is None or signal in self._signalled or weight <= 0:
            return False
        self._signalled[signal] = None
        if len(self._signalled) > self.memory:
            self._signalled.popitem(last=False)
        arm, code, tokens = where
        score = min(1.0, max(0.0, float(score)))
        obs = self.obs[arm]
        obs.append((code, score, weight))
        if len(obs) > self.kept:
            del obs[: len(obs) - self.kept]
        phi = self.features([code], [tokens])[0]
        inv = self._inv[arm]
        v = inv @ phi  # Sherman-Morrison: (A + w φφᵀ)⁻¹ from A⁻¹
        inv -= (weight / (1.0 + weight * float(phi @ v))) * (v[:, None] * v[None, :])
        self._b[arm] += weight * score * phi
        self._theta[arm] = inv @ self._b[arm]
        self.weight[arm] += weight
        self.total[arm] += weight * score
        self.signals += 1
        self._dirty += 1
        self._noise = None
        return True

    def warm_start(
        self, codes: Sequence[int], tokens: Sequence[int | None], grades: Any, weight: float
    ) -> None:
        """A prior from another task (transfer): every model's grade (``grades``, models ×
        prompts, each in [0, 1]) on prompts of ``codes`` and ``tokens``, counted as
        ``weight`` signals per model in all -- a few, so that this task's own evidence
        overrides it within some dozens of its signals. It is part of the prior, not of the
        log: a rebuild from the log must be given it again."""
        import numpy as np

        g = np.asarray(grades, dtype=np.float64)
        if weight <= 0 or not len(codes):
            return
        if g.shape != (self.arms, len(codes)) or not np.all((g >= 0) & (g <= 1)):
            raise ConfigError(
                f"online router: warm-start grades are {self.arms} models × {len(codes)} "
                f"prompts, each in [0, 1] (got shape {g.shape})"
            )
        phi = self.features(codes, tokens)
        w = weight / len(codes)
        for a in range(self.arms):
            a_matrix = np.linalg.inv(self._inv[a]) + w * phi.T @ phi
            self._inv[a] = np.linalg.inv(a_matrix)
            self._b[a] += w * phi.T @ g[a]
            self._theta[a] = self._inv[a] @ self._b[a]
            self.weight[a] += weight
            self.total[a] += weight * float(g[a].mean())
        self._noise = None
        self._mu = None

    def known(self, decision: str) -> bool:
        return decision in self._decided

    # --- estimates ------------------------------------------------------------------------
    def features(self, codes: Sequence[int], tokens: Sequence[int | None] | None = None) -> Any:
        """φ of each prompt (a matrix, prompts × (bits + 2)): 1; its length (see
        :func:`length_feature`; 0 when unknown); each bit of its code as ±1/√bits."""
        import numpy as np

        lengths = [length_feature(t) for t in tokens] if tokens else [0.0] * len(codes)
        if len(codes) == 1 and self.bits:
            bits = self._bits_of[
                np.frombuffer(int(codes[0]).to_bytes(8, "big"), dtype=np.uint8)
            ].ravel()[64 - self.bits :]
            return np.concatenate(([1.0, lengths[0]], bits))[None, :]
        c = np.asarray(codes, dtype=np.uint64)
        phi = np.ones((len(c), self.dim))
        phi[:, 1] = lengths
        if self.bits:
            on = (c[:, None] >> self._shifts[None, :]) & np.uint64(1)
            phi[:, 2:] = (on.astype(np.float64) * 2.0 - 1.0) * self._scale
        return phi

    def _spread(self) -> Any:
        """Each model's noise (standard deviation of one signal), from its overall rate."""
        import numpy as np

        if self._noise is None:
            p = np.asarray([self.overall(a) for a in range(self.arms)])
            self._noise = np.sqrt(np.clip(p * (1.0 - p), 0.01, 0.25))
        return self._noise

    def posterior(self, phi: Any) -> tuple[Any, Any]:
        """Mean and standard deviation of every model's quality at features ``phi``
        (rows × models each)."""
        import numpy as np

        mean = np.clip(phi @ self._theta.T, 0.0, 1.0)
        # φᵀ A⁻¹ φ per row and model
        if len(phi) == 1:
            var = ((self._inv @ phi[0]) @ phi[0])[None, :]
        else:
            var = np.einsum("rj,aij,ri->ra", phi, self._inv, phi)
        return mean, np.sqrt(np.maximum(var, 0.0)) * self._spread()[None, :]

    def estimates_of(
        self, codes: Sequence[int], tokens: Sequence[int | None] | None = None
    ) -> tuple[Any, Any]:
        """Mean and pessimistic quality of every model on prompts of ``codes`` (two arrays,
        codes × models). The strongest model (listed last) is the safe default: its bound is
        its mean; a cheaper one must show with confidence that it is good enough."""
        mean, sd = self.posterior(self.features(codes, tokens))
        low = mean - self.z * sd
        low[:, -1] = mean[:, -1]
        return mean, low

    def overall(self, arm: int) -> float:
        """The model's mean observed quality over all prompts (0.5 before any signal)."""
        return (self.total[arm] + 1.0) / (self.weight[arm] + 2.0)

    def relative_target(self, share: float) -> float:
        """``share`` of the best model's observed quality (over all prompts)."""
        return share * max(self.overall(a) for a in range(self.arms))

    def unit_costs(self) -> list[float]:
        """What a call of each model costs: its mean observed cost, else its mean estimate,
        else its rank times the cheapest known (models are listed cheap to strong)."""
        out: list[float | None] = []
        for a in range(self.arms):
            if self.calls[a]:
                out.append(self.cost[a] / self.calls[a])
            elif self.estimates[a]:
                out.append(self.estimated[a] / self.estimates[a])
            else:
                out.append(None)
        known = [c for c in out if c is not None]
        base = min(known) if known else 1.0
        return [base * (a + 1) if c is None else c for a, c in enumerate(out)]

    def _unit_costs(self) -> Any:
        import numpy as np

        if self._costs is None:
            self._costs = np.asarray(self.unit_costs())
        return self._costs

    def price(self, target: float) -> float:
        """The price of quality: the largest ``mu`` (quality per USD given up) at which
        choosing ``argmax pessimistic quality - mu * cost`` for the recent prompts keeps their
        mean pessimistic quality at ``target``; 0 when even the best choice falls short."""
        import numpy as np

        if self._mu is not None and self._dirty < REPRICE and self._mu_target == target:
            return self._mu
        self._costs = None  # mean costs, refreshed as often as the price
        mu = 0.0
        if self.recent:
            _, low = self.estimates_of([c for c, _ in self.recent], [t for _, t in self.recent])
            costs = self._unit_costs()
            rows = np.arange(len(low))

            def quality(m: float) -> float:
                return float(low[rows, _argbest(low, costs, m)].mean())

            if quality(0.0) >= target:
                hi = 4.0 / max(float(costs.max() - costs.min()), 1e-12)
                while quality(hi) >= target and hi < 1e15:
                    hi *= 4.0
                lo = 0.0
                for _ in range(30):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if quality(mid) >= target else (lo, mid)
                mu = lo
        self._mu, self._mu_target = mu, target
        self._dirty = 0
        return mu

    def choose(
        self,
        code: int,
        target: float,
        explore: float,
        rng: random.Random,
        tokens: int | None = None,
    ) -> Choice:
        """The model for a prompt of ``code`` and ``tokens`` (its length):
        the best by ``quality - mu * cost`` with pessimistic quality; or, within the
        exploration budget, the model a Thompson draw from the posterior prefers: a dearer
        one, or a cheaper one whose optimistic bound still reaches the target here (safe
        exploration)."""
        mu = self.price(target)
        phi = self.features([code], [tokens])[0]
        # plain floats from here: a handful of models, so no more array calls
        centre: list[float] = (self._theta @ phi).tolist()
        var: list[float] = ((self._inv @ phi) @ phi).tolist()
        noise: list[float] = self._spread().tolist()
        costs: list[float] = self._unit_costs().tolist()
        mean = [min(1.0, max(0.0, m)) for m in centre]
        sd = [math.sqrt(max(v, 0.0)) * n for v, n in zip(var, noise, strict=True)]
        low = [m - self.z * s for m, s in zip(mean, sd, strict=True)]
        low[-1] = mean[-1]
        arm = _best(low, costs, mu)
        table = tuple((low[a], self.weight[a]) for a in range(self.arms))
        if explore > 0 and self.explored < explore * (self.decisions + 1):
            draw = [m + s * rng.gauss(0.0, 1.0) for m, s in zip(mean, sd, strict=True)]
            other = _best(draw, costs, mu)
            upper = mean[other] + self.z * sd[other]
            # a cheaper model only where it might be good enough; a dearer one may always be
            # tried (it costs, but risks no quality): no model is written off for good
            if other != arm and (costs[other] > costs[arm] or upper >= target):
                return Choice(
                    other,
                    True,
                    f"explored: a posterior draw prefers it ({upper:.3f} upper bound, "
                    f"target {target:.3g})",
                    table,
                )
        reason = (
            f"best quality - {mu:.3g}/USD × cost for target {target:.3g}"
            if mu > 0
            else f"target {target:.3g} not reached by the evidence: the best estimate"
        )
        return Choice(arm, False, reason, table)


def length_feature(tokens: int | None) -> float:
    """A prompt's length as a feature: ``ln(tokens / 128) / 2``, within ±2 (0 when
    unknown). Longer prompts are often harder ones."""
    if tokens is None or tokens <= 0:
        return 0.0
    return max(-2.0, min(2.0, math.log(tokens / 128.0) / 2.0))


def _best(quality: Sequence[float], costs: Sequence[float], mu: float) -> int:
    """:func:`_argbest` of one prompt, in plain floats."""
    value = [q - mu * c for q, c in zip(quality, costs, strict=True)]
    top = max(value)
    hits = [a for a, v in enumerate(value) if v == top]
    return hits[-1] if mu == 0 else hits[0]


def _argbest(quality: Any, costs: Any, mu: float) -> Any:
    """Per row, ``argmax quality - mu * cost``; ties to the stronger (later) model at
    ``mu == 0`` and to the cheaper one otherwise."""
    import numpy as np

    value = quality - mu * costs[None, :]
    if mu == 0:
        return value.shape[1] - 1 - np.argmax(value[:, ::-1], axis=1)
    return np.argmax(value, axis=1)


# --- feedback -------------------------------------------------------------------------------
def feedback(
    score: float, *, decision: str | None = None, router: str | None = None
) -> dict[str, Any]:
    """The data of a ``feedback`` event: ``ctx.emit("feedback", feedback(0.0))`` after a call
    in the same step, or with the ``decision`` id (and ``router``) from anywhere later."""
    if not 0.0 <= score <= 1.0 or math.isnan(score):
        raise ValueError(f"a feedback score is between 0 and 1, not {score}")
    data: dict[str, Any] = {"score": float(score)}
    if decision is not None:
        data["decision"] = decision
    if router is not None:
        data["router"] = router
    return data


# --- the router -------------------------------------------------------------------------------
class OnlineRouter:
    """A chat model that routes to the cheapest mix of ``models`` (listed cheap to strong)
    keeping the observed quality at ``target``, learning from the log (see the module).

    ``embedder`` embeds prompts (MiniLM; :class:`HashingEmbed` offline); ``bits`` is the
    number of hyperplanes of a prompt's code; ``explore`` the share of decisions that may try
    another model; ``confidence`` the width (in standard errors) of the pessimistic bound;
    ``shrink`` how many signals' worth of evidence a kind of prompt needs to depart halfway
    from the model's overall rate; ``validators`` judge each
    answer (their verdict is a signal of weight ``validator_weight``); ``store`` the run store
    to learn from (an object, or a URL opened on first use), read again every ``refresh_s``.
    """

    kind: ClassVar[str] = KIND

    def __init__(
        self,
        name: str,
        models: Sequence[ChatModel],
        embedder: EmbedModel,
        *,
        target: float = 0.9,
        relative: bool = False,
        explore: float = 0.1,
        bits: int = 32,
        confidence: float = 1.0,
        shrink: float = SHRINK,
        validators: Sequence[Validator] = (),
        validator_weight: float = 1.0,
        store: Store | str | None = None,
        refresh_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        if not isinstance(embedder, EmbedModel):
            raise ConfigError(
                f"router '{name}' needs an embedding model, not {type(embedder).__name__}"
            )
        if not 0.0 <= target <= 1.0:
            raise ConfigError(f"router '{name}': target is between 0 and 1, not {target}")
        if not 0.0 <= explore <= 1.0:
            raise ConfigError(f"router '{name}': explore is between 0 and 1, not {explore}")
        self.name = name
        self._members = members_of(name, models)
        self.models = tuple(m.model for m in self._members)
        self.embedder = embedder
        self.target = target
        self.relative = relative
        self.explore = explore
        self.contexts = ContextHash(bits, seed)
        self.state = BanditState(len(self.models), bits, shrink=shrink, confidence=confidence)
        self.validators = tuple(validators)
        self.validator_weight = validator_weight
        self.space = _space(embedder.name, bits, seed, [m.name for m in self._members])
        self._store_ref = store
        self._store: Store | None = (
            store if store is not None and not isinstance(store, str) else None
        )
        self.refresh_s = refresh_s
        self._synced = -math.inf
        self._sync_lock: asyncio.Lock | None = None
        self._cursor: dict[str, int] = {}
        self._last: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._rng = random.Random(seed)
        self._index = {m.name: i for i, m in enumerate(self._members)}

    # --- routing --------------------------------------------------------------------------
    def estimate(self, request: ChatRequest) -> float | None:
        """What the cheapest model would cost (others cost more)."""
        return self._members[0].cost(request)

    async def code(self, request: ChatRequest) -> int:
        """The kind of this prompt (see :class:`ContextHash`)."""
        vectors = (await self.embedder.embed([_query_text(request)])).vectors
        if not vectors:
            raise ModelError("the embedding model returned no vector", model=self.name)
        return self.contexts.code(vectors[0])

    async def generate(self, request: ChatRequest) -> ChatResult:
        await self._maybe_sync()
        code = await self.code(request)
        tokens = prompt_tokens(request)
        choice = await self._choose(request, code, tokens)
        member = self._members[choice.arm]
        decision = _decision_id()
        spent: list[float] = []
        token = _tally(spent)
        try:
            result = await member.model.generate(request)
        except BudgetExceeded:
            raise
        except FALL_THROUGH as exc:
            self._decided(request, decision, (code, tokens), choice, None, None, error=str(exc))
            raise
        finally:
            if token is not None:
                unbind(token)
        cost = sum(spent) if token is not None else result.cost_usd
        quality = await self._validate(request, result)
        self._decided(request, decision, (code, tokens), choice, cost, quality)
        return routed(result, self.name)

    async def _choose(self, request: ChatRequest, code: int, tokens: int | None) -> Choice:
        """The model for this request, from the state (see :meth:`BanditState.choose`)."""
        with self.state.lock:
            target = self.state.relative_target(self.target) if self.relative else self.target
            return self.state.choose(code, target, self.explore, self._rng, tokens)

    async def warm_start(
        self, prompts: Sequence[str], grades: Sequence[Sequence[float]], weight: float = 8.0
    ) -> None:
        """Start from another task's evidence (transfer): ``grades[m][i]`` in [0, 1] is how
        good model ``m`` (in the order of ``models``) was on ``prompts[i]`` -- recorded
        answers of every model, as in RouteLLM's data sets -- counted as ``weight`` signals
        per model in all (see :meth:`BanditState.warm_start`). Call it before routing, and
        again after a restart: it is a prior, not part of the log."""
        if len(grades) != len(self.models) or any(len(g) != len(prompts) for g in grades):
            raise ConfigError(
                f"router '{self.name}': warm start needs a grade per model "
                f"({len(self.models)}) per prompt ({len(prompts)})"
            )
        if not prompts:
            return
        vectors = (await self.embedder.embed(list(prompts))).vectors
        codes = [self.contexts.code(v) for v in vectors]
        tokens = [prompt_tokens(ChatRequest((Message.user(p),))) for p in prompts]
        with self.state.lock:
            self.state.warm_start(codes, tokens, grades, weight)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The answer in one chunk: it is judged (and costed) whole."""
        result = await self.generate(request)
        yield StreamChunk(result.text)
        yield StreamChunk("", result)

    async def _validate(self, request: ChatRequest, result: ChatResult) -> float | None:
        """The validators' score of the answer: the least of the verdicts that judged it
        (``None`` when all abstained, or there are none)."""
        scores = []
        for v in self.validators:
            out: Any = v(request, result)
            if inspect.isawaitable(out):
                out = await out
            if isinstance(out, Verdict):
                if out.abstained:
                    continue
                scores.append(out.score if out.score is not None else float(out.ok))
                if not out.ok:
                    scores[-1] = min(scores[-1], 0.0)
            elif isinstance(out, int | float):  # bool included
                scores.append(float(out))
        return min(scores) if scores else None

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
        code, tokens = context
        member = self._members[choice.arm]
        estimates = [m.cost(request, tokens) for m in self._members]
        estimate = estimates[choice.arm]
        with self.state.lock:
            self.state.add_decision(
                decision, choice.arm, code, cost, estimate, choice.explored, tokens
            )
            if quality is not None:
                self.state.add_signal(decision, quality, self.validator_weight, decision + ":v")
        candidates = [
            {
                "model": m.name,
                "quality_lcb": round(lo, 4),
                "evidence": round(ev, 1),
                "estimate_usd": cost_field(e),
            }
            for m, e, (lo, ev) in zip(self._members, estimates, choice.estimates, strict=True)
        ]
        extra: dict[str, Any] = {
            "decision": decision,
            "context": code,
            "tokens": tokens,
            "space": self.space,
            "explored": choice.explored,
            "cost_usd": cost_field(cost),
            "estimate_usd": cost_field(estimate),
            "target": self.target,
        }
        if choice.prior is not None:
            extra["prior"] = round(choice.prior, 4)
            extra.update(self._decision_fields(choice))
        if quality is not None:
            extra["quality"] = round(quality, 4)
        if error is not None:
            extra["error"] = error
        decided(self.name, KIND, candidates, member.name, choice.reason, **extra)

    def _decision_fields(self, choice: Choice) -> dict[str, Any]:
        """Fields a kind of online router adds to its ``route_decided`` events."""
        return {}

    # --- learning from the log --------------------------------------------------------------
    def learn(self, events: Iterable[Event]) -> int:
        """Take in events of one run, in order (the router's decisions and the signals about
        them); returns how many changed the state. Events already counted count once."""
        changed = 0
        for e in events:
            changed += self._learn_one(e)
        return changed

    def _learn_one(self, e: Event) -> bool:
        data = e.data or {}
        key = (e.run_id, e.step or "")
        if e.kind == "route_decided":
            return self._learn_decision(e, data, key)
        decision = self._last.get(key)
        if e.kind == "guard_decided":
            if data.get("checkpoint") != "model_output" or data.get("model") != self.name:
                return False
            score, weight = (1.0 if data.get("passed") else 0.0), 1.0
        elif e.kind == "review_resolved":
            score, weight = _REVIEW_SCORES.get(str(data.get("decision")), -1.0), 1.0
        elif e.kind == "feedback":
            if data.get("router") not in (None, self.name):
                return False
            decision = str(data.get("decision") or "") or decision
            score, weight = _number(data.get("score"), -1.0), _number(data.get("weight"), 1.0)
        else:
            return False
        if decision is None or not 0.0 <= score <= 1.0:
            return False
        with self.state.lock:
            return self.state.add_signal(decision, score, weight, f"{e.run_id}:{e.seq}")

    def _learn_decision(self, e: Event, data: Mapping[str, Any], key: tuple[str, str]) -> bool:
        if data.get("router") != self.name or data.get("kind") != KIND:
            return False
        if data.get("space") != self.space:
            return False  # made with other settings (embedding, bits, models): not comparable
        decision = str(data.get("decision") or "")
        arm = self._index.get(str(data.get("winner")))
        code = data.get("context")
        if not decision or arm is None or not isinstance(code, int):
            return False
        self._last[key] = decision
        self._last.move_to_end(key)
        if len(self._last) > MEMORY:
            self._last.popitem(last=False)
        cost = data.get("cost_usd")
        tokens = data.get("tokens")
        with self.state.lock:
            new = self.state.add_decision(
                decision,
                arm,
                code,
                float(cost) if isinstance(cost, int | float) else None,
                _number(data.get("estimate_usd"), None),
                bool(data.get("explored")),
                tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
            )
            quality = data.get("quality")
            if isinstance(quality, int | float):
                new |= self.state.add_signal(
                    decision, float(quality), self.validator_weight, decision + ":v"
                )
        return new

    async def sync(self, store: Store | None = None) -> int:
        """Read what the store recorded since the last sync (every run's new events) and
        learn from it; returns how many events changed the state."""
        store = store or self._open_store()
        if store is None:
            return 0
        changed = 0
        since = self._synced
        self._synced = time.time()
        for info in await store.list_runs(limit=1_000_000):
            if info.run_id in self._cursor and info.updated < since - 5.0:
                continue
            events = await store.events(info.run_id, after=self._cursor.get(info.run_id, 0))
            if events:
                self._cursor[info.run_id] = events[-1].seq
                changed += self.learn(events)
        return changed

    def _open_store(self) -> Store | None:
        if self._store is not None or self._store_ref is None:
            return self._store
        url = str(self._store_ref)
        if url == "default":
            url = os.environ.get("ERPOZ_STORE", "") or ".erpoz/erpoz.db"
        path = url.removeprefix("sqlite:///")
        if "://" not in path and not os.path.exists(path):
            return None  # nothing recorded yet; look again next time
        from ..store import open_store

        self._store = open_store(url)
        return self._store

    async def _maybe_sync(self) -> None:
        if self._store_ref is None or time.time() - self._synced < self.refresh_s:
            return
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        if self._sync_lock.locked():
            return
        async with self._sync_lock:
            await self.sync()


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNT = itertools.count()


def _decision_id() -> str:
    """A decision's id: unique across processes (a random prefix drawn at start) and cheap
    (a counter after it), unlike a fresh ``uuid4`` per decision."""
    return f"{_ID_PREFIX}{next(_ID_COUNT):016x}"


def _number(value: Any, default: Any) -> Any:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def _space(embedder: str, bits: int, seed: int, models: Sequence[str]) -> str:
    """A short fingerprint of what makes codes and models comparable across processes."""
    text = "|".join([embedder, str(bits), str(seed), *models])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _tally(spent: list[float]) -> Any:
    """While the member answers, add up the ``model_called`` costs it causes (nested routers
    included) and pass every event on to the run; ``None`` outside a run."""
    parent = current_recorder()
    if parent is None:
        return None

    def emit(kind: str, data: Mapping[str, Any]) -> None:
        if kind == "model_called":
            spent.append(float(data.get("cost_usd") or 0.0))
        parent.emit(kind, data)

    return bind(Recorder(emit, parent.run_id, parent.budget))


def _query_text(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return request.prompt_text
