"""What every guard shares: the :class:`Finding` it reports, the :class:`GuardReport` of one
check, the :class:`Guard` protocol, and :func:`fold`, the offset-keeping text normaliser that
lets a detector match on cleaned-up text while its spans still point into the original."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a guard found: ``text == original[start:end]``; ``score`` is in 0..1 (higher:
    more certain of the problem); ``detail`` is an optional message for a person."""

    detector: str
    kind: str
    start: int
    end: int
    text: str
    score: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GuardReport:
    """The findings of one or more guards on one text, and how long the checks took."""

    findings: tuple[Finding, ...]
    seconds: float

    @property
    def flagged(self) -> bool:
        """True when any guard reported anything."""
        return bool(self.findings)


class Guard(Protocol):
    """A detector run over a text before it reaches a model, a tool or a user."""

    name: str

    def check(self, text: str) -> tuple[Finding, ...]:
        """Return what the guard found in ``text``, in order of position."""
        ...


def run_guards(text: str, guards: Iterable[Guard]) -> GuardReport:
    """Run every guard over ``text`` and gather their findings, ordered by position."""
    began = time.perf_counter()
    found: list[Finding] = []
    for guard in guards:
        found.extend(guard.check(text))
    found.sort(key=lambda f: (f.start, f.end, f.detector))
    return GuardReport(tuple(found), time.perf_counter() - began)


# -- offset-keeping normalisation ----------------------------------------------------------

#: Look-alikes that NFKC leaves alone: Cyrillic and Greek letters shaped like Latin ones,
#: dashes, and the "at" signs of other scripts.
_CONFUSABLES = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i",
    "ѕ": "s", "ј": "j", "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ո": "n", "ս": "u",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Χ": "X", "Ζ": "Z",
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "⁃": "-", "﹘": "-", "ⓐ": "@", "⓪": "0", "\u00a0": " ", "\u202f": " ",
}  # fmt: skip

#: Characters that render as nothing; dropped before matching (and reported by the
#: injection detector, which looks for them on the original text).
INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068"
    "\u2069\ufeff"
)

_LEET = str.maketrans("0134579@$", "oieastgas")
#: A word with a digit or symbol in it; only these are read as leetspeak (numbers stay).
_LEET_WORD = re.compile(r"(?<![a-z0-9@$])[a-z]*[0-9@$][a-z0-9@$]*")
#: Runs of single characters spaced out to dodge word matching: "i g n o r e", "s.y.s.t.e.m".
_SPACED = re.compile(r"(?<![^\W_])(?:[^\W_][ .\-_*|]){2,}[^\W_](?![^\W_])")


@dataclass(frozen=True, slots=True)
class Folded:
    """A normalised text and, for each of its characters, the index in the original it came
    from (``None`` when the two are the same string)."""

    text: str
    origin: tuple[int, ...] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map ``[start, end)`` in the folded text to the matching span of the original."""
        if self.origin is None:
            return start, end
        if end <= start:
            at = self.origin[start] if start < len(self.origin) else len(self.origin)
            return at, at
        return self.origin[start], self.origin[end - 1] + 1


def _fold_char(ch: str) -> str:
    if ch in INVISIBLE:
        return ""
    mapped = _CONFUSABLES.get(ch)
    if mapped is not None:
        return mapped
    code = ord(ch)
    if 0xE0020 <= code <= 0xE007E:  # Unicode tag characters hide ASCII ("ASCII smuggling")
        return chr(code - 0xE0000)
    if 0xE0000 <= code <= 0xE007F:
        return ""
    if ch.isdigit() and not ch.isascii():
        return str(unicodedata.digit(ch, 0)) if unicodedata.digit(ch, -1) >= 0 else ch
    out = unicodedata.normalize("NFKC", ch)
    return "".join(_CONFUSABLES.get(c, c) for c in out)


def _unleet(m: re.Match[str]) -> str:
    word = m.group()
    return word.translate(_LEET) if any(c.isalpha() for c in word) else word


def fold(text: str, *, lower: bool = False, leet: bool = False, spacing: bool = False) -> Folded:
    """Normalise ``text`` for matching, keeping where each character came from.

    Always: NFKC (full-width forms, ligatures, mathematical digits), digits of other scripts
    to ASCII, Cyrillic and Greek look-alikes to Latin, dashes to ``-``, invisible characters
    dropped, Unicode tag characters decoded. ``lower`` lower-cases; ``leet`` reads digits and
    symbols inside words as letters (``1gn0re`` → ``ignore``); ``spacing`` joins letters
    spaced out one by one (``i g n o r e`` → ``ignore``).
    """
    if text.isascii():
        folded, origin = text, None
    else:
        chars: list[str] = []
        where: list[int] = []
        for i, ch in enumerate(text):
            if ch.isascii():
                chars.append(ch)
                where.append(i)
                continue
            out = _fold_char(ch)
            for c in out:
                chars.append(c)
                where.append(i)
        folded, origin = "".join(chars), where
    if lower:
        low = folded.lower()
        if len(low) == len(folded):  # lower() of a few letters (İ) changes the length
            folded = low
    if leet:
        folded = _LEET_WORD.sub(_unleet, folded)
    if spacing and _SPACED.search(folded):
        chars2: list[str] = []
        where2: list[int] = []
        last = 0
        base = origin if origin is not None else range(len(folded))
        for m in _SPACED.finditer(folded):
            chars2.append(folded[last : m.start()])
            where2.extend(base[last : m.start()])
            for j in range(m.start(), m.end(), 2):
                chars2.append(folded[j])
                where2.append(base[j])
            last = m.end()
        chars2.append(folded[last:])
        where2.extend(base[last:])
        folded, origin = "".join(chars2), where2
    return Folded(folded, None if origin is None else tuple(origin))
