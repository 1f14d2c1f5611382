"""Personal data found by pattern and checksum, offline: e-mail addresses (also written out,
``john dot doe at example dot com``, ``john[at]example[dot]com``), phone numbers, payment
cards (Luhn), IBANs (mod 97), IPv4 and IPv6 addresses, and three national identifiers with
real validation rules: US Social Security numbers, UK National Insurance numbers and German
tax ids (Steueridentifikationsnummer, ISO 7064 check digit; reported only next to a word
that names it, since 11 random digits pass its check too often).

Look-alike characters (full-width digits, Cyrillic letters, other scripts' digits, odd dashes,
invisible characters) are normalised before matching; every :class:`Finding` still points
into the original text.

**Not detected:** personal names and postal addresses. Finding those reliably needs a
named-entity model, and none ships with erpoz; this module does not pretend otherwise.

:func:`redact` replaces findings with ``[EMAIL]``-style labels; :class:`Pseudonymizer`
replaces them with stable placeholders (``<EMAIL_1>``) and puts the originals back after.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence

from ._findings import Finding, Folded, fold

__all__ = [
    "PIIDetector",
    "Pseudonymizer",
    "iban_valid",
    "luhn_valid",
    "redact",
]

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
IP_ADDRESS = "ip_address"
US_SSN = "us_ssn"
UK_NINO = "uk_nino"
DE_TAX_ID = "de_tax_id"

#: When two findings overlap, the kind with the stronger evidence wins.
_PRIORITY = {
    IBAN: 7,
    CREDIT_CARD: 6,
    EMAIL: 5,
    US_SSN: 4,
    UK_NINO: 4,
    DE_TAX_ID: 4,
    IP_ADDRESS: 3,
    PHONE: 1,
}


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn check used by payment cards."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: IBAN lengths of the countries most often seen; other countries are checked by mod 97 only.
_IBAN_LENGTH = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "IL": 23, "BR": 29,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """True when ``iban`` (spaces allowed) has a known length for its country, if listed, and
    passes the ISO 13616 mod-97 check."""
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    expected = _IBAN_LENGTH.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in ("078051120", "219099999", "123456789")


def _de_tax_id_valid(digits: str) -> bool:
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = sorted((digits[:10].count(d) for d in set(digits[:10])), reverse=True)
    if counts[0] not in (2, 3) or (len(counts) > 1 and counts[1] > 1):
        return False
    product = 10
    for ch in digits[:10]:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = (11 - product) % 10
    return check == int(digits[10])


# -- patterns, matched on folded text ------------------------------------------------------

_TLD = (
    r"(?:com|org|net|edu|gov|mil|int|io|co|ai|app|dev|info|biz|me|us|uk|de|fr|es|it|nl|be|"
    r"ch|at|se|no|dk|fi|pl|pt|ie|eu|ca|au|nz|jp|cn|in|br|ru|mx|za|tv|xyz|online|email|mail)"
)
_WORD = r"[a-z0-9_%+\-]+"
_AT_MARK = r"\s*[\[\(\{<]\s*(?:at|@)\s*[\]\)\}>]\s*"
_DOT_MARK = r"\s*[\[\(\{<]\s*(?:dot|\.)\s*[\]\)\}>]\s*"
_EMAIL_PLAIN = re.compile(
    r"(?<![\w.+\-])[a-z0-9._%+\-]+@[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*\.[a-z]{2,24}(?![\w\-])",
    re.IGNORECASE,
)
# "john[at]example[dot]com", "john (at) example . com", "john @ example dot com"
_EMAIL_MARKED = re.compile(
    rf"(?<![\w.])({_WORD}(?:(?:{_DOT_MARK}|\s+dot\s+|\.){_WORD})*)"
    rf"(?:{_AT_MARK}|\s*@\s*)"
    rf"({_WORD}(?:(?:{_DOT_MARK}|\s+dot\s+|\s*\.\s*){_WORD})*(?:{_DOT_MARK}|\s+dot\s+|\s*\.\s*){_TLD})\b",
    re.IGNORECASE,
)
# "john dot doe at example dot com": a spaced "at" needs a spelled-out "dot" in the domain.
_EMAIL_SPELLED = re.compile(
    rf"(?<![\w.])({_WORD}(?:(?:{_DOT_MARK}|\s+dot\s+|\.){_WORD})*)\s+at\s+"
    rf"({_WORD}(?:(?:{_DOT_MARK}|\s+dot\s+){_WORD})*(?:{_DOT_MARK}|\s+dot\s+){_TLD})\b",
    re.IGNORECASE,
)
# Cheap tests that decide whether the two slow e-mail patterns are worth running.
_MARKED_HINT = re.compile(r"[\[\(\{<]\s*(?:at|@)\s*[\]\)\}>]|\s@|@\s", re.IGNORECASE)
_SPELLED_HINT = re.compile(r"\sdot\s|[\[\(\{<]\s*dot\s*[\]\)\}>]", re.IGNORECASE)
_CARD = re.compile(r"(?<![\d.,\-])\d(?:[ .\-]{0,2}\d){12,18}(?![\d]|[.,]\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{1,4}|:)(?![\w:])", re.I)
_SSN = re.compile(r"(?<![\w\-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w\-]|\.\d)")
_SSN_BARE = re.compile(r"(?<![\w\-])\d{9}(?![\w\-])")
_NINO = re.compile(
    r"(?<![\w])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)"
)
_DE_TAX = re.compile(r"(?<![\w\-])[1-9]\d ?\d{3} ?\d{3} ?\d{3}(?![\w\-])")
_PHONE = re.compile(
    r"(?<![\w+\-./])(?:(?:\+|00)\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?"
    r"\d{1,10}(?:[ .\-/]\d{1,10}){0,5}(?![\w\-]|[.,/]\d)"
)
_DATE_PREFIX = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-]\d{2,4}(?!\d)")
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:([ .,])\d{3})(?:\1\d{3})*")

_PHONE_CONTEXT = re.compile(
    r"(?:phone|tel|telefon|telephone|mobile|mobil|cell|call|fax|whats ?app|sms|text me|"
    r"ring|reach|contact|dial|hotline|number|nummer|☎|📞)\W{0,3}(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?:\b(?:invoice|order|ref|reference|tracking|account|acct|customer|no\.|nr\.|#|id|serial|"
    r"isbn|sku|po|case|ticket|transaction|batch|lot|part|model|version|v\.|build|"
    r"usd|eur|gbp|price|total|amount|population)\b|#|[$€£¥])\W{0,3}(?:\w+\W+){0,2}$",
    re.IGNORECASE,
)
_CURRENCY_AFTER = re.compile(r"^\s*(?:[$€£¥%]|usd|eur|gbp|dollars|euros|km|kg|m\b|units)", re.I)
_CARD_CONTEXT = re.compile(r"card|visa|mastercard|amex|\bcc\b|kreditkarte|carte|pay|paid", re.I)
_SSN_CONTEXT = re.compile(r"(?:ssn|social security|soc\.? ?sec)\W{0,3}(?:\w+\W+){0,3}$", re.I)
_DE_TAX_CONTEXT = re.compile(
    r"(?:steuer-?id|steueridentifikationsnummer|steuer-?identifikationsnummer|idnr|"
    r"identifikationsnummer|tax id|tin)\W{0,3}(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
_NINO_CONTEXT = re.compile(r"(?:nino|national insurance|ni number|ni no)", re.I)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


class PIIDetector:
    """Find personal data in a text; implements :class:`~erpoz.guards.Guard`.

    ``kinds`` limits the kinds reported (default: all of :attr:`KINDS`); ``min_score`` drops
    weaker findings (phone numbers without a nearby "phone"/"tel" word score 0.6).
    """

    KINDS = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, US_SSN, UK_NINO, DE_TAX_ID)

    __slots__ = ("_scanners", "kinds", "min_score", "name")

    def __init__(
        self, *, kinds: Sequence[str] | None = None, min_score: float = 0.5, name: str = "pii"
    ) -> None:
        self.name = name
        self.kinds = frozenset(self.KINDS if kinds is None else kinds)
        unknown = self.kinds - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(self.KINDS)}")
        self.min_score = min_score
        every: dict[str, Callable[[str], Iterator[tuple[str, int, int, float]]]] = {
            EMAIL: _emails,
            PHONE: _phones,
            CREDIT_CARD: _cards,
            IBAN: _ibans,
            IP_ADDRESS: _ips,
            US_SSN: _ssns,
            UK_NINO: _ninos,
            DE_TAX_ID: _de_tax_ids,
        }
        self._scanners = tuple(every[k] for k in self.KINDS if k in self.kinds)

    def check(self, text: str) -> tuple[Finding, ...]:
        """Return the non-overlapping findings in ``text``, ordered by position."""
        folded = fold(text)
        raw: list[tuple[str, int, int, float]] = []
        for scan in self._scanners:
            raw.extend(scan(folded.text))
        return _resolve(text, folded, raw, self.name, self.min_score)


def _resolve(
    text: str,
    folded: Folded,
    raw: list[tuple[str, int, int, float]],
    name: str,
    min_score: float,
) -> tuple[Finding, ...]:
    raw = [r for r in raw if r[3] >= min_score]
    raw.sort(key=lambda r: (-_PRIORITY[r[0]], -r[3], r[1] - r[2]))
    taken: list[tuple[int, int]] = []
    out: list[Finding] = []
    for kind, s, e, score in raw:
        if any(s < te and ts < e for ts, te in taken):
            continue
        taken.append((s, e))
        os_, oe = folded.span(s, e)
        out.append(Finding(name, kind, os_, oe, text[os_:oe], score))
    out.sort(key=lambda f: f.start)
    return tuple(out)


def _emails(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _EMAIL_PLAIN.finditer(t):
        yield EMAIL, m.start(), m.end(), 0.99
    patterns = []
    if _MARKED_HINT.search(t):
        patterns.append(_EMAIL_MARKED)
    if _SPELLED_HINT.search(t):
        patterns.append(_EMAIL_SPELLED)
    for pattern in patterns:
        for m in pattern.finditer(t):
            if "@" in m.group() and _EMAIL_PLAIN.fullmatch(m.group()):
                continue
            yield EMAIL, m.start(), m.end(), 0.9


def _cards(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _CARD.finditer(t):
        d = _digits(m.group())
        if d[0] in "23456" and luhn_valid(d) and len(set(d)) > 1:
            before = t[max(0, m.start() - 40) : m.start()]
            other = _NOT_PHONE_CONTEXT.search(before) and not _CARD_CONTEXT.search(before)
            yield CREDIT_CARD, m.start(), m.end(), 0.45 if other else 0.97


def _ibans(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _IBAN.finditer(t):
        cand = m.group()
        # the pattern may run on into the next word ("… 00 and"): try the country's length,
        # then shorter cuts at a space
        ends = [i + 1 for i, c in enumerate(cand) if c != " "]
        country = cand[:2].upper()
        want = _IBAN_LENGTH.get(country)
        tries = [want] if want is not None else range(len(ends), 14, -1)
        for n in tries:
            if n > len(ends):
                continue
            end = ends[n - 1]
            if end < len(cand) and cand[end] != " ":
                continue
            if iban_valid(cand[:end]):
                yield IBAN, m.start(), m.start() + end, 0.99
                break


def _ips(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _IPV4.finditer(t):
        before = t[max(0, m.start() - 12) : m.start()].lower()
        if "version" in before or before.rstrip().endswith("v"):
            continue
        yield IP_ADDRESS, m.start(), m.end(), 0.9
    if ":" in t:
        for m in _IPV6.finditer(t):
            cand = m.group()
            if sum(1 for g in cand.split(":") if g) < 2:
                continue
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            yield IP_ADDRESS, m.start(), m.end(), 0.9


def _ssns(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _SSN.finditer(t):
        d = m.group(1) + m.group(3) + m.group(4)
        if _ssn_valid(d):
            ctx = _SSN_CONTEXT.search(t[max(0, m.start() - 40) : m.start()])
            yield US_SSN, m.start(), m.end(), 0.95 if ctx or m.group(2) == "-" else 0.55
    for m in _SSN_BARE.finditer(t):
        if _ssn_valid(m.group()) and _SSN_CONTEXT.search(t[max(0, m.start() - 40) : m.start()]):
            yield US_SSN, m.start(), m.end(), 0.9


def _ninos(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _NINO.finditer(t):
        ctx = _NINO_CONTEXT.search(t[max(0, m.start() - 40) : m.start()])
        yield UK_NINO, m.start(), m.end(), 0.95 if ctx else 0.8


def _de_tax_ids(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _DE_TAX.finditer(t):
        if _de_tax_id_valid(_digits(m.group())):
            ctx = _DE_TAX_CONTEXT.search(t[max(0, m.start() - 50) : m.start()])
            yield DE_TAX_ID, m.start(), m.end(), 0.95 if ctx else 0.3


def _phones(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _PHONE.finditer(t):
        cand = m.group()
        d = _digits(cand)
        intl = cand[0] == "+" or (cand.startswith("00") and cand[2:3] not in ("0", " ", ""))
        separated = any(c in cand for c in " .-/(")
        before = t[max(0, m.start() - 40) : m.start()]
        context = _PHONE_CONTEXT.search(before) is not None
        if intl:
            if not 8 <= len(d) <= 15:
                continue
        elif not (9 <= len(d) <= 12 or (context and 7 <= len(d) <= 12)):
            continue
        if not context and _NOT_PHONE_CONTEXT.search(before):
            continue
        if not intl:
            if _SSN_SHAPE.fullmatch(cand):
                continue
            first = re.split(r"[ .\-/]", cand)[0]
            if cand[0] not in "0(" and len(first) <= 2 and not (first == "1" and len(d) == 11):
                continue
            if _DATE_PREFIX.match(cand) or _THOUSANDS.fullmatch(cand):
                continue
            if _IPV4.fullmatch(cand):
                continue
            if not separated and not context and d[0] != "0":
                continue
            if before.rstrip().endswith(("$", "€", "£", "¥")):
                continue
        if _CURRENCY_AFTER.match(t[m.end() : m.end() + 8]):
            continue
        score = 0.95 if context else 0.85 if intl else 0.7 if separated else 0.6
        yield PHONE, m.start(), m.end(), score


# -- redaction and pseudonymisation --------------------------------------------------------


def _label(kind: str) -> str:
    return kind.upper()


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding in ``text`` with its kind in brackets: ``[EMAIL]``,
    ``[CREDIT_CARD]``… Overlapping findings are merged under the first one's label."""
    parts: list[str] = []
    last = 0
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if f.start < last:  # overlaps the one before: widen it, leak nothing
            last = max(last, f.end)
            continue
        parts.append(text[last : f.start])
        parts.append(f"[{_label(f.kind)}]")
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")


def _identity(kind: str, value: str) -> str:
    """What makes two spellings of one value the same value (for stable placeholders)."""
    folded = fold(value).text
    if kind in (PHONE, CREDIT_CARD, US_SSN, DE_TAX_ID):
        return _digits(folded)
    return re.sub(r"\s+", "", folded).lower()


class Pseudonymizer:
    """Replace personal data with placeholders (``<EMAIL_1>``, ``<PHONE_2>``) before a text
    leaves, and put the originals back in what comes back.

    One value keeps one placeholder for the life of the instance, across calls, so a
    conversation can be masked message by message. Keep one instance per conversation.
    """

    __slots__ = ("_by_value", "_counts", "detector")

    def __init__(self, detector: PIIDetector | None = None) -> None:
        self.detector = detector if detector is not None else PIIDetector()
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def pseudonymize(self, text: str) -> tuple[str, dict[str, str]]:
        """Return ``text`` with its personal data replaced, and placeholder → original for
        the placeholders it contains."""
        mapping: dict[str, str] = {}
        parts: list[str] = []
        last = 0
        for f in self.detector.check(text):
            key = (f.kind, _identity(f.kind, f.text))
            placeholder = self._by_value.get(key)
            if placeholder is None:
                n = self._counts.get(f.kind, 0) + 1
                self._counts[f.kind] = n
                placeholder = f"<{_label(f.kind)}_{n}>"
                self._by_value[key] = placeholder
            mapping.setdefault(placeholder, f.text)
            parts.append(text[last : f.start])
            parts.append(placeholder)
            last = f.end
        parts.append(text[last:])
        return "".join(parts), mapping

    @staticmethod
    def restore(text: str, mapping: dict[str, str]) -> str:
        """Put the originals back for every placeholder of ``mapping`` found in ``text``;
        placeholders not in ``mapping`` are left as they are."""
        return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)
