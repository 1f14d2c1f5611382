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
from dataclasses import dataclass

from ._findings import Finding, Folded, fold

__all__ = [
    "CARD_ISSUERS",
    "DEFAULT_PHONE_REGIONS",
    "CardIssuer",
    "PIIDetector",
    "Pseudonymizer",
    "card_issuer",
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


@dataclass(frozen=True, slots=True)
class CardIssuer:
    """A range of payment card numbers: the issuer, the prefixes it starts with (inclusive,
    compared on as many digits as ``low`` has) and the lengths its numbers have."""

    name: str
    low: str
    high: str
    lengths: tuple[int, ...]
    needs_cue: bool = False  # a range wide enough that a word such as "card" must be near


def _r(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


#: Issuer identification ranges (ISO/IEC 7812 IINs as the networks publish them), the most
#: specific first. A number is a card when it starts in one of these ranges, has one of its
#: lengths and passes Luhn.
CARD_ISSUERS = (
    CardIssuer("JCB", "1800", "1800", (15,)),
    CardIssuer("JCB", "2131", "2131", (15,)),
    CardIssuer("JCB", "3528", "3589", _r(16, 19)),
    CardIssuer("Mir", "2200", "2204", _r(16, 19)),
    CardIssuer("Mastercard", "2221", "2720", (16,)),
    CardIssuer("American Express", "34", "34", (15,)),
    CardIssuer("American Express", "37", "37", (15,)),
    CardIssuer("Diners Club", "300", "305", _r(14, 19)),
    CardIssuer("Diners Club", "3095", "3095", _r(14, 19)),
    CardIssuer("Diners Club", "36", "36", _r(14, 19)),
    CardIssuer("Diners Club", "38", "39", _r(14, 19)),  # 14 digits: the older cards
    CardIssuer("Visa", "4", "4", (13, 16, 19)),
    CardIssuer("Mastercard", "51", "55", (16,)),
    CardIssuer("Dankort", "5019", "5019", (16,)),
    CardIssuer("Verve", "506099", "506198", (16, 18, 19)),
    CardIssuer("Verve", "650002", "650027", (16, 18, 19)),
    CardIssuer("Discover", "6011", "6011", _r(16, 19)),
    CardIssuer("UnionPay", "622126", "622925", _r(16, 19)),  # co-branded with Discover
    CardIssuer("Discover", "644", "649", _r(16, 19)),
    CardIssuer("Discover", "65", "65", _r(16, 19)),
    CardIssuer("UnionPay", "62", "62", _r(14, 19)),
    CardIssuer("UnionPay", "81", "81", _r(16, 19)),
    CardIssuer("RuPay", "60", "60", (16,)),
    CardIssuer("RuPay", "82", "82", (16,)),
    CardIssuer("Maestro", "5018", "5018", _r(12, 19)),
    CardIssuer("Maestro", "5020", "5020", _r(12, 19)),
    CardIssuer("Maestro", "5038", "5038", _r(12, 19)),
    CardIssuer("Maestro", "5893", "5893", _r(12, 19)),
    CardIssuer("Maestro", "6304", "6304", _r(12, 19)),
    CardIssuer("Maestro", "6759", "6759", _r(12, 19)),
    CardIssuer("Maestro", "6761", "6763", _r(12, 19)),
    CardIssuer("Maestro", "0604", "0604", _r(12, 19)),  # an early UK range
    # the rest of Maestro's and national schemes' space (Iran's Shetab cards, among others)
    CardIssuer("Maestro", "50", "50", _r(12, 19)),
    CardIssuer("Maestro", "56", "69", _r(12, 19)),
    CardIssuer("Troy", "9792", "9792", (16,)),
    CardIssuer("Prostir", "9", "9", (16,), needs_cue=True),
    CardIssuer("UATP", "1", "1", (15,), needs_cue=True),
)


def card_issuer(digits: str) -> CardIssuer | None:
    """The issuer range ``digits`` (a card number, digits only) falls in with a length that
    range uses, or ``None``. Luhn is not checked here (see :func:`luhn_valid`)."""
    n = len(digits)
    for issuer in CARD_ISSUERS:
        head = digits[: len(issuer.low)]
        if issuer.low <= head <= issuer.high and n in issuer.lengths:
            return issuer
    return None


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
_CARD = re.compile(r"(?<![\d.,\-])\d(?:(?:[ \-]|\.(?=\d)| - )?\d){11,60}(?![\d]|[.,]\d)")
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
    r"(?<![\w+\-./])(?P<number>(?:(?:\+|00)\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?"
    r"\d{1,12}(?:[ .\-/]\d{1,10}){0,5})"
    r"(?P<ext>\s*(?:x|ext\.?|extn?|extension|#)\s*\d{1,6})?(?![\w\-]|[.,/]\d)",
    re.IGNORECASE,
)
_DATE_PREFIX = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-]\d{2,4}(?!\d)")
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:([ .,])\d{3})(?:\1\d{3})*")

_PHONE_CONTEXT = re.compile(
    r"(?:phone|tel|telefon|telephone|mobile|mobil|cell|call|fax|whats ?app|sms|text me|"
    r"ring|reach|contact|dial|hotline|number|nummer|☎|📞)\W{0,3}(?:\w+\W+){0,5}$",
    re.IGNORECASE,
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?:\b(?:invoice|order|ref|reference|tracking|account|acct|customer|no\.|nr\.|#|id|serial|"
    r"isbn|ean|upc|gtin|barcode|sku|po|case|ticket|transaction|batch|lot|part|model|version|"
    r"v\.|build|"
    r"usd|eur|gbp|price|total|amount|population)\b|#|[$€£¥])\W{0,3}(?:\w+\W+){0,2}$",
    re.IGNORECASE,
)
#: A label right before a number that says it is something else ("Order #", "ISBN",
#: "Invoice"): it wins over a phone cue further back.
_LABEL_BEFORE = re.compile(
    r"\b(?:invoice|order|ref|reference|tracking|account|acct|customer|serial|isbn|ean|"
    r"upc|gtin|sku|po|case|ticket|transaction|batch|lot|part|model|version|build|usd|eur|gbp|"
    r"price|total|amount)(?:\W{1,3}(?:number|no|nr|id|code))?\W{0,4}$|[#$€£¥]\s?$",
    re.IGNORECASE,
)
_CURRENCY_AFTER = re.compile(r"^\s*(?:[$€£¥%]|usd|eur|gbp|dollars|euros|km|kg|m\b|units)", re.I)
_CARD_CONTEXT = re.compile(
    r"card|visa|mastercard|amex|\bcc\b|kreditkarte|carte|tarjeta|pay|paid|charge|debit|billed",
    re.I,
)
_SSN_CONTEXT = re.compile(r"(?:ssn|social security|soc\.? ?sec)\W{0,3}(?:\w+\W+){0,3}$", re.I)
_DE_TAX_CONTEXT = re.compile(
    r"(?:steuer-?id|steueridentifikationsnummer|steuer-?identifikationsnummer|idnr|"
    r"identifikationsnummer|tax id|tin)\W{0,3}(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
_NINO_CONTEXT = re.compile(r"(?:nino|national insurance|ni number|ni no)", re.I)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


#: Regions whose national formats a phone number written without a country code is read
#: in, when none is given: North America, the largest European ones, India, Brazil, Japan,
#: Australia. Numbers written with ``+`` or ``00`` need no region.
DEFAULT_PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "SE", "CH", "AT", "IE", "IN", "BR", "JP",
    "AU",
)  # fmt: skip


def _regions(regions: Sequence[str]) -> tuple[str, ...]:
    """``regions`` checked against libphonenumber's list (``ImportError`` without it)."""
    try:
        import phonenumbers
    except ImportError as exc:
        raise ImportError(
            "PII kind 'phone' needs the phonenumbers package: pip install 'erpoz[local]' "
            "(or leave 'phone' out of kinds)"
        ) from exc
    if isinstance(regions, str):
        regions = (regions,)
    out = tuple(r.upper() for r in regions)
    known = phonenumbers.SUPPORTED_REGIONS
    unknown = [r for r in out if r not in known]
    if unknown or not out:
        raise ValueError(
            f"phone_regions must name regions libphonenumber knows (ISO 3166 codes such as "
            f"'US', 'GB', 'DE'); unknown: {unknown or 'none given'}"
        )
    return out


class PIIDetector:
    """Find personal data in a text; implements :class:`~erpoz.guards.Guard`.

    ``kinds`` limits the kinds reported (default: all of :attr:`KINDS`); ``min_score`` drops
    weaker findings (a phone number without a nearby "phone"/"tel" word and not valid in any
    region scores 0.55–0.7). ``phone_regions``: ISO 3166 codes of the countries whose national
    formats a number without a country code is read in (default
    :data:`DEFAULT_PHONE_REGIONS`). Phone numbers are checked with ``phonenumbers``
    (``pip install 'erpoz[local]'``): without it, asking for the ``phone`` kind is an
    ``ImportError`` that says so.
    """

    KINDS = (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, US_SSN, UK_NINO, DE_TAX_ID)

    __slots__ = ("_scanners", "kinds", "min_score", "name", "phone_regions")

    def __init__(
        self,
        *,
        kinds: Sequence[str] | None = None,
        min_score: float = 0.5,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        name: str = "pii",
    ) -> None:
        self.name = name
        self.kinds = frozenset(self.KINDS if kinds is None else kinds)
        unknown = self.kinds - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(self.KINDS)}")
        self.min_score = min_score
        self.phone_regions = _regions(phone_regions) if PHONE in self.kinds else ()
        regions = self.phone_regions
        every: dict[str, Callable[[str], Iterator[tuple[str, int, int, float]]]] = {
            EMAIL: _emails,
            PHONE: lambda t: _phones(t, regions),
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


_CARD_GROUP = re.compile(r"\d+")


def _card_spans(t: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    """The card numbers inside a run of digit groups ``t[start:end]``: from the first group,
    the longest run of whole groups that is one (the run may go on into what follows the
    card); then the same after it. A card is not looked for inside a group sequence that
    does not start one ("1234 5678 9012 3456" holds no card), only after a long group of
    its own ("Reference: 7475248163651760 4111111111111111")."""
    groups = [(m.start() + start, m.end() + start) for m in _CARD_GROUP.finditer(t[start:end])]
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            s, e = groups[i][0], groups[j][1]
            d = _digits(t[s:e])
            if 12 <= len(d) <= 19 and luhn_valid(d) and len(set(d)) > 1:
                yield s, e, d
                i = j
                break
        else:
            if groups[i][1] - groups[i][0] < 7:
                return
        i += 1


def _cards(t: str) -> Iterator[tuple[str, int, int, float]]:
    for m in _CARD.finditer(t):
        for s, e, d in _card_spans(t, m.start(), m.end()):
            before = t[max(0, s - 40) : s]
            cue = _CARD_CONTEXT.search(before) is not None
            other = _LABEL_BEFORE.search(before) is not None  # "Order #", "ISBN", "Ref:"…
            issuer = card_issuer(d)
            if (issuer is None or issuer.needs_cue) and (not cue or other):
                continue  # Luhn-valid, outside the issuers' ranges: only next to "card"
            yield CREDIT_CARD, s, e, 0.45 if other and not cue else 0.97


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


_VALID, _POSSIBLE, _NO = 2, 1, 0


def _phone_status(number: str, regions: Sequence[str], *, valid: bool = False) -> int:
    """How ``number`` reads with libphonenumber: possible (a length its country uses) in one
    of ``regions`` -- or, written with a country code, in its country -- or not. With
    ``valid``, also whether it is a valid number there (an assigned range; slower)."""
    import phonenumbers

    best = _NO
    for region in ("ZZ",) if number.startswith("+") else regions:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_possible_number(parsed):
            continue
        if not valid:
            return _POSSIBLE
        if phonenumbers.is_valid_number(parsed):
            return _VALID
        best = _POSSIBLE
    return best


def _phones(t: str, regions: Sequence[str]) -> Iterator[tuple[str, int, int, float]]:
    for m in _PHONE.finditer(t):
        cand = m.group("number")
        d = _digits(cand)
        intl = cand[0] == "+" or (cand.startswith("00") and cand[2:3] not in ("0", " ", ""))
        before = t[max(0, m.start() - 50) : m.start()]
        context = _PHONE_CONTEXT.search(before) is not None
        if not 7 <= len(d) <= 17 or _LABEL_BEFORE.search(before):
            continue
        if not context and _NOT_PHONE_CONTEXT.search(before):
            continue
        if _CURRENCY_AFTER.match(t[m.end() : m.end() + 8]):
            continue
        if intl:
            status = _phone_status(m.group(), regions, valid=True)
        else:
            shape = _not_a_phone(cand, d, before, context)
            if shape is True:
                continue
            status = _phone_status(m.group(), regions, valid=shape is None)
            if shape is None and status != _VALID:
                continue
        if status == _NO:
            continue
        if context:
            score = 0.95
        elif intl:
            score = 0.9 if status == _VALID else 0.8
        else:
            score = 0.7 if any(c in cand for c in " .-/(") else 0.55
        yield PHONE, m.start(), m.end(), score


def _not_a_phone(cand: str, d: str, before: str, context: bool) -> bool | None:
    """Whether a number written without a country code has the shape of something else: a
    date, an SSN, an amount, an IP address, a bare run of digits with no cue, a list item or
    a price (True); or could be a phone number (False); or only when it is a valid one, as
    "503 940 290" is a Polish number and "184 608 773" an amount (None)."""
    if len(d) < (7 if context else 9) or len(d) > 15:
        return True
    if _SSN_SHAPE.fullmatch(cand) or _DATE_PREFIX.match(cand) or _IPV4.fullmatch(cand):
        return True
    if before.rstrip().endswith(("$", "€", "£", "¥")):
        return True
    separated = any(c in cand for c in " .-/(")
    if not separated and not context and d[0] != "0":
        return True
    first = re.split(r"[ .\-/]", cand)[0]
    if cand[0] not in "0(" and len(first) == 1 and not (first == "1" and len(d) == 11):
        return True
    thousands = _THOUSANDS.fullmatch(cand)
    if thousands:
        return True if thousands.group(1) != " " else None
    return False


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
