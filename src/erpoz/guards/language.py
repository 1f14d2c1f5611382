"""The language a text is written in, offline, with the ``lingua`` detector (n-gram models
that ship in the wheel; ``pip install 'erpoz[local]'``): a text in a language that is not
allowed is one :class:`Finding` of kind ``language:<iso 639-1 code>``.

lingua chooses among the languages it is built for, ``candidates``: a detector built from
all 75 takes seconds to load and hesitates between close languages, so the default is about
twenty widely used ones (plus the allowed ones). A text in a language that is not a candidate
is reported as the closest candidate (often a neighbour: Catalan as Spanish or Portuguese),
or not at all when no candidate is confident. Built detectors are cached per process, one
per language set.

Short texts carry little evidence: below ``min_chars`` nothing is reported, and a detection
below ``min_confidence`` is not reported either. Names, code and URLs in a text weigh on
the detection like any other words.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

from ._findings import Finding

__all__ = ["DEFAULT_CANDIDATES", "LanguageGuard"]

INSTALL_HINT = "pip install 'erpoz[local]'"

#: Widely used languages across the main scripts (ISO 639-1).
DEFAULT_CANDIDATES = (
    "en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "cs", "ro", "tr", "ru", "uk",
    "el", "ar", "he", "hi", "zh", "ja", "ko", "id", "vi",
)  # fmt: skip

_detectors: dict[frozenset[str], Any] = {}
_detectors_lock = threading.Lock()


def _lingua() -> Any:
    if importlib.util.find_spec("lingua") is None:
        raise ImportError(
            f"the language guard needs the lingua-language-detector package: {INSTALL_HINT}"
        )
    import lingua

    return lingua


def _language(lingua: Any, code: str) -> Any:
    """The lingua ``Language`` for an ISO 639-1 code; ``ValueError`` naming an unknown one."""
    try:
        return lingua.Language.from_iso_code_639_1(lingua.IsoCode639_1.from_str(code))
    except (ValueError, AttributeError, TypeError):
        known = sorted(lang.iso_code_639_1.name.lower() for lang in lingua.Language.all())
        raise ValueError(
            f"unknown language code {code!r} (ISO 639-1 codes lingua knows: {', '.join(known)})"
        ) from None


def _detector(codes: frozenset[str]) -> Any:
    """The process-wide detector for a set of codes, built (models loaded) on first call."""
    with _detectors_lock:
        detector = _detectors.get(codes)
        if detector is None:
            lingua = _lingua()
            languages = [_language(lingua, c) for c in sorted(codes)]
            builder = lingua.LanguageDetectorBuilder.from_languages(*languages)
            detector = builder.with_preloaded_language_models().build()
            _detectors[codes] = detector
        return detector


def _codes(what: str, codes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(codes, str):  # one code
        codes = (codes,)
    out = tuple(str(c).strip().lower() for c in codes)
    if not out:
        raise ValueError(f"{what} must name at least one language")
    return out


class LanguageGuard:
    """Report a text written in a language other than the ``allowed`` ones; implements
    :class:`~erpoz.guards.Guard`.

    ``allowed`` and ``candidates`` are ISO 639-1 codes (``"en"``, ``"de"``; one code may be
    given as a plain string); ``candidates``
    defaults to :data:`DEFAULT_CANDIDATES` and always includes ``allowed``. Texts shorter
    than ``min_chars`` (after stripping white space) are not judged; a detection is reported
    when its confidence reaches ``min_confidence``, with the confidence as its score. An
    unknown code is a ``ValueError`` naming it; the models load on the first check (a second
    or two), or on :meth:`load`.
    """

    __slots__ = ("allowed", "candidates", "min_chars", "min_confidence", "name")

    def __init__(
        self,
        allowed: Sequence[str] = ("en",),
        candidates: Sequence[str] | None = None,
        *,
        min_chars: int = 20,
        min_confidence: float = 0.5,
        name: str = "language",
    ) -> None:
        lingua = _lingua()
        self.allowed = frozenset(_codes("allowed", allowed))
        chosen = DEFAULT_CANDIDATES if candidates is None else _codes("candidates", candidates)
        self.candidates = frozenset(chosen) | self.allowed
        for code in sorted(self.candidates):
            _language(lingua, code)
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in 0..1, got {min_confidence}")
        self.min_chars = min_chars
        self.min_confidence = min_confidence
        self.name = name

    def load(self) -> None:
        """Build the detector and load its models now instead of on the first check."""
        _detector(self.candidates)

    def detect(self, text: str) -> tuple[str, float] | None:
        """The most likely candidate language of ``text`` (ISO 639-1) and its confidence in
        0..1, or ``None`` when lingua cannot tell (no letters, say)."""
        values = _detector(self.candidates).compute_language_confidence_values(text)
        if not values or values[0].value <= 0.0:
            return None
        top = values[0]
        return top.language.iso_code_639_1.name.lower(), float(top.value)

    def check(self, text: str) -> tuple[Finding, ...]:
        """One finding over the whole text when it is confidently in a language not allowed."""
        if len(text.strip()) < self.min_chars:
            return ()
        found = self.detect(text)
        if found is None:
            return ()
        code, confidence = found
        if code in self.allowed or confidence < self.min_confidence:
            return ()
        language = _display_name(code)
        allowed = ", ".join(sorted(self.allowed))
        detail = f"written in {language} ({code}, confidence {confidence:.2f}); allowed: {allowed}"
        return (Finding(self.name, f"language:{code}", 0, len(text), text, confidence, detail),)


def _display_name(code: str) -> str:
    lingua = _lingua()
    return str(_language(lingua, code).name).title()
