"""Prompt-injection attempts, in what a user types and in what a flow reads: retrieved
documents, web pages, tool results.

Signals, each a :class:`Finding` with its own weight in 0..1:

* instruction overrides ("ignore all previous instructions", "disregard the above"), role
  resets ("you are now …", "developer mode", "do anything now"), role-play jailbreaks, and
  requests for the system prompt;
* exfiltration: "send … to http…", and markdown images whose URL carries data
  (``![](https://x.example/p?data=…)``);
* text hidden from a human reader: invisible characters, Unicode tag characters, HTML
  comments, white-on-white or zero-size CSS, and base64 blobs that decode to instructions.

Phrases are matched on a folded copy of the text (look-alike letters, leetspeak, letters
spaced one by one, invisible characters removed), so ``1gn0re all prev1ous 1nstruct10ns``
and ``i g n o r e`` count; spans point into the original. The text's score is the noisy-or
of its findings' weights, so weak signals add up; :meth:`InjectionDetector.check` returns
the findings only when that score reaches ``threshold``. A phrase under a negation ("do
not ignore the previous instructions") or quoted as an example of an attack weighs less.
This is a heuristic screen: it raises the cost of an attack, it does not make one impossible.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._findings import INVISIBLE, Finding, fold
from .injection_model import InjectionClassifier

if TYPE_CHECKING:
    from .grounded import ArrayEmbedder

__all__ = ["InjectionDetector"]

OVERRIDE = "instruction_override"
ROLE_RESET = "role_reset"
JAILBREAK = "jailbreak"
PROMPT_LEAK = "prompt_leak"
EXFILTRATION = "exfiltration"
HIDDEN_TEXT = "hidden_text"
ENCODED = "encoded_instructions"
ROLE_MARKER = "role_marker"
ADDRESSED_TO_AI = "addressed_to_ai"


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    weight: float


_W = r"(?:[\w'’]+\W+)"  # one word and what follows it
#: "instructions" and its usual misspellings ("iunstructions", "instrucitons", "insructions")
_INSTRUCTIONS = r"i\w?n\w?s\w?t?r\w{0,2}c\w{0,2}t\w{0,2}i?o?ns?"
_IGNORE = r"(?:ignore|ingore|igonre|ignroe|ignor|disregard|disreguard|forget|override|bypass|skip|"
_TARGETS = (
    rf"(?:{_INSTRUCTIONS}|instructions?|prompts?|rules|directions?|guidelines|context|constraints|"
    r"guardrails|polic(?:y|ies)|programming|directives?|commands?|orders|restrictions|"
    r"safety|filters?|training|system)"
)

_RULES = tuple(
    _Rule(kind, re.compile(pattern), weight)
    for kind, pattern, weight in (
        (
            OVERRIDE,
            rf"\b{_IGNORE}abandon|discard|drop)\W+"
            rf"{_W}{{0,3}}?(?:previous|prior|above|earlier|preceding|all|any|every|your|"
            rf"the|system|original|initial|old|existing|those|these)\W+{_W}{{0,3}}?{_TARGETS}\b",
            0.9,
        ),
        (
            OVERRIDE,
            r"\b(?:ignore|disregard|forget)\s+(?:about\s+)?(?:everything|all|anything|what)?\s*"
            r"(?:the\s+|that\s+|was\s+|you\s+were\s+told\s+|i\s+said\s+)?"
            r"(?:above|before|prior|previously|earlier|so\s+far)\b",
            0.85,
        ),
        (
            OVERRIDE,
            r"\bignore\s+(?:the\s+)?user'?s?\s+(?:question|request|query|message|instructions?)",
            0.7,
        ),
        (OVERRIDE, r"\bnew\s+(?:instructions?|rules|task|directive)\s*:", 0.7),
        (
            OVERRIDE,
            r"\b(?:instead|from\s+now\s+on)\s*,?\s+(?:you\s+(?:will|must|should)|"
            r"respond|reply|answer|say|output|only)\b",
            0.45,
        ),
        (
            OVERRIDE,
            r"\bdo\s+not\s+follow\s+(?:the|your|any)\s+(?:\w+\s+)?"
            r"(?:instructions|rules|guidelines)\b",
            0.8,
        ),
        (OVERRIDE, r"\bthe\s+(?:real|true|actual|new)\s+instructions\s+(?:are|follow)\b", 0.75),
        (
            ROLE_RESET,
            r"\byou\s+are\s+(?:now|no\s+longer)\s+(?:an?\s+)?(?:dan|unrestricted|unfiltered|"
            r"uncensored|jailbroken|free|evil|in\s+(?:developer|god|debug|admin)\s+mode|"
            r"bound|restricted|an?\s+ai\s+without|not\s+an?\s+(?:ai|assistant))",
            0.9,
        ),
        (ROLE_RESET, r"\byou\s+are\s+now\s+(?:an?|the|my)\s+\w+", 0.45),
        (ROLE_RESET, r"\b(?:developer|god|debug|admin|sudo|maintenance|dev)\s+mode\b", 0.3),
        (ROLE_RESET, r"\b(?:enable|activate|enter|switch\s+to)\s+\w+\s+mode\b", 0.2),
        (JAILBREAK, r"\bdo\s+anything\s+now\b|\bjailbr(?:eak|oken)\b|\bdan\s+mode\b", 0.75),
        (
            JAILBREAK,
            r"\b(?:pretend|act|behave|role-?play|imagine)\s*:?\s+(?:as|like|that|to\s+be|you\s+are)"
            r"\b[^.\n]{0,80}\b(?:no|without|any|unfiltered|unrestricted|uncensored|evil|"
            r"amoral|unethical)\s*(?:\w+\s+)?(?:rules|restrictions|limits|limitations|"
            r"filters?|guidelines|morals|ethics|censorship|boundaries)\b",
            0.5,
        ),
        (
            JAILBREAK,
            r"\b(?:without|no|ignoring|free\s+(?:of|from))\s+(?:any\s+)?(?:ethical\s+|moral\s+)?"
            r"(?:restrictions|filters|limitations|censorship|guardrails|content\s+polic(?:y|ies)"
            r"|safety\s+guidelines)\b",
            0.45,
        ),
        (JAILBREAK, r"\bstay\s+in\s+character\b|\bnever\s+break\s+character\b", 0.4),
        (
            PROMPT_LEAK,
            r"\b(?:reveal|show|print|output|repeat|display|tell|give|leak|dump|disclose|share|"
            r"write\s+out|recite|what\s+(?:is|are|was|were))\s+(?:me\s+|us\s+)?(?:all\s+)?"
            r"(?:of\s+)?(?:your|the)\s+(?:\w+\s+)?(?:system\s+prompt|(?:initial|hidden|"
            r"original|secret|system|developer)\s+(?:prompt|instructions|message)|instructions"
            r"\s+(?:you\s+were\s+given|above)|(?:own\s+)?instructions\b(?=\s*(?:[.?!:]|$|verbatim"
            r"|word|to\s+(?:me|us)|in\s+full|exactly|back)))",
            0.8,
        ),
        (
            PROMPT_LEAK,
            r"\byour\s+(?:system\s+prompt|initial\s+prompt|hidden\s+instructions)\b",
            0.6,
        ),
        (
            PROMPT_LEAK,
            r"\brepeat\s+(?:the\s+|all\s+)?(?:words|text|everything)\s+(?:above|"
            r"before)\b|\bverbatim\b[^.\n]{0,40}\b(?:prompt|instructions)\b",
            0.75,
        ),
        (PROMPT_LEAK, r"\bsystem\s+prompt\b", 0.3),
        (
            EXFILTRATION,
            r"\b(?:send|post|forward|upload|transmit|exfiltrate|email|e-mail|leak|submit|"
            r"append|include|encode)\b[^\n]{0,80}?\b(?:conversation|chat\s+history|history|"
            r"secrets?|api\s+keys?|passwords?|credentials|tokens?|system\s+prompt|user\s+data|"
            r"personal\s+data|previous\s+messages|the\s+above|memory|cookies)\b[^\n]{0,60}?"
            r"(?:https?://|www\.|\b[\w.\-]+@[\w\-]+\.)",
            0.9,
        ),
        (
            EXFILTRATION,
            r"\b(?:send|post|forward|upload|transmit|exfiltrate)\b[^\n]{0,60}?"
            r"\b(?:to|at|via)\s+(?:https?://|www\.)",
            0.4,
        ),
        (
            EXFILTRATION,
            r"!\[[^\]\n]*\]\(\s*(?:https?:)?//[^)\s]*\?[^)\s]*(?:data|secret|token|key|conv|"
            r"history|msg|message|prompt|q|p|leak|info|d)=[^)\s]*(?:\{|\[|%7b|<|\$|"
            r"data|secret|token|history|conversation)",
            0.9,
        ),
        (EXFILTRATION, r"!\[[^\]\n]*\]\(\s*(?:https?:)?//[^)\s]*\?[^)\s]*=", 0.3),
        (
            ROLE_MARKER,
            r"(?:^|\n)\s*(?:\[|<\|?|#{1,4}\s*|\*\*)?(?:system|assistant|developer|admin)"
            r"(?:\|?>|\]|\*\*)?\s*(?:message|override|note|instruction)?\s*:",
            0.45,
        ),
        (ROLE_MARKER, r"<\|?(?:im_start|im_end|system|endoftext)\|?>|\[/?inst\]|<</?sys>>", 0.7),
        (
            ROLE_MARKER,
            r"#{2,}\s*[(\[]?\s*(?:system|admin|developer|assistant)[_\s-]?(?:message|prompt|"
            r"instructions?|override|note)s?\s*[)\]]?",
            0.7,
        ),
        (ROLE_MARKER, r"</?(?:information|important_?instructions?|system_?message)>", 0.35),
        (
            ADDRESSED_TO_AI,
            r"\bbefore\s+(?:you\s+(?:can\s+)?)?(?:solv|complet|finish|answer|continu|proceed|"
            r"start|do|work)\w*\s+(?:with\s+|on\s+)?(?:the\s+task\s+(?:that\s+)?i\s+(?:gave|"
            r"asked|assigned|set)|my\s+(?:original\s+|initial\s+|first\s+)?(?:task|request|"
            r"question)|the\s+(?:original|user'?s?)\s+(?:task|request|question))",
            0.55,
        ),
        (
            ADDRESSED_TO_AI,
            r"\bafter\s+you\s+(?:do|have\s+done|complete|finish)\s+(?:that|this)\W+(?:you\s+can|"
            r"then)\s+(?:solve|complete|continue|do|answer|go\s+on)",
            0.55,
        ),
        (
            ADDRESSED_TO_AI,
            r"\b(?:important|urgent)\s+(?:message|note|instructions?)\s+from\s+(?:me|the\s+user|"
            r"your\s+user)\b",
            0.5,
        ),
        (
            ADDRESSED_TO_AI,
            r"\bmessage\s+from\s+me\b[^.\n]{0,60}\bto\s+you\b",
            0.5,
        ),
        (
            OVERRIDE,
            r"(?:^|\n)\s*(?:#|//|\*|-)?\s*todo\s*:\s*(?:please\s+)?(?:send|forward|transfer|pay|"
            r"wire|delete|remove|invite|share|post|email|e-mail|change|reset|update|create|book|"
            r"buy|grant|give|add|upload|download|run|execute)\b[^\n]{0,120}?(?:\S\.(?:com|org|"
            r"net|io|co|dev|example)\b|https?://|www\.|\b[a-z]{2}\d{2}[a-z0-9]{10,}|[$€£]\s?\d|"
            r"\bpassword\b|\b(?:iban|account)\b)",
            0.6,
        ),
        (
            ADDRESSED_TO_AI,
            r"\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
            r"(?:ai|assistant|chatbot|llm|language\s+model|bot|agent|model)s?\b",
            0.65,
        ),
        (
            ADDRESSED_TO_AI,
            r"\bif\s+you\s+are\s+(?:an?\s+)?(?:ai|assistant|chatbot|llm|language\s+model|"
            r"bot|agent|gpt|claude)\b",
            0.65,
        ),
        (
            ADDRESSED_TO_AI,
            r"\b(?:ai|assistant|llm|model|agent)s?\s*[,:]\s*(?:you\s+)?(?:must|should|will|are\s+"
            r"instructed\s+to|need\s+to|ignore|disregard|forget|do\s+not|don't|always|never)\b",
            0.45,
        ),
        (
            ADDRESSED_TO_AI,
            r"\bdo\s+not\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|"
            r"alert|warn)\s+(?:the\s+)?user\b",
            0.7,
        ),
    )
)

_NEGATED = re.compile(
    r"(?:\bdo\s+not|\bdon'?t|\bnever|\bnot|\bshould\s*n'?o?t|\bmust\s*n'?o?t|\bcannot|\bcan'?t|"
    r"\bwon'?t|\bwithout)\s+(?:\w+\s+){0,2}$"
)
_DISCUSSED = re.compile(
    r"(?:such\s+as|like|e\.g\.|for\s+example|example|phrases?|attacks?|attackers?|"
    r"injection|jailbreaks?|detect|filter|blocks?|called|known\s+as|the\s+string|"
    r"researchers?|paper|study|classifier)\W{0,4}(?:\w+\W+){0,4}[\"'“‘«]\s*$"
)

_HTML_COMMENT = re.compile(r"<!--(.*?)-->", re.S)
_HIDDEN_CSS = re.compile(
    r"(?:color\s*:\s*(?:#f{3}(?:f{3})?\b|white\b|rgba?\([^)]*,\s*0(?:\.0+)?\s*\))|"
    r"font-size\s*:\s*0(?:px|pt|em)?\b|display\s*:\s*none|visibility\s*:\s*hidden|"
    r"opacity\s*:\s*0(?:\.0+)?\b|(?:left|top|text-indent)\s*:\s*-\d{3,}px)",
    re.I,
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_INSTRUCTIONISH = re.compile(
    r"\b(?:ignore|instructions?|assistant|you\s+must|system|prompt|do\s+not\s+tell|send|"
    r"reveal|pretend)\b"
)


def _noisy_or(weights: list[float]) -> float:
    keep = 1.0
    for w in weights:
        keep *= 1.0 - w
    return 1.0 - keep


class InjectionDetector:
    """Score a text for prompt injection; implements :class:`~erpoz.guards.Guard`.

    ``threshold`` (0..1): :meth:`check` returns the findings when :meth:`score` reaches it,
    and nothing otherwise. 0.5 flags one strong signal or two or three weak ones.

    ``learned=True`` adds the learned detector (:class:`~erpoz.guards.InjectionClassifier`,
    hashed n-grams and MiniLM; ``pip install 'erpoz[local]'``) beside the rules: ``learned``
    names its head (``True`` or ``"content"`` for what a flow reads, ``"prompt"`` for user
    input), ``learned_mode`` its mode (``lexical``, ``cascade`` or ``full``; by default the
    head's) and ``learned_threshold`` overrides its own threshold. Its windows at or over that
    threshold are findings of kind ``learned_injection``, whatever the rules say.
    ``embedder`` (Python only) is the learned detector's (default: the process-wide MiniLM).
    """

    __slots__ = ("_model", "name", "threshold")

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        learned: bool | str = False,
        learned_threshold: float | None = None,
        learned_mode: str | None = None,
        embedder: ArrayEmbedder | None = None,
        name: str = "injection",
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if learned_threshold is not None and not learned:
            raise ValueError("learned_threshold is set but learned is not: set learned: true")
        self.name = name
        self.threshold = threshold
        self._model: InjectionClassifier | None = None
        if learned:
            head = "content" if learned is True else str(learned)
            self._model = InjectionClassifier(
                head=head,
                mode=learned_mode,
                threshold=learned_threshold,
                name=name,
                embedder=embedder,
            )

    @property
    def learned(self) -> InjectionClassifier | None:
        """The learned detector, when ``learned`` was set."""
        return self._model

    def load(self) -> None:
        """Load the learned detector's model now (nothing to do for the rules alone)."""
        if self._model is not None:
            self._model.load()

    def check(self, text: str) -> tuple[Finding, ...]:
        """Return every signal found in ``text`` when together they reach the threshold, and
        the learned detector's findings when it is on."""
        found = self.signals(text)
        if _noisy_or([f.score for f in found]) < self.threshold:
            found = ()
        if self._model is None:
            return found
        learned = self._model.check(text)
        if not learned:
            return found
        return tuple(sorted(found + learned, key=lambda f: (f.start, -f.score)))

    def score(self, text: str) -> float:
        """The text's injection score in 0..1: the noisy-or of its signals' weights (or the
        learned detector's, when it is on and higher)."""
        rules = _noisy_or([f.score for f in self.signals(text)])
        if self._model is None:
            return rules
        return max(rules, self._model.score(text))

    def signals(self, text: str) -> tuple[Finding, ...]:
        """Every signal in ``text``, whatever its weight, ordered by position."""
        out: list[Finding] = []
        out.extend(self._phrases(text, 0, text))
        out.extend(self._hidden(text))
        out.sort(key=lambda f: (f.start, -f.score))
        return tuple(out)

    def _phrases(self, text: str, offset: int, original: str) -> list[Finding]:
        folded = fold(text, lower=True, leet=True, spacing=True)
        t = folded.text
        best: dict[tuple[int, int], Finding] = {}
        for rule in _RULES:
            for m in rule.pattern.finditer(t):
                weight = rule.weight
                before = t[max(0, m.start() - 60) : m.start()]
                if _NEGATED.search(before):
                    weight *= 0.3
                elif _DISCUSSED.search(before):
                    weight *= 0.4
                s, e = folded.span(m.start(), m.end())
                s, e = s + offset, e + offset
                key = (s, e)
                if key not in best or best[key].score < weight:
                    best[key] = Finding(self.name, rule.kind, s, e, original[s:e], weight)
        return _drop_contained(list(best.values()))

    def _hidden(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        invisible = (
            [] if text.isascii() else [i for i, ch in enumerate(text) if _is_invisible(text, i, ch)]
        )
        if invisible:
            tags = sum(1 for i in invisible if 0xE0000 <= ord(text[i]) <= 0xE007F)
            weight = 0.9 if tags else min(0.3 + 0.05 * len(invisible), 0.6)
            s, e = invisible[0], invisible[-1] + 1
            out.append(Finding(self.name, HIDDEN_TEXT, s, e, text[s:e], weight))
        if "<!--" in text:
            for m in _HTML_COMMENT.finditer(text):
                inner = fold(m.group(1), lower=True, leet=True).text
                weight = 0.35 if _INSTRUCTIONISH.search(inner) else 0.1
                out.append(Finding(self.name, HIDDEN_TEXT, m.start(), m.end(), m.group(), weight))
        for m in _HIDDEN_CSS.finditer(text):
            out.append(Finding(self.name, HIDDEN_TEXT, m.start(), m.end(), m.group(), 0.3))
        for m in _BASE64.finditer(text):
            decoded = _decode(m.group())
            if decoded is None:
                continue
            strongest = max((f.score for f in self._phrases(decoded, 0, decoded)), default=0.0)
            if strongest >= 0.4:
                out.append(
                    Finding(self.name, ENCODED, m.start(), m.end(), m.group(), max(0.8, strongest))
                )
        return out


def _is_invisible(text: str, i: int, ch: str) -> bool:
    code = ord(ch)
    if 0xE0000 <= code <= 0xE007F:
        return True
    if ch not in INVISIBLE:
        return False
    if ch in "\u200d\ufe0f\u200c":  # joiners inside emoji or Indic/Persian words are ordinary
        prev = text[i - 1] if i else ""
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if not (prev.isascii() and nxt.isascii()):
            return False
    return True


def _decode(blob: str) -> str | None:
    padded = blob + "=" * (-len(blob) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for c in decoded if c.isprintable() or c in "\n\t")
    if printable < 0.9 * len(decoded) or not any(c == " " for c in decoded):
        return None
    return decoded


def _drop_contained(found: list[Finding]) -> list[Finding]:
    """Keep one finding per place: a finding inside a stronger or equal one is dropped."""
    found.sort(key=lambda f: (-f.score, f.start - f.end))
    kept: list[Finding] = []
    for f in found:
        if any(k.start <= f.start and f.end <= k.end for k in kept):
            continue
        kept.append(f)
    return kept
