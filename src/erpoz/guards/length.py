"""Texts too long or too short: a limit in characters, in tokens, or both.

Tokens are counted with erpoz's tokenizer-free estimate (about four characters a token, the
one budgets use before a call) unless a ``tokenizer`` (text -> number of tokens) is given.
A text over a limit is a ``too_long`` :class:`Finding` over the part beyond it; a text under
``min_chars`` is a ``too_short`` finding over the whole text.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import count_tokens
from ._findings import Finding

__all__ = ["LengthGuard"]

TOO_LONG = "too_long"
TOO_SHORT = "too_short"


def _limit(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number ≥ 0, got {value!r}")
    return value


class LengthGuard:
    """Check a text's length; implements :class:`~erpoz.guards.Guard`.

    ``max_chars`` and ``max_tokens`` cap the length (the finding covers what lies beyond the
    cap); ``min_chars`` asks for at least that many characters, white space at either end not
    counted. ``tokenizer`` counts tokens for ``max_tokens`` (default: ~4 characters a token);
    it is assumed to count a longer prefix as at least as many tokens as a shorter one.
    """

    __slots__ = ("max_chars", "max_tokens", "min_chars", "name", "tokenizer")

    def __init__(
        self,
        *,
        max_chars: int | None = None,
        min_chars: int | None = None,
        max_tokens: int | None = None,
        tokenizer: Callable[[str], int] | None = None,
        name: str = "length",
    ) -> None:
        self.max_chars = _limit("max_chars", max_chars)
        self.min_chars = _limit("min_chars", min_chars)
        self.max_tokens = _limit("max_tokens", max_tokens)
        if max_chars is None and min_chars is None and max_tokens is None:
            raise ValueError("give at least one of max_chars, min_chars, max_tokens")
        low, high = self.min_chars, self.max_chars
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_chars {low} is over max_chars {high}")
        self.tokenizer: Callable[[str], int] = tokenizer or count_tokens
        self.name = name

    def check(self, text: str) -> tuple[Finding, ...]:
        """``too_short`` over the whole text, ``too_long`` over the part beyond each limit."""
        out: list[Finding] = []
        if self.min_chars is not None:
            size = len(text.strip())
            if size < self.min_chars:
                detail = f"{size} characters, under the minimum of {self.min_chars}"
                out.append(Finding(self.name, TOO_SHORT, 0, len(text), text, 1.0, detail))
        if self.max_chars is not None and len(text) > self.max_chars:
            cut = self.max_chars
            detail = f"{len(text)} characters, over the limit of {self.max_chars}"
            out.append(Finding(self.name, TOO_LONG, cut, len(text), text[cut:], 1.0, detail))
        if self.max_tokens is not None and text:
            tokens = self.tokenizer(text)
            if tokens > self.max_tokens:
                cut = self._token_cut(text, self.max_tokens)
                detail = f"{tokens} tokens, over the limit of {self.max_tokens}"
                out.append(Finding(self.name, TOO_LONG, cut, len(text), text[cut:], 1.0, detail))
        out.sort(key=lambda f: (f.start, f.end))
        return tuple(out)

    def _token_cut(self, text: str, limit: int) -> int:
        """The length of the longest prefix of ``text`` within ``limit`` tokens."""
        low, high = 0, len(text)  # prefix of length low fits; of length high does not
        while high - low > 1:
            mid = (low + high) // 2
            if self.tokenizer(text[:mid]) <= limit:
                low = mid
            else:
                high = mid
        return low
