"""Recorded answers to evaluate routers on: what each model answered to each prompt, how good
that was, and what it cost, in the formats that publish such data.

- **RouteLLM's right/wrong CSVs** (``gsm8k_responses.csv``, the ``mmlu_*.csv`` of a folder):
  a ``prompt`` column, one True/False column per model (was its answer right), and, when
  recorded, ``<model>_response`` columns with the answers' texts. A folder's CSVs are read
  together; ``contaminated_prompts.jsonl`` beside them lists prompts to leave out.
- **RouteLLM's MT-Bench judgements** (a folder with ``question.jsonl`` and
  ``judgements.jsonl``): one item per question, routed on its first turn, scored by the mean
  of the judge's 1–10 scores of both turns; the answers' texts are read out of the judge's
  prompts.
- **The generic JSONL** (see :func:`load_jsonl`): one prompt a line, per model its
  correctness or score, its tokens or cost, and optionally its answer's text; an optional
  first line describes the data set (name, metric, score range, prices).

Every loader returns a :class:`Dataset`; any number of models. Malformed data is a
``ConfigError`` naming the file, the line and the column or key.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..models import Usage

__all__ = [
    "KNOWN_PRICES",
    "Dataset",
    "Item",
    "Metric",
    "find_data",
    "load_dataset",
    "load_jsonl",
    "load_mtbench",
    "load_routellm_csv",
    "mix",
]

Metric = Literal["correct", "score"]
"""How an answer is graded: right or wrong (1 / 0), or a judge's score."""

KNOWN_PRICES: Mapping[str, tuple[float, float]] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.60, 0.60),
    "gpt-4-1106-preview": (10.00, 30.00),
}
"""USD per million tokens (input, output) of the models of RouteLLM's recorded answers:
Mixtral-8x7B-Instruct at a hosted list price when the answers were recorded (2024, Together
AI's serverless endpoint), gpt-4-1106-preview at OpenAI's price for GPT-4 Turbo. Other models
need their prices given (``--price``, or the JSONL's first line)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt: per model (in :attr:`Dataset.models` order) the grade of its answer, and
    what was recorded of it -- its text, its tokens, its cost -- ``None`` where not."""

    prompt: str
    quality: tuple[float, ...]
    answers: tuple[str | None, ...]
    usage: tuple[Usage | None, ...] = ()
    cost: tuple[float | None, ...] = ()
    id: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Items with every model's graded answer; ``metric`` says how grades read and
    ``score_range`` what they span (``(0, 1)`` for right / wrong)."""

    name: str
    items: tuple[Item, ...]
    models: tuple[str, ...]
    source: str
    metric: Metric = "correct"
    score_range: tuple[float, float] = (0.0, 1.0)
    rows: int = 0
    contaminated_removed: int = 0
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Prices the data itself states (the JSONL's first line), USD per million tokens."""

    def index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ConfigError(
                f"no model {model!r} in the data (models: {', '.join(self.models)})",
                file=self.source,
            ) from None

    def mean_quality(self, model: str | int) -> float:
        i = model if isinstance(model, int) else self.index(model)
        return sum(item.quality[i] for item in self.items) / len(self.items)

    @property
    def has_answers(self) -> bool:
        """Whether every answer's text was recorded (validators need them)."""
        return all(a is not None for item in self.items for a in item.answers)

    def normalised(self, value: float) -> float:
        """A grade on [0, 1] (what an online router learns from)."""
        lo, hi = self.score_range
        return 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))

    def take(self, indices: Iterable[int], name: str | None = None) -> Dataset:
        """The items at ``indices``, in that order (a split, a shuffle, a slice)."""
        items = tuple(self.items[i] for i in indices)
        if not items:
            raise ConfigError("no items left to evaluate", file=self.source)
        return Dataset(
            name or self.name,
            items,
            self.models,
            self.source,
            self.metric,
            self.score_range,
            self.rows,
            self.contaminated_removed,
            self.prices,
        )


# --- finding and dispatching ------------------------------------------------------------------
def load_dataset(path: str | os.PathLike[str], *, limit: int | None = None) -> Dataset:
    """Read recorded answers from ``path``: a folder of RouteLLM's (CSVs, or MT-Bench's
    ``question.jsonl`` and ``judgements.jsonl``), a CSV file, or a JSONL file of the generic
    form. The first ``limit`` items only, when given."""
    p = Path(path)
    if p.is_dir():
        if (p / "judgements.jsonl").is_file() and (p / "question.jsonl").is_file():
            data = load_mtbench(p)
        elif any(p.glob("*.csv")):
            data = load_routellm_csv(p)
        else:
            jsonl = sorted(f for f in p.glob("*.jsonl") if f.name != "contaminated_prompts.jsonl")
            if len(jsonl) != 1:
                raise ConfigError(
                    "no recorded answers here: expected RouteLLM's CSVs, MT-Bench's "
                    "question.jsonl and judgements.jsonl, or one JSONL file of the generic form",
                    file=str(p),
                )
            data = load_jsonl(jsonl[0])
    elif p.is_file():
        if p.name == "judgements.jsonl" and (p.parent / "question.jsonl").is_file():
            data = load_mtbench(p.parent)
        elif p.suffix.lower() == ".csv":
            data = load_routellm_csv(p)
        else:
            data = load_jsonl(p)
    else:
        raise ConfigError(f"no recorded answers at {p} (no such file or folder)", file=str(p))
    if limit is not None:
        data = data.take(range(min(limit, len(data.items))))
    return data


def find_data(
    name: str = "routellm-gsm8k", start: str | os.PathLike[str] | None = None
) -> Path | None:
    """Where a shared data set is when not given: ``$ERPOZ_ROUTELLM_DATA`` (for the default
    name), else a ``shared/data/<name>`` folder in the current directory or a parent."""
    named = os.environ.get("ERPOZ_ROUTELLM_DATA")
    if named and name == "routellm-gsm8k":
        return Path(named)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "data" / name
        if candidate.is_dir():
            return candidate
    return None


# --- RouteLLM's CSVs ------------------------------------------------------------------------------
_TRUE = frozenset({"true", "1", "1.0", "yes"})
_FALSE = frozenset({"false", "0", "0.0", "no"})
_RESPONSE = "_response"


def _bool_cell(value: str) -> bool | None:
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


def read_contaminated(path: Path) -> set[str]:
    """The ``eval_prompt`` of each line of RouteLLM's ``contaminated_prompts.jsonl``."""
    out: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the contaminated prompts: {exc}", file=str(path)) from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.add(str(json.loads(line)["eval_prompt"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                'expected {"eval_prompt": "..."} on each line', file=str(path), line=n
            ) from None
    return out


@dataclass(slots=True)
class _CsvRows:
    models: list[str]
    answered: set[str]
    rows: list[tuple[int, dict[str, str]]]


def _read_csv(path: Path) -> _CsvRows:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            start = reader.line_num + 1
            for row in reader:
                rows.append((start, row))
                start = reader.line_num + 1
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the CSV: {exc}", file=str(path)) from None
    if "prompt" not in header:
        raise ConfigError(
            f"no 'prompt' column (columns: {', '.join(header) or 'none'}); RouteLLM's files "
            "have a prompt column, one True/False column per model and optionally "
            "<model>_response columns",
            file=str(path),
            line=1,
        )
    answered = {c[: -len(_RESPONSE)] for c in header if c.endswith(_RESPONSE)}
    models = []
    for column in header:
        if column == "prompt" or column.endswith(_RESPONSE) or not column:
            continue
        first = next((r[column] for _, r in rows if (r.get(column) or "").strip()), None)
        if column in answered or (first is not None and _bool_cell(first) is not None):
            models.append(column)
    if not models:
        raise ConfigError(
            "no model columns: expected True/False columns, one per model (was its answer "
            f"right), beside 'prompt' (columns: {', '.join(header)})",
            file=str(path),
            line=1,
        )
    return _CsvRows(models, answered, rows)


def load_routellm_csv(path: str | os.PathLike[str]) -> Dataset:
    """RouteLLM's right/wrong answers: a CSV, or a folder whose CSVs are read together (the
    models all of them have), without the prompts of ``contaminated_prompts.jsonl``."""
    p = Path(path)
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files:
        raise ConfigError("no CSV files here", file=str(p))
    contaminated_file = (p if p.is_dir() else p.parent) / "contaminated_prompts.jsonl"
    skip = read_contaminated(contaminated_file) if contaminated_file.is_file() else set()
    tables = [(f, _read_csv(f)) for f in files]
    models = [m for m in tables[0][1].models if all(m in t.models for _, t in tables)]
    if not models:
        raise ConfigError(
            "the CSVs share no model column: "
            + "; ".join(f"{f.name}: {', '.join(t.models)}" for f, t in tables),
            file=str(p),
        )
    items: list[Item] = []
    total = removed = 0
    for f, table in tables:
        answered = all(m in table.answered for m in models)
        for line, row in table.rows:
            total += 1
            prompt = row.get("prompt") or ""
            if prompt in skip:
                removed += 1
                continue
            if not prompt.strip():
                raise ConfigError("column 'prompt': empty", file=str(f), line=line)
            grades = []
            for m in models:
                value = _bool_cell(row.get(m) or "")
                if value is None:
                    raise ConfigError(
                        f"column {m!r}: expected True or False (was the answer right), got "
                        f"{(row.get(m) or '')[:40]!r}",
                        file=str(f),
                        line=line,
                    )
                grades.append(1.0 if value else 0.0)
            texts = (
                tuple(row.get(m + _RESPONSE) for m in models) if answered else (None,) * len(models)
            )
            items.append(Item(prompt, tuple(grades), texts, id=f"{f.stem}:{line}", group=f.stem))
    if not items:
        raise ConfigError("no prompts left to evaluate", file=str(p))
    name = files[0].stem.removesuffix("_responses") if len(files) == 1 else p.name
    return Dataset(
        name,
        tuple(items),
        tuple(models),
        str(p),
        "correct",
        (0.0, 1.0),
        total,
        removed,
    )


# --- MT-Bench -----------------------------------------------------------------------------------
_SINGLE = re.compile(
    r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S
)
_MULTI = re.compile(
    r"<\|The Start of Assistant A's Conversation with User\|>(.*?)"
    r"<\|The End of Assistant A's Conversation with User\|>",
    re.S,
)


def judged_answer(user_prompt: str, turn: int) -> str | None:
    """The answer a judge's prompt shows: the one answer (turn 1), or the assistant's last
    turn in the conversation it shows (turn 2)."""
    if turn == 1:
        m = _SINGLE.search(user_prompt)
        return m.group(1).strip() if m else None
    m = _MULTI.search(user_prompt)
    if m is None:
        return None
    parts = m.group(1).split("### Assistant A:")
    return parts[-1].split("### User:")[0].strip() if len(parts) > 1 else None


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"not JSON: {exc.args[0]}", file=str(path), line=n) from None
        if not isinstance(doc, dict):
            raise ConfigError("expected a JSON object on each line", file=str(path), line=n)
        out.append((n, doc))
    return out


def _need(
    doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, line: int
) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(
            f"key {key!r}: expected {names}, got {json.dumps(value)[:40]}",
            file=str(path),
            line=line,
        )
    return value


def load_mtbench(path: str | os.PathLike[str]) -> Dataset:
    """RouteLLM's MT-Bench folder: each question not contaminated (neither turn), routed on
    its first turn; a model's grade is the mean of the judge's scores of its two answers
    (a score of -1, no score given, is left out); its answer is the first turn's text (the
    replayed reply), its tokens those of both turns."""
    folder = Path(path)
    qfile, jfile = folder / "question.jsonl", folder / "judgements.jsonl"
    contaminated_file = folder / "contaminated_prompts.jsonl"
    skip = read_contaminated(contaminated_file) if contaminated_file.is_file() else set()
    questions = {}
    for n, doc in _jsonl(qfile):
        qid = _need(doc, "question_id", int, qfile, n)
        turns = _need(doc, "turns", list, qfile, n)
        if len(turns) < 1 or not all(isinstance(t, str) for t in turns):
            raise ConfigError("key 'turns': expected a list of texts", file=str(qfile), line=n)
        questions[qid] = (turns, str(doc.get("category", "")))
    scores: dict[tuple[int, str], dict[int, float]] = {}
    texts: dict[tuple[int, str], dict[int, str]] = {}
    models: list[str] = []
    for n, doc in _jsonl(jfile):
        qid = _need(doc, "question_id", int, jfile, n)
        model = _need(doc, "model", str, jfile, n)
        turn = _need(doc, "turn", int, jfile, n)
        score = _need(doc, "score", (int, float), jfile, n)
        if qid not in questions:
            raise ConfigError(f"question_id {qid} is not in {qfile.name}", file=str(jfile), line=n)
        if model not in models:
            models.append(model)
        if score >= 0:
            scores.setdefault((qid, model), {})[turn] = float(score)
        answer = judged_answer(str(doc.get("user_prompt", "")), turn)
        if answer is not None:
            texts.setdefault((qid, model), {})[turn] = answer
    items: list[Item] = []
    removed = 0
    for qid, (turns, category) in questions.items():
        if any(t in skip for t in turns):
            removed += 1
            continue
        graded = [scores.get((qid, m), {}) for m in models]
        if any(not g for g in graded):
            missing = [m for m, g in zip(models, graded, strict=True) if not g]
            raise ConfigError(
                f"question {qid} has no score of model(s) {', '.join(missing)}", file=str(jfile)
            )
        answers = [texts.get((qid, m), {}) for m in models]
        usage = tuple(_two_turn_usage(turns, a) for a in answers)
        items.append(
            Item(
                turns[0],
                tuple(sum(g.values()) / len(g) for g in graded),
                tuple(a.get(1) for a in answers),
                usage,
                id=str(qid),
                group=category,
            )
        )
    if not items:
        raise ConfigError("no questions left to evaluate", file=str(folder))
    return Dataset(
        "mt-bench",
        tuple(items),
        tuple(models),
        str(folder),
        "score",
        (1.0, 10.0),
        len(questions),
        removed,
    )


def _two_turn_usage(turns: Sequence[str], answers: Mapping[int, str]) -> Usage | None:
    from ..models import count_tokens

    if 1 not in answers:
        return None
    a1, a2 = answers[1], answers.get(2, "")
    first_in = count_tokens(turns[0])
    second_in = count_tokens("\n".join([turns[0], a1, *turns[1:2]])) if len(turns) > 1 else 0
    return Usage(first_in + second_in, count_tokens(a1) + (count_tokens(a2) if a2 else 0))


# --- the generic JSONL --------------------------------------------------------------------------
def load_jsonl(path: str | os.PathLike[str]) -> Dataset:
    """The generic form, one prompt a line::

        {"prompt": "What is 2 + 2?", "id": "q1", "group": "arithmetic",
         "models": {"small": {"correct": true, "answer": "4", "input_tokens": 9,
                              "output_tokens": 2},
                    "large": {"correct": true, "cost_usd": 0.0004}}}

    Per model: ``correct`` (true / false) or ``score`` (a number; every model and line the
    same kind), and optionally ``answer`` (its text), ``input_tokens`` / ``output_tokens``,
    ``cost_usd``. Every line names the same models. An optional first line describes the set:
    ``{"dataset": {"name": "...", "score_range": [1, 10], "prices": {"large": [2.5, 10]}}}``
    (prices in USD per million tokens, input and output).
    """
    p = Path(path)
    lines = _jsonl(p)
    if not lines:
        raise ConfigError("no records (one JSON object a line)", file=str(p))
    head: dict[str, Any] = {}
    if "dataset" in lines[0][1]:
        n, first = lines.pop(0)
        head = _need(first, "dataset", dict, p, n)
    name = str(head.get("name") or p.stem)
    prices = _header_prices(head, p)
    models: list[str] | None = None
    metric: Metric | None = None
    items: list[Item] = []
    for n, doc in lines:
        prompt = _need(doc, "prompt", str, p, n)
        per = _need(doc, "models", dict, p, n)
        if models is None:
            models = list(per)
            if not models:
                raise ConfigError("key 'models': no model", file=str(p), line=n)
        if set(per) != set(models):
            missing = sorted(set(models) - set(per))
            extra = sorted(set(per) - set(models))
            raise ConfigError(
                "key 'models': every line names the same models"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; not on line 1 of the records: {', '.join(extra)}" if extra else ""),
                file=str(p),
                line=n,
            )
        grades, texts, usage, cost = [], [], [], []
        for m in models:
            rec = per[m]
            if not isinstance(rec, dict):
                raise ConfigError(f"key 'models.{m}': expected an object", file=str(p), line=n)
            kind, grade = _grade(rec, m, p, n)
            if metric is None:
                metric = kind
            elif kind != metric:
                raise ConfigError(
                    f"key 'models.{m}': {kind!r} here, {metric!r} before; one kind of grade "
                    "per data set",
                    file=str(p),
                    line=n,
                )
            grades.append(grade)
            texts.append(_opt(rec, "answer", str, m, p, n))
            tin = _opt(rec, "input_tokens", int, m, p, n)
            tout = _opt(rec, "output_tokens", int, m, p, n)
            usage.append(
                Usage(tin or 0, tout or 0) if tin is not None or tout is not None else None
            )
            c = _opt(rec, "cost_usd", (int, float), m, p, n)
            cost.append(None if c is None else float(c))
        items.append(
            Item(
                prompt,
                tuple(grades),
                tuple(texts),
                tuple(usage),
                tuple(cost),
                str(doc.get("id", n)),
                str(doc.get("group", "")),
            )
        )
    assert models is not None and metric is not None
    score_range = _score_range(head, metric, items, p)
    return Dataset(
        name, tuple(items), tuple(models), str(p), metric, score_range, len(items), 0, prices
    )


def _grade(rec: Mapping[str, Any], model: str, path: Path, line: int) -> tuple[Metric, float]:
    if "correct" in rec:
        value = rec["correct"]
        if not isinstance(value, bool):
            raise ConfigError(
                f"key 'models.{model}.correct': expected true or false, got "
                f"{json.dumps(value)[:40]}",
                file=str(path),
                line=line,
            )
        return "correct", 1.0 if value else 0.0
    if "score" in rec:
        value = rec["score"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(
                f"key 'models.{model}.score': expected a number, got {json.dumps(value)[:40]}",
                file=str(path),
                line=line,
            )
        return "score", float(value)
    raise ConfigError(
        f"key 'models.{model}': needs 'correct' (true/false) or 'score' (a number)",
        file=str(path),
        line=line,
    )


def _opt(
    rec: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    model: str,
    path: Path,
    line: int,
) -> Any:
    if key not in rec or rec[key] is None:
        return None
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "a number"
        raise ConfigError(
            f"key 'models.{model}.{key}': expected {names}, got {json.dumps(value)[:40]}",
            file=str(path),
            line=line,
        )
    if isinstance(value, int | float) and (value < 0 or not math.isfinite(value)):
        raise ConfigError(
            f"key 'models.{model}.{key}': expected a number >= 0, got {value}",
            file=str(path),
            line=line,
        )
    return value


def _header_prices(head: Mapping[str, Any], path: Path) -> dict[str, tuple[float, float]]:
    raw = head.get("prices") or {}
    if not isinstance(raw, dict):
        raise ConfigError("key 'dataset.prices': expected an object", file=str(path), line=1)
    out = {}
    for model, value in raw.items():
        pair = value if isinstance(value, list) else [value]
        if len(pair) == 1:
            pair = pair * 2
        if len(pair) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in pair
        ):
            raise ConfigError(
                f"key 'dataset.prices.{model}': expected [input, output] in USD per million tokens",
                file=str(path),
                line=1,
            )
        out[str(model)] = (float(pair[0]), float(pair[1]))
    return out


def _score_range(
    head: Mapping[str, Any], metric: Metric, items: Sequence[Item], path: Path
) -> tuple[float, float]:
    if metric == "correct":
        return (0.0, 1.0)
    given = head.get("score_range")
    if given is None:
        lo = min(min(i.quality) for i in items)
        hi = max(max(i.quality) for i in items)
        return (min(0.0, lo), max(1.0, hi))
    if (
        not isinstance(given, list)
        or len(given) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in given)
        or given[0] >= given[1]
    ):
        raise ConfigError(
            "key 'dataset.score_range': expected [lowest, highest]", file=str(path), line=1
        )
    return (float(given[0]), float(given[1]))


def mix(datasets: Sequence[Dataset], *, seed: int = 0) -> Dataset:
    """One task of several: their items shuffled together (seeded), each grade put on [0, 1]
    by its own set's range, so that a right answer of one and a judge's 10 of another weigh
    alike. The sets must record the same models."""
    import random

    if len(datasets) < 2:
        raise ConfigError("mixing needs at least two data sets")
    models = datasets[0].models
    for d in datasets[1:]:
        if set(d.models) != set(models):
            raise ConfigError(
                f"cannot mix {d.name} ({', '.join(d.models)}) with {datasets[0].name} "
                f"({', '.join(models)}): not the same models",
                file=d.source,
            )
    items: list[Item] = []
    for d in datasets:
        order = [d.models.index(m) for m in models]
        for item in d.items:
            items.append(
                Item(
                    item.prompt,
                    tuple(d.normalised(item.quality[k]) for k in order),
                    tuple(item.answers[k] for k in order),
                    tuple(item.usage[k] for k in order) if item.usage else (),
                    tuple(item.cost[k] for k in order) if item.cost else (),
                    f"{d.name}:{item.id}",
                    d.name,
                )
            )
    random.Random(seed).shuffle(items)
    prices: dict[str, tuple[float, float]] = {}
    for d in datasets:
        prices.update(d.prices)
    return Dataset(
        "+".join(d.name for d in datasets),
        tuple(items),
        models,
        " + ".join(d.source for d in datasets),
        "score",
        (0.0, 1.0),
        sum(d.rows for d in datasets),
        sum(d.contaminated_removed for d in datasets),
        prices,
    )
