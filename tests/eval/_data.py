"""Small stand-ins for the evaluation's inputs: a hashing embedder (offline, instant) and a
synthetic data set in the format of RouteLLM's GSM8K responses, written inline."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from erpoz.models import EmbedResult

WEAK_COL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_COL = "gpt-4-1106-preview"
SHARED = next(
    (
        p / "shared" / "data"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "data").is_dir()
    ),
    Path(__file__).resolve().parents[3] / "shared" / "data",
)
REAL_DATA = SHARED / "routellm-gsm8k"
REAL_MTBENCH = SHARED / "routellm-mtbench"


class HashEmbed:
    """An EmbedModel for tests: each word adds 1 to one of ``dims`` dimensions (by hash)."""

    def __init__(self, name: str = "hash", dims: int = 64) -> None:
        self.name = name
        self.dims = dims
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.calls += 1
        rows = []
        for text in texts:
            v = [0.0] * self.dims
            for word in re.findall(r"[a-z]+", text.lower()):
                v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dims] += 1.0
            rows.append(tuple(v))
        return EmbedResult(tuple(rows), self.name)


def _last_number(text: str) -> int | None:
    found = re.findall(r"\d+", text.replace(",", ""))
    return int(found[-1]) if found else None


def synthetic_rows(n: int) -> list[tuple[str, bool, bool, str, str]]:
    """``n`` questions with a weak answer of one of five kinds (right; a calculation that does
    not hold; no final answer; hedging; wrong but tidy) and a strong answer that is mostly
    right. Correctness is judged as RouteLLM does: the last number against the truth. Hard
    questions (about trains) get the weak model's wrong kinds more often."""
    rows = []
    for k in range(n):
        a, b = 3 + k % 17, 5 + (k * 7) % 23
        truth = a + b
        hard = k % 3 == 0
        if hard:
            q = f"A train leaves with {a} cars and {b} more are coupled. How many cars in all?"
        else:
            q = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        kind = (k * 5 + (2 if hard else 0)) % 5
        if kind in (0, 1) and not hard:
            weak = f" He has {a} + {b} = {truth} apples.\n#### {truth}"
        elif kind == 0:
            weak = f" In all {a} + {b} = {truth + 3}.\n#### {truth + 3}"  # does not hold
        elif kind == 1:
            weak = f" There are {a} and {b}, so about {truth}"  # no final answer
        elif kind == 2:
            weak = f" Assuming some left, {a} - 1 = {a - 1}.\n#### {a - 1}"  # hedges
        elif kind == 3:
            weak = f" {a} * 2 = {a * 2}\n#### {a * 2}"  # wrong but tidy
        else:
            weak = f" So {a} + {b} = {truth}.\n#### {truth}"
        strong = f"{a} + {b} = {truth}.\n#### {truth if k % 9 else truth + 1}"
        rows.append((q, _last_number(weak) == truth, _last_number(strong) == truth, weak, strong))
    return rows


def write_routellm(folder: Path, n: int = 60, contaminated: int = 1) -> Path:
    """A RouteLLM-style folder of ``n`` synthetic questions (the first ``contaminated`` of
    them listed as contaminated)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(n)
    with (folder / "gsm8k_responses.csv").open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["prompt", WEAK_COL, STRONG_COL, f"{WEAK_COL}_response", f"{STRONG_COL}_response"]
        )
        w.writerows(rows)
    with (folder / "contaminated_prompts.jsonl").open("w", encoding="utf-8") as f:
        for i, row in enumerate(rows[:contaminated]):
            f.write(json.dumps({"train_prompt": row[0], "eval_prompt": row[0], "eval_idx": i}))
            f.write("\n")
    return folder


def write_mcq_csv(path: Path, n: int = 40, answers: bool = False) -> Path:
    """A multiple-choice task in RouteLLM's right/wrong form with three models (cheap, mid,
    dear); answer texts ("The answer is B.") only when ``answers``."""
    cols = ["prompt", "cheap", "mid", "dear"]
    if answers:
        cols += ["cheap_response", "mid_response", "dear_response"]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for k in range(n):
            hard = k % 4 == 0
            q = f"Question {k}: which is {'the rarest' if hard else 'a'} metal?\nA. iron\nB. gold"
            row = [q, not hard and k % 5 != 1, k % 3 != 0, k % 7 != 0]
            if answers:
                row += [f"The answer is {'AB'[k % 2]}."] * 3
            w.writerow(row)
    return path


def write_mtbench(folder: Path, n: int = 12) -> Path:
    """A folder in the form of RouteLLM's MT-Bench data: questions, two turns each, judged
    answers of two models (the answers inside the judge's prompts, as there)."""
    folder.mkdir(parents=True, exist_ok=True)
    models = ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    with (
        (folder / "question.jsonl").open("w", encoding="utf-8") as q,
        (folder / "judgements.jsonl").open("w", encoding="utf-8") as j,
    ):
        for k in range(n):
            turns = [f"Write about topic {k}.", f"Now shorten it ({k})."]
            q.write(json.dumps({"question_id": 100 + k, "category": "writing", "turns": turns}))
            q.write("\n")
            for m, model in enumerate(models):
                a1, a2 = f"An essay on {k} by {m}.", f"Short {k}."
                single = (
                    f"[Question]\n{turns[0]}\n\n[The Start of Assistant's Answer]\n{a1}\n"
                    "[The End of Assistant's Answer]"
                )
                multi = (
                    "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n"
                    f"{turns[0]}\n\n### Assistant A:\n{a1}\n\n### User:\n{turns[1]}\n\n"
                    f"### Assistant A:\n{a2}\n\n<|The End of Assistant A's Conversation with "
                    "User|>"
                )
                for turn, prompt in ((1, single), (2, multi)):
                    score = 9 if m == 0 else (8 if k % 3 else 3)
                    j.write(
                        json.dumps(
                            {
                                "question_id": 100 + k,
                                "model": model,
                                "turn": turn,
                                "user_prompt": prompt,
                                "score": score,
                            }
                        )
                    )
                    j.write("\n")
    return folder
