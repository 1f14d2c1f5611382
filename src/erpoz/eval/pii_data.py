"""A labelled PII set generated with Faker across locales (seeded, made at run time, never
stored), and precision / recall by kind for any detector over it.

Each item is a short text holding one to three values of the kinds erpoz detects (payment
cards of every issuer Faker knows, in plain, spaced and dashed groups; phone numbers as each
locale writes them, extensions included; e-mail addresses; IBANs; IPv4 and IPv6 addresses; US
Social Security numbers; IBANs of a length wrong for their country, as Faker makes
for Great Britain, are left out) and, in most items, numbers that are *not* personal data (dates,
times, prices, order and invoice numbers, ISBNs and EANs, postcodes, versions, quantities).
Templates vary where a value stands and what words are around it, with and without a cue
such as "phone" or "card".

Faker's numbers are made to look right, not to be real: its phone numbers are random digits in
each country's layout (many are not valid numbers for their region), its cards pass Luhn with
real issuer prefixes. So this set measures whether a detector finds what *looks* like personal
data in its usual shapes; it is not a sample of real traffic.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..guards.pii import iban_valid

__all__ = ["LOCALES", "Item", "generate", "score_by_kind"]

#: Locales whose phone numbers and IBANs are generated (Faker's own formats).
LOCALES = (
    "en_US", "en_GB", "en_CA", "en_AU", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL",
    "pt_BR", "pl_PL", "sv_SE", "ja_JP", "de_AT", "de_CH", "fr_CH", "en_IE",
)  # fmt: skip
_CARD_LOCALES = ("en_US", "ru_RU", "zh_CN", "fa_IR", "pt_PT", "uk_UA")


@dataclass(frozen=True, slots=True)
class Item:
    """A text and its personal data: ``(kind, start, end)`` spans."""

    text: str
    truth: tuple[tuple[str, int, int], ...]


_WITH_CUE = {
    "phone": (
        "Call me at {v}.", "My phone number is {v}", "Tel.: {v}", "You can reach the front desk on "
        "{v} any time.", "mobile {v}", "Phone: {v} (ask for {name})", "{name} - cell {v}",
        "Please ring {v} to confirm the booking.", "Contact number: {v}",
    ),
    "credit_card": (
        "Card number: {v}", "I paid with my card {v} yesterday.", "Visa {v} exp 09/28",
        "Charge it to {v}, please.", "cc {v}", "The card on file ends in this: {v}",
    ),
    "email": ("Write to {v}.", "E-mail: {v}", "{name} <{v}>", "cc'd {v} on the thread"),
    "iban": ("IBAN: {v}", "Please transfer the deposit to {v}.", "Account {v} ({name})"),
    "ip_address": ("Login from {v} was blocked.", "server at {v}", "client_ip={v}"),
    "us_ssn": ("SSN: {v}", "Social security number {v}", "her SSN is {v}."),
}  # fmt: skip
_NO_CUE = {
    "phone": ("{name}, {v}, {city}", "{v} ({name})", "Questions? {v}", "{name}\n{v}"),
    "credit_card": ("{v}", "Payment details: {v} / {name}", "{name} {v}"),
    "email": ("{v}", "from: {v}"),
    "iban": ("{v}", "{name}, {v}"),
    "ip_address": ("{v}", "GET /index.html from {v}"),
    "us_ssn": ("{name} {v}",),
}  # fmt: skip


_DATES = ("%d/%m/%Y", "%Y-%m-%d", "%m.%d.%Y")


def _decoys(fake: Any, rng: random.Random) -> str:
    """A sentence with numbers that are not personal data."""
    options: tuple[Callable[[], str], ...] = (
        lambda: (
            f"The meeting is on {fake.date(pattern=rng.choice(_DATES))} "
            f"at {fake.time(pattern='%H:%M')}."
        ),
        lambda: f"Order #{rng.randint(10**7, 10**10)} ships from {fake.city()} today.",
        lambda: (
            f"Invoice {rng.randint(2019, 2026)}-{rng.randint(10**4, 10**6)} totals "
            f"${rng.randint(100, 99999):,}.{rng.randint(0, 99):02d}."
        ),
        lambda: f"ISBN {fake.isbn13()} is out of print.",
        lambda: f"EAN {fake.ean13()} - {rng.randint(2, 40)} units in stock.",
        lambda: f"Ship to {fake.postcode()} {fake.city()}.",
        lambda: (
            f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}."
        ),
        lambda: f"Population grew to {rng.randint(10**5, 10**8):,} in {rng.randint(1950, 2024)}.",
        lambda: f"Tracking number {rng.randint(10**11, 10**12 - 1)}.",
        lambda: f"Reference: {rng.randint(10**12, 10**16)}",
        lambda: f"The distance is {rng.randint(1, 9999)} km and took {rng.randint(1, 48)} hours.",
        lambda: (
            f"Ticket {rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)} "
            "was closed."
        ),
        lambda: (
            f"Revenue: {rng.randint(1, 999)} {rng.randint(100, 999)} {rng.randint(100, 999)} EUR"
        ),
    )
    return rng.choice(options)()


def _value(kind: str, rng: random.Random, fakers: dict[str, Any]) -> str:
    if kind == "phone":
        return str(fakers[rng.choice(LOCALES)].phone_number())
    if kind == "credit_card":
        loc = rng.choice(_CARD_LOCALES) if rng.random() < 0.35 else "en_US"
        digits = str(fakers[loc].credit_card_number())
        style = rng.random()
        if style < 0.4:
            return digits
        sep = " " if style < 0.75 else "-"
        if len(digits) == 15 and digits[:2] in ("34", "37"):
            return sep.join((digits[:4], digits[4:10], digits[10:]))
        return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    if kind == "email":
        return str(fakers[rng.choice(LOCALES)].email())
    if kind == "iban":
        for _ in range(10):
            loc = rng.choice(LOCALES)
            try:
                iban = str(fakers[loc].iban())
            except AttributeError:
                continue
            if not iban_valid(iban):  # Faker's en_GB IBANs are 21 characters, not 22
                continue
            if rng.random() < 0.5:
                return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
            return iban
        return str(fakers["de_DE"].iban())
    if kind == "ip_address":
        return str(fakers["en_US"].ipv4() if rng.random() < 0.7 else fakers["en_US"].ipv6())
    return str(fakers["en_US"].ssn())


def generate(n: int = 1000, seed: int = 0) -> list[Item]:
    """``n`` labelled texts; the same ``seed`` gives the same set (with the same Faker)."""
    from faker import Faker

    rng = random.Random(seed)
    fakers: dict[str, Any] = {}
    for i, loc in enumerate(sorted(set(LOCALES) | set(_CARD_LOCALES))):
        fakers[loc] = Faker(loc)
        fakers[loc].seed_instance(seed * 1000 + i)
    kinds = (
        "phone",
        "phone",
        "credit_card",
        "credit_card",
        "email",
        "iban",
        "ip_address",
        "us_ssn",
    )
    out: list[Item] = []
    for _ in range(n):
        parts: list[tuple[str, str | None]] = []
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(kinds)
            pool = _WITH_CUE if rng.random() < 0.6 else _NO_CUE
            template = rng.choice(pool[kind])
            value = _value(kind, rng, fakers)
            name = fakers["en_US"].name()
            before, after = template.split("{v}")
            parts.append((before.format(name=name, city=fakers["en_US"].city()), None))
            parts.append((value, kind))
            parts.append((after.format(name=name, city=fakers["en_US"].city()), None))
            if rng.random() < 0.7:
                parts.append((" " + _decoys(fakers[rng.choice(LOCALES)], rng) + " ", None))
            else:
                parts.append((" ", None))
        text = ""
        truth: list[tuple[str, int, int]] = []
        for piece, kind_of in parts:
            if kind_of is not None:
                truth.append((kind_of, len(text), len(text) + len(piece)))
            text += piece
        out.append(Item(text, tuple(truth)))
    return out


def score_by_kind(
    check: Callable[[str], Sequence[Any]], items: Sequence[Item]
) -> dict[str, dict[str, float]]:
    """Precision, recall and counts per kind. A true value is found when a finding of its
    kind overlaps it; a finding that overlaps no true value of its kind is a false positive."""
    tp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    for item in items:
        found = [(f.kind, f.start, f.end) for f in check(item.text)]
        for kind, s, e in item.truth:
            if any(k == kind and fs < e and s < fe for k, fs, fe in found):
                tp[kind] += 1
            else:
                fn[kind] += 1
        for kind, fs, fe in found:
            if not any(k == kind and fs < e and s < fe for k, s, e in item.truth):
                fp[kind] += 1
    out: dict[str, dict[str, float]] = {}
    for kind in sorted(set(tp) | set(fn) | set(fp)):
        t, n_fp, n_fn = tp[kind], fp[kind], fn[kind]
        out[kind] = {
            "precision": t / (t + n_fp) if t + n_fp else 1.0,
            "recall": t / (t + n_fn) if t + n_fn else 1.0,
            "tp": t,
            "fp": n_fp,
            "fn": n_fn,
        }
    return out
