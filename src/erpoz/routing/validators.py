"""General validators for cascades: judge an answer by its form and its own working, never by
knowing the right answer.

Each is a :data:`~erpoz.routing.Validator` -- ``fn(request, result)`` returning a
:class:`~erpoz.routing.Verdict` -- so it goes in any :class:`~erpoz.routing.CascadeRouter`
(or, by its import path, in ``erpoz.yaml``: ``validators: [erpoz.routing.validators:arithmetic]``):

- :data:`final_answer` (:class:`FinalAnswer`): the answer ends with a final result after a
  marker (``#### 42``, ``The answer is 42``, ``Answer: 42``, ``\\boxed{42}``), well formed: a
  number, and nothing else on its line.
- :data:`arithmetic` (:class:`ArithmeticCheck`): every calculation written out in the answer
  holds (``16 - 3 = 13``, ``9 * $2 = $18``, chains such as ``5/2 = 2.5``, calculator notes
  ``<<9*2=18>>``). Its score is the share of calculations that hold.
- :data:`answer_follows` (:class:`AnswerFollows`): the final answer is a number the working
  arrived at (the result of one of its calculations, or a number of its last lines), not one
  that appears from nowhere.
- :data:`no_hedging` (:class:`NoHedging`): the answer does not say that it is unsure, that the
  question is wrong, or that it had to assume something.
- :data:`finished`: the answer was not cut off by a token limit (``finish_reason`` ``length``)
  and does not stop in the middle of a sentence.
- :class:`SelfConsistency`: asks the same model again (sampled) and accepts when enough of the
  answers reach the same final answer. It costs ``samples`` more calls, each metered.

- :data:`choice_answer` (:class:`ChoiceAnswer`): a multiple-choice answer names one option,
  one that was offered.
- :data:`json_answer` (:class:`JsonAnswer`): a JSON answer parses (and fits the request's
  ``response_schema`` when it has one).

Validators here read only the request and the answer. None of them knows the right answer,
none has rules for particular prompts. Each knows which **answer forms** it can judge
(:func:`answer_form`: ``numeric``, ``choice``, ``json`` or ``text``) and *abstains* on the
others (``Verdict.abstain``: the answer passes, marked as not judged), so a numeric check never
rejects ``"The answer is B."``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from ..models import ChatModel, ChatRequest, ChatResult
from ._decision import Verdict

__all__ = [
    "AnswerFollows",
    "AnswerForm",
    "ArithmeticCheck",
    "ChoiceAnswer",
    "Equation",
    "FinalAnswer",
    "JsonAnswer",
    "NoHedging",
    "SelfConsistency",
    "answer_follows",
    "answer_form",
    "arithmetic",
    "choice_answer",
    "equations",
    "final_answer",
    "final_answer_text",
    "finished",
    "json_answer",
    "no_hedging",
    "offered_options",
    "parse_number",
]

# --- numbers ------------------------------------------------------------------------------------
# A number as people write it in a worked solution: 42, -3, 1,234.50, $18, 150%, .5
_NUMBER = r"[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|[-−]?\$?\.\d+%?"
_NUMBER_RE = re.compile(_NUMBER)
_WELL_FORMED = re.compile(rf"^\s*(?:{_NUMBER})\s*\.?\s*$")


def parse_number(text: str) -> float | None:
    """The value of one written number (``$1,234.50`` → 1234.5, ``15%`` → 0.15), else ``None``."""
    t = text.strip().replace("$", "").replace(",", "").replace("−", "-")
    pct = t.endswith("%")
    t = t.rstrip("%")
    try:
        value = float(t)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value / 100 if pct else value


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


# --- final answer ------------------------------------------------------------------------------
_MARKERS = (
    r"####[ \t]*(?P<a>[^\n]*)",
    r"\\boxed\{(?P<b>[^{}\n]*)\}",
    r"(?:[Tt]he )?[Ff]inal [Aa]nswer(?: is)?[ \t]*:?[ \t]*(?P<c>[^\n]*)",
    r"[Tt]he answer is[ \t]*:?[ \t]*(?P<d>[^\n]*)",
    r"^[ \t]*\**[Aa]nswer\**[ \t]*:\**[ \t]*(?P<e>[^\n]*)",
)
DEFAULT_MARKERS: tuple[str, ...] = _MARKERS
"""What introduces a final answer, by default (regular expressions, each with one group)."""


def _compile_markers(markers: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for i, m in enumerate(markers):
        # each marker's own group becomes a uniquely named one
        pattern = re.sub(r"\(\?P<\w+>", f"(?P<m{i}>", m, count=1)
        if f"(?P<m{i}>" not in pattern:
            pattern = f"(?:{m})[ \t]*:?[ \t]*(?P<m{i}>[^\\n]*)"
        parts.append(f"(?:{pattern})")
    return re.compile("|".join(parts), re.M)


_DEFAULT_MARKER_RE = _compile_markers(_MARKERS)


def final_answer_text(text: str, markers: re.Pattern[str] | None = None) -> str | None:
    """What follows the last final-answer marker in ``text`` (stripped), or ``None``."""
    found = None
    for found in (markers or _DEFAULT_MARKER_RE).finditer(text):  # noqa: B007 (the last one)
        pass
    if found is None:
        return None
    value = next((g for g in found.groups() if g is not None), "")
    return value.strip().strip("*").strip()


def _final_value(text: str) -> float | None:
    answer = final_answer_text(text)
    if answer is None or not _WELL_FORMED.match(answer):
        return None
    return parse_number(answer.rstrip(". "))


class FinalAnswer:
    """Accepts an answer that states a final answer after a marker, well formed.

    ``markers``: regular expressions that introduce the final answer (default
    :data:`DEFAULT_MARKERS`: ``####``, ``\\boxed{}``, ``final answer``, ``the answer is``,
    ``Answer:``); the last one found counts. ``numeric`` (default) asks for a number (``42``,
    ``-3``, ``1,234.5``, ``$18``, ``15%``) and nothing else on its line, and judges only
    answers of the numeric form (:func:`answer_form`), abstaining on multiple-choice, JSON and
    free-text ones; without it any non-empty text after a marker passes, whatever the form.
    ``whole`` asks for a whole number: a setting for tasks whose answers are counts (GSM8K's
    are), not a default.
    """

    def __init__(
        self,
        markers: Sequence[str] = DEFAULT_MARKERS,
        *,
        numeric: bool = True,
        whole: bool = False,
    ) -> None:
        self.markers = tuple(markers)
        self._re = _DEFAULT_MARKER_RE if self.markers == _MARKERS else _compile_markers(markers)
        self.numeric = numeric or whole
        self.whole = whole
        self.__name__ = "final_answer"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        if self.numeric:
            form = answer_form(request, result.text)
            if form != "numeric":
                return Verdict.abstain(f"a {form} answer; final_answer judges numeric ones")
        answer = final_answer_text(result.text, self._re)
        if answer is None:
            return Verdict(False, 0.0, "no final answer (expected e.g. '#### 42')")
        if not answer:
            return Verdict(False, 0.0, "the final answer is empty")
        if self.numeric and not _WELL_FORMED.match(answer):
            shown = answer if len(answer) <= 40 else answer[:37] + "..."
            return Verdict(False, 0.0, f"the final answer is not a plain number: {shown!r}")
        if self.whole:
            value = parse_number(answer.rstrip(". "))
            if value is None or value != int(value):
                return Verdict(False, 0.0, f"the final answer {answer!r} is not a whole number")
        return Verdict(True, 1.0)


final_answer = FinalAnswer()
"""A final answer is present and is a plain number (:class:`FinalAnswer` with its defaults)."""


# --- arithmetic --------------------------------------------------------------------------------
_CALC_NOTE = re.compile(r"<<([^<>=\n]*)=([^<>\n]*)>>")
_OPERATORS = "+-*/×÷x^"
_TOKEN = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<op>[-+*/×÷x^−])|(?P<par>[()]))")


class Equation:
    """One calculation found in a text: the written left side, its value, and the result
    written on the right."""

    __slots__ = ("left", "right", "source", "value", "written")

    def __init__(self, source: str, left: str, right: str, value: float, written: float) -> None:
        self.source = source
        self.left = left
        self.right = right
        self.value = value
        self.written = written

    @property
    def holds(self) -> bool:
        """Whether the written result is the value of the left side, up to the rounding the
        writer shows (``10 / 3 = 3.33`` holds; ``7 * 3 = 22`` does not)."""
        right = self.right.strip()
        decimals = len(right.split(".", 1)[1].rstrip("%")) if "." in right else 0
        slack = 0.5 * 10.0 ** (-decimals)
        if right.endswith("%"):
            # "0.2 * 100 = 20%" and "90 / 450 = 20%" both say it
            return _close(self.value, self.written * 100, slack) or _close(
                self.value, self.written, slack / 100
            )
        return _close(self.value, self.written, slack)

    def __repr__(self) -> str:
        return f"Equation({self.left.strip()} = {self.right.strip()}, value={self.value:g})"


def _close(value: float, written: float, slack: float) -> bool:
    return abs(value - written) <= slack + 1e-9 * max(1.0, abs(value))


# "12.8 / 2/5": a fraction written tight binds first
_TIGHT_FRACTION = re.compile(r"(?<![\d.,/)])(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)(?![\d.,/(])")


def _tokens(text: str) -> list[str] | None:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    if re.search(r"\s/\s", text):
        text = _TIGHT_FRACTION.sub(r"(\1/\2)", text)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return None
        tok = m.group(m.lastgroup or "num")
        if (
            tok[0] in "-−"
            and len(tok) > 1
            and out
            and (out[-1] == ")" or out[-1][-1].isdigit() or out[-1][-1] == "%")
        ):
            out += ["-", tok[1:]]  # "40-8": a subtraction, not two numbers
        else:
            out.append(tok)
        pos = m.end()
    return out


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 3}
_CANON = {"x": "*", "×": "*", "÷": "/", "−": "-"}


class _Postfix:
    """Shunting-yard: arithmetic tokens in reading order to postfix, refusing what is not
    arithmetic (two numbers in a row, an operator where a number belongs, open brackets)."""

    __slots__ = ("binary", "numbers", "ops", "output", "prev")

    def __init__(self) -> None:
        self.output: list[float | str] = []
        self.ops: list[str] = []
        self.prev: str | None = None
        self.numbers = 0
        self.binary = 0

    def _after_operand(self) -> bool:
        """Whether the previous token ends an operand (a number or a closing bracket)."""
        return self.prev is not None and self.prev not in _PRECEDENCE and self.prev != "("

    def operator(self, tok: str) -> bool:
        if self._after_operand():
            self.binary += 1
        elif tok == "-":
            self.output.append(0.0)  # unary minus: 0 - x
        else:
            return False
        ops = self.ops
        while ops and ops[-1] in _PRECEDENCE and tok != "^":
            if _PRECEDENCE[ops[-1]] < _PRECEDENCE[tok]:
                break
            self.output.append(ops.pop())
        ops.append(tok)
        return True

    def open(self) -> bool:
        if self._after_operand():
            return False  # "2 (3)" is not arithmetic we read
        self.ops.append("(")
        return True

    def close(self) -> bool:
        if not self._after_operand():
            return False
        while self.ops and self.ops[-1] != "(":
            self.output.append(self.ops.pop())
        if not self.ops:
            return False
        self.ops.pop()
        return True

    def number(self, tok: str) -> bool:
        if self._after_operand():
            return False  # two numbers in a row
        value = parse_number(tok)
        if value is None:
            return False
        self.output.append(value)
        self.numbers += 1
        return True

    def add(self, tok: str) -> bool:
        if tok in _PRECEDENCE:
            ok = self.operator(tok)
        elif tok == "(":
            ok = self.open()
        elif tok == ")":
            ok = self.close()
        else:
            ok = self.number(tok)
        self.prev = tok
        return ok

    def finish(self) -> list[float | str] | None:
        """The postfix form, or ``None`` unless it is a whole calculation (two numbers and an
        operation at least)."""
        if not self._after_operand() or self.numbers < 2 or self.binary < 1:
            return None
        while self.ops:
            op = self.ops.pop()
            if op == "(":
                return None
            self.output.append(op)
        return self.output


def _apply(op: str, a: float, b: float) -> float | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    if abs(b) > 12 or (a < 0 and b != int(b)):  # "^": small powers of what has one
        return None
    return float(a**b)


def _run_postfix(postfix: Sequence[float | str]) -> float | None:
    stack: list[float] = []
    for item in postfix:
        if isinstance(item, float):
            stack.append(item)
            continue
        if len(stack) < 2:
            return None
        b = stack.pop()
        value = _apply(item, stack.pop(), b)
        if value is None:
            return None
        stack.append(value)
    return stack[0] if len(stack) == 1 else None


def _evaluate(tokens: Sequence[str]) -> float | None:
    """The value of an arithmetic expression (numbers, + - * / ^, parentheses, a leading or
    bracketed unary minus); ``None`` when it is not one, or divides by zero."""
    reader = _Postfix()
    for raw in tokens:
        if not reader.add(_CANON.get(raw, raw)):
            return None
    postfix = reader.finish()
    return None if postfix is None else _run_postfix(postfix)


def _tail_expression(text: str) -> str | None:
    """The arithmetic expression that ends ``text`` (what stands left of an ``=``), when it
    starts cleanly: not right after an operator or inside words (``3 sessions/week`` is not
    one; ``the cost is 9 * $2`` gives ``9 * $2``)."""
    i = len(text)
    allowed = set("0123456789.,$%()+-*/×÷^− \t")
    while i > 0 and (text[i - 1] in allowed or (text[i - 1] == "x" and _x_is_times(text, i - 1))):
        i -= 1
    expr = text[i:].strip()
    cut = expr.rfind(", ")  # a comma and a space end a clause ("2, 2 + 2"); "1,234" stays
    if cut >= 0:
        i += len(text[i:]) - len(text[i:].lstrip()) + cut + 2
        expr = expr[cut + 2 :].strip()
    while expr.startswith(("(", ")")) and expr.count("(") != expr.count(")"):
        expr = expr[1:].lstrip()
    if not expr or expr[0] in "+*/×÷^x,":
        return None
    before = text[:i].rstrip()
    if before and before[-1] in _OPERATORS:
        return None
    return expr


def _x_is_times(text: str, i: int) -> bool:
    """Whether the ``x`` at ``i`` stands between two numbers (``3 x 60``)."""
    left = text[:i].rstrip()
    right = text[i + 1 :].lstrip()
    return (
        bool(left)
        and (left[-1].isdigit() or left[-1] in ")%")
        and bool(right)
        and (right[0].isdigit() or right[0] in "($.")
    )


def _head_expression(text: str) -> str | None:
    """The arithmetic expression that starts ``text`` (what stands right of an ``=``): a
    number, or a whole expression (``5/2``), ending where words begin."""
    m = re.match(
        rf"\s*((?:{_NUMBER}|[-+*/×÷^()−]|\s|x(?=\s*[\d$(.]))+)",
        text,
    )
    if m is None:
        return None
    expr = m.group(1).strip()
    if expr and expr[-1] in "+-*/×÷^−x(":
        return None  # "= 40 * Total students": the right side goes on in words
    # a trailing "." is a full stop, not a decimal point
    return expr.rstrip(".") or None


def equations(text: str) -> list[Equation]:
    """Every calculation written out in ``text`` that can be read without guessing: ``a op b
    = c``, chains ``a = b = c`` (each expression against a plain number right after it) and
    calculator notes ``<<a*b=c>>``.

    Numbers may carry ``$``, ``%`` and thousands separators; ``x``, ``×``, ``·`` and ``\\*``
    multiply, ``÷`` divides. A side that is not pure arithmetic (``3 sessions/week = 540``,
    ``= 40 * Total students``) is skipped, so what is returned was written as arithmetic.
    """
    text = _normalise(text)
    found: list[Equation] = []
    for note in _CALC_NOTE.finditer(text):
        left, right = note.group(1), note.group(2)
        toks = _tokens(left)
        written = parse_number(right)
        value = _evaluate(toks) if toks is not None else None
        if value is not None and written is not None:
            found.append(Equation(note.group(0), left, right, value, written))
    plain = _CALC_NOTE.sub("", text)
    for line in plain.splitlines():
        if "=" not in line:
            continue
        parts = re.split(r"(?<![<>!=])=(?![=>])", line)
        if len(parts) < 2:
            continue
        last = len(parts) - 1
        wholes = [_whole(p) if 0 < i < last else None for i, p in enumerate(parts)]
        for i in range(last):
            left = wholes[i] or _tail_expression(parts[i])
            right = wholes[i + 1] or _head_expression(parts[i + 1])
            # "a + b = 96 ÷ 3 = 32" runs on rather than restates: an expression is judged
            # only against a plain number right after it
            if left is None or right is None or _has_operator(right) or not _has_operator(left):
                continue
            left_toks = _tokens(left)
            value = _evaluate(left_toks) if left_toks is not None else None
            written = parse_number(right)
            if value is not None and written is not None:
                found.append(Equation(f"{left} = {right}", left, right, value, written))
    return found


_NORMALISE = (("\\*", "*"), ("\\times", "×"), ("\\div", "÷"), ("·", "*"), ("⋅", "*"))


def _normalise(text: str) -> str:
    for a, b in _NORMALISE:
        text = text.replace(a, b)
    return text


def _has_operator(expr: str) -> bool:
    toks = _tokens(expr)
    return toks is not None and any(t in _OPERATORS or t == "−" for t in toks[1:])


def _whole(text: str) -> str | None:
    """In a chain ``a = b = c``, a middle part when it is all arithmetic."""
    stripped = text.strip()
    if stripped and _tokens(stripped) is not None:
        return stripped
    return None


class ArithmeticCheck:
    """Accepts an answer whose written calculations hold (see :func:`equations`).

    The score is the share of calculations that hold (1.0 when there are none); an answer is
    rejected when the share is below ``min_share`` (default 1.0: any wrong calculation
    rejects). ``min_equations`` rejects answers with fewer calculations than that (default 0:
    an answer without arithmetic is not judged by this validator: it abstains).
    """

    def __init__(self, *, min_share: float = 1.0, min_equations: int = 0) -> None:
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"min_share is between 0 and 1, not {min_share}")
        self.min_share = min_share
        self.min_equations = min_equations
        self.__name__ = "arithmetic"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        found = equations(result.text)
        if len(found) < self.min_equations:
            return Verdict(
                False,
                0.0,
                f"{len(found)} calculation(s) written out; at least {self.min_equations} expected",
            )
        if not found:
            return Verdict.abstain("no calculation written out")
        wrong = [e for e in found if not e.holds]
        share = 1.0 - len(wrong) / len(found)
        if wrong and share < self.min_share:
            e = wrong[0]
            more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            return Verdict(
                False,
                share,
                f"{e.source.strip()!r} does not hold: {e.left.strip()} = {e.value:.6g}{more}",
            )
        return Verdict(True, share)


arithmetic = ArithmeticCheck()
"""Every calculation written out in the answer holds (:class:`ArithmeticCheck` defaults)."""


# --- the answer follows from the working ------------------------------------------------------
class AnswerFollows:
    """Accepts an answer whose final answer (see :class:`FinalAnswer`) is a number the
    working arrived at: the result of one of its calculations, or a number in the last
    ``lines`` lines before the final answer. An answer without a numeric final answer, or
    without working, is not judged here (it abstains): :data:`final_answer` judges that.
    """

    def __init__(self, *, lines: int = 2) -> None:
        self.lines = lines
        self.__name__ = "answer_follows"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        text = result.text
        value = _final_value(text)
        if value is None:
            return Verdict.abstain("no numeric final answer")
        cut = _last_marker_start(text)
        working = text[:cut]
        if not working.strip():
            return Verdict.abstain("no working before the final answer")
        written = [e.right for e in equations(working)]
        tail = [ln for ln in working.splitlines() if ln.strip()][-self.lines :]
        written += [m.group(0) for m in _NUMBER_RE.finditer(" ".join(tail))]
        for w in written:
            # "= 10%" arrives at 10 as much as at 0.1
            for n in (parse_number(w), parse_number(w.rstrip().rstrip("%"))):
                if n is not None and (_same(value, n) or _same(value, abs(n))):
                    return Verdict(True, 1.0)
        return Verdict(
            False,
            0.0,
            f"the final answer {value:g} is not a result of the working",
        )


def _last_marker_start(text: str) -> int:
    start = len(text)
    for m in _DEFAULT_MARKER_RE.finditer(text):
        start = m.start()
    return start


answer_follows = AnswerFollows()
"""The final answer is a number the working arrived at (:class:`AnswerFollows` defaults)."""


# --- hedging ---------------------------------------------------------------------------------
DOUBT_HEDGES: tuple[str, ...] = (
    r"\bmistake in the (?:question|problem)\b",
    r"\berror in the (?:question|problem)\b",
    r"\b(?:question|problem) (?:is|seems) (?:unclear|ambiguous|incorrect|wrong|flawed)\b",
    r"\bnot enough information\b",
    r"\bcannot be (?:determined|calculated|answered)\b",
    r"\bi(?:'m| am) not sure\b",
)
"""Phrases by which an answer of any form says it could not answer as asked (case-blind)."""

DEFINITE_HEDGES: tuple[str, ...] = (
    r"\bassum(?:e|es|ed|ing|ption)\b",
    r"\bno (?:valid )?solution\b",
    r"\bnot possible\b",
    r"\bit seems\b",
    r"\bapproximately\b",
    r"\bcorrected\b",
)
"""Phrases that say an answer bent the question or rounded it: hedges where one definite
result is expected (numeric and multiple-choice answers), ordinary words in prose."""

DEFAULT_HEDGES: tuple[str, ...] = DOUBT_HEDGES + DEFINITE_HEDGES
"""Both lists: what :data:`no_hedging` looks for in a numeric or multiple-choice answer."""

_DEFINITE_FORMS = frozenset({"numeric", "choice"})


class NoHedging:
    """Accepts an answer that does not hedge: no phrase of ``phrases`` (regular expressions,
    matched case-blind) appears in it.

    By default (``phrases`` not given) a numeric or multiple-choice answer is held to
    :data:`DEFAULT_HEDGES` and any other answer (prose, JSON) to :data:`DOUBT_HEDGES` only:
    "assuming" and "approximately" are hedges in a result, not in an essay. ``phrases`` given
    apply to every answer."""

    def __init__(self, phrases: Sequence[str] | None = None) -> None:
        self.phrases = DEFAULT_HEDGES if phrases is None else tuple(phrases)
        self._re = _any_of(self.phrases)
        self._prose: re.Pattern[str] | None = None if phrases is not None else _any_of(DOUBT_HEDGES)
        self.__name__ = "no_hedging"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        pattern = self._re
        if self._prose is not None and answer_form(request, result.text) not in _DEFINITE_FORMS:
            pattern = self._prose
        m = pattern.search(result.text)
        if m is None:
            return Verdict(True, 1.0)
        return Verdict(False, 0.0, f"the answer hedges: {m.group(0)!r}")


def _any_of(phrases: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.I)


no_hedging = NoHedging()
"""The answer does not hedge (:class:`NoHedging` defaults)."""


# --- finished --------------------------------------------------------------------------------
_UNFINISHED_END = re.compile(r"(?:[,(\[{+\-*/=×÷$<]|\b(?:and|or|the|a|of|to|is|so|=))\s*$", re.I)


def finished(request: ChatRequest, result: ChatResult) -> Verdict:
    """Accepts an answer that was not cut off: ``finish_reason`` is not ``length`` and the
    text does not stop on an open operator, bracket, comma or article."""
    if result.finish_reason == "length":
        return Verdict(False, 0.0, "cut off at the token limit (finish_reason 'length')")
    text = result.text.rstrip()
    if not text:
        return Verdict(False, 0.0, "empty answer")
    if _UNFINISHED_END.search(text) or text.count("<<") > text.count(">>"):
        return Verdict(False, 0.0, f"stops mid-sentence: ...{text[-30:]!r}")
    return Verdict(True, 1.0)


# --- answer forms ------------------------------------------------------------------------------
AnswerForm = Literal["numeric", "choice", "json", "text"]
"""What kind of answer a text is, as the validators see it."""

# "A. Paris", "(B) 12", "C) none of these", "D: yes" at the start of a line
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-J])(?:\)|\.|:|\)\.)[ \t]+\S", re.M)
# a final answer that is an option: "B", "(B)", "B.", "B) Paris", "option B", "choice (c)"
_CHOICE = re.compile(
    r"^\**(?:(?:option|choice)[ \t]+\(?([A-Ja-j])\)?|\(([A-J])\)|([A-J])[.):]|([A-J])(?=\**\.?$))"
    r"\**\.?(?:\s+\S.*)?$",
    re.S,
)
# "The answer is B", "answer: (C)", "the correct option is D" anywhere in a short answer
_CHOICE_STATED = re.compile(
    r"\b(?:answer|option|choice)(?:[ \t]+is)?[ \t]*:?[ \t]*\**\(?([A-J])\)?\**(?![\w'])", re.I
)
# a calculation written out: "= 42", "Q = 700 / 5", "= $1,200" (not "==", "<=", "=>"), a
# calculator note "<<15+2", or "15 + 25 =" cut off before its result
_CALCULATION = re.compile(
    r"(?<![=<>!])=(?![=>])[ \t]*\$?-?\(?\d"
    r"|<<[^>\n]*\d"
    r"|\d[ \t]*[-+*/×÷^x][ \t]*\$?\d[^=\n]{0,40}=(?!=)"
)
_SHORT = 400  # characters: an answer this short may state its option anywhere in it


def _asked(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text
    return request.prompt_text


def offered_options(request: ChatRequest) -> tuple[str, ...]:
    """The option letters the request offers, in order (``("A", "B", "C", "D")`` for a
    question with lines ``A. …`` to ``D. …``); empty when it offers fewer than two."""
    letters = list(dict.fromkeys(m.group(1) for m in _OPTION_LINE.finditer(_asked(request))))
    # a list of options runs A, B, C …; stray capitals at line starts are not options
    run = [c for i, c in enumerate(letters) if c == "ABCDEFGHIJ"[i : i + 1]]
    return tuple(run) if len(run) >= 2 else ()


def _stated_choice(text: str) -> str | None:
    """The option letter an answer gives as its final answer, if it gives one."""
    answer = final_answer_text(text)
    if answer is not None:
        m = _CHOICE.match(answer.strip())
        return next(g for g in m.groups() if g).upper() if m else None
    stripped = text.strip()
    m = _CHOICE.match(stripped)
    if m is not None and len(stripped) <= _SHORT:
        return next(g for g in m.groups() if g).upper()
    found = _CHOICE_STATED.findall(stripped) if len(stripped) <= _SHORT else []
    return found[-1].upper() if found else None


def _json_text(text: str) -> str | None:
    """The JSON document an answer consists of (inside a ``` fence or bare), else ``None``."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rsplit("```", 1)[0].strip()
    if not t or t[0] not in "{[":
        return None
    return t


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def answer_form(request: ChatRequest, text: str) -> AnswerForm:
    """The form of ``text`` as an answer to ``request``: ``json`` (the request has a
    ``response_schema``, or the answer is a JSON document), ``choice`` (the request offers
    lettered options, or the answer names one: ``B``, ``(B)``, ``The answer is B.``),
    ``numeric`` (a final answer with a number in it, or left empty; or calculations written
    out, outside code), else ``text``."""
    if request.response_schema is not None:
        return "json"
    doc = _json_text(text)
    if doc is not None and _parses(doc):
        return "json"
    if offered_options(request) or _stated_choice(text) is not None:
        return "choice"
    answer = final_answer_text(text)
    if answer is not None and (not answer or _NUMBER_RE.search(answer)):
        return "numeric"  # "#### 42", "Answer: 84 (corrected)", or a marker left empty
    if "```" not in text and (equations(text) or _CALCULATION.search(text)):
        return "numeric"  # worked out: calculations, and not code
    return "text"


class ChoiceAnswer:
    """Accepts a multiple-choice answer that names one option as its final answer, one that
    the request offered (when it lists its options). Abstains on answers of other forms."""

    def __init__(self) -> None:
        self.__name__ = "choice_answer"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        form = answer_form(request, result.text)
        if form != "choice":
            return Verdict.abstain(f"a {form} answer; choice_answer judges multiple-choice ones")
        offered = offered_options(request)
        chosen = _stated_choice(result.text)
        if chosen is None:
            listed = "/".join(offered) or "a letter"
            return Verdict(False, 0.0, f"no option named as the final answer (expected {listed})")
        if offered and chosen not in offered:
            return Verdict(False, 0.0, f"option {chosen} was not offered ({', '.join(offered)})")
        return Verdict(True, 1.0)


choice_answer = ChoiceAnswer()
"""A multiple-choice answer names one offered option (:class:`ChoiceAnswer`)."""


class JsonAnswer:
    """Accepts a JSON answer that parses and, when the request has a ``response_schema``,
    fits it (checked with ``jsonschema`` when it is installed; without it, the parse only).
    Abstains on answers of other forms."""

    def __init__(self) -> None:
        self.__name__ = "json_answer"

    def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        form = answer_form(request, result.text)
        if form != "json":
            return Verdict.abstain(f"a {form} answer; json_answer judges JSON ones")
        doc = _json_text(result.text)
        if doc is None:
            return Verdict(False, 0.0, "a JSON answer was expected; this is not JSON")
        try:
            value = json.loads(doc)
        except ValueError as exc:
            return Verdict(False, 0.0, f"the JSON does not parse: {exc}")
        if request.response_schema is None:
            return Verdict(True, 1.0)
        problem = _schema_problem(dict(request.response_schema), value)
        if problem:
            return Verdict(False, 0.0, f"the JSON does not fit the schema: {problem}")
        return Verdict(True, 1.0)


def _schema_problem(schema: dict[str, Any], value: Any) -> str:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:  # the parse alone, then
        return ""
    cls: Any = jsonschema.validators.validator_for(schema)
    error = next(iter(cls(schema).iter_errors(value)), None)
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(the document)"
    return f"{where}: {error.message}"


json_answer = JsonAnswer()
"""A JSON answer parses and fits the request's schema (:class:`JsonAnswer`)."""


# --- self-consistency --------------------------------------------------------------------------
class SelfConsistency:
    """Asks ``model`` the same request ``samples`` more times (at ``temperature``) and
    accepts the answer when at least ``min_agreement`` of all the answers (the one judged
    included) reach its final answer (compared by value). The score is that share.

    ``model`` should be the metered model the cascade asks first, so that the extra calls
    are budgeted and recorded like any other. An answer without a final answer is rejected.
    A model that gives the same answer to the same request (a replay, or temperature 0)
    always agrees with itself: this check needs a sampling model.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        samples: int = 2,
        min_agreement: float = 2 / 3,
        temperature: float = 0.7,
    ) -> None:
        if samples < 1:
            raise ValueError(f"samples is at least 1, not {samples}")
        self.model = model
        self.samples = samples
        self.min_agreement = min_agreement
        self.temperature = temperature
        self.__name__ = "self_consistency"

    async def __call__(self, request: ChatRequest, result: ChatResult) -> Verdict:
        mine = _final_value(result.text)
        if mine is None:
            return Verdict(False, 0.0, "no numeric final answer to compare")
        sampled = replace(request, temperature=self.temperature)
        others = await asyncio.gather(
            *(self.model.generate(sampled) for _ in range(self.samples)),
            return_exceptions=True,
        )
        values: list[float | None] = [mine]
        for other in others:
            values.append(_final_value(other.text) if isinstance(other, ChatResult) else None)
        agree = sum(1 for v in values if v is not None and _same(v, mine))
        share = agree / len(values)
        if share + 1e-9 < self.min_agreement:
            seen = Counter(f"{v:g}" if v is not None else "none" for v in values)
            listed = ", ".join(f"{k} ×{n}" for k, n in seen.most_common())
            return Verdict(
                False,
                share,
                f"{agree} of {len(values)} answers agree on {mine:g} ({listed})",
            )
        return Verdict(True, share)
