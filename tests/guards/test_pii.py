"""PII detector: checksums, spans on look-alike text, redaction, pseudonymisation round trip,
and precision/recall floors on the labelled sets in ``labelled.py``."""

from __future__ import annotations

import pytest
from labelled import HELD_OUT_PII, PII, pii_scores

from erpoz.eval.pii_data import generate, score_by_kind
from erpoz.guards import Finding, Guard, PIIDetector, Pseudonymizer, redact, run_guards
from erpoz.guards.pii import card_issuer, iban_valid, luhn_valid

DETECTOR = PIIDetector()


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in DETECTOR.check(text)]


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("4111111111111111", True),
        ("378282246310005", True),
        ("6011111111111117", True),
        ("4111111111111112", False),
        ("1234567890123456", False),
        ("41111111111x1111", False),
    ],
)
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("DE89 3704 0044 0532 0130 00", True),
        ("GB82WEST12345698765432", True),
        ("fr1420041010050500013m02606", True),
        ("DE89 3704 0044 0532 0130 01", False),  # check digits do not match
        ("DE89 3704 0044 0532 0130 0", False),  # wrong length for Germany
        ("XX00", False),
    ],
)
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


def test_every_span_points_into_the_original() -> None:
    for text, _ in PII:
        for f in DETECTOR.check(text):
            assert text[f.start : f.end] == f.text
            assert 0.0 <= f.score <= 1.0


def test_spans_on_look_alike_text() -> None:
    text = (
        "Mail ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ or pay "
        "４１１１\u200b １１１１ １１１１ １１１１ — thanks"
    )
    found = DETECTOR.check(text)
    assert [f.kind for f in found] == ["email", "credit_card"]
    email, card = found
    assert (email.start, email.end) == (5, 5 + len("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"))
    assert card.text == "４１１１\u200b １１１１ １１１１ １１１１"
    assert text[card.end :] == " — thanks"


def test_cyrillic_letters_in_an_email() -> None:
    text = "to mаrk@exаmple.org now"  # two Cyrillic 'а'
    assert kinds(text) == [("email", "mаrk@exаmple.org")]


def test_non_luhn_and_invalid_ids_are_not_reported() -> None:
    assert kinds("card 4111 1111 1111 1112") == []
    assert kinds("ssn 666-12-3456") == []
    assert kinds("id 86095742719") == []  # valid check digit, but nothing says it is a tax id
    assert kinds("Steuer-ID 86095742718") == []  # wrong check digit


def test_kinds_can_be_limited() -> None:
    only_mail = PIIDetector(kinds=["email"])
    assert [f.kind for f in only_mail.check("a@b.io 4111111111111111")] == ["email"]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PIIDetector(kinds=["name"])


def test_redact() -> None:
    text = "Jane <jane@ex.org>, card 4111-1111-1111-1111, IBAN GB82WEST12345698765432."
    assert redact(text, DETECTOR.check(text)) == "Jane <[EMAIL]>, card [CREDIT_CARD], IBAN [IBAN]."


def test_redact_merges_overlaps() -> None:
    overlapping = (
        Finding("x", "phone", 0, 5, "01234", 1.0),
        Finding("x", "email", 3, 8, "34567", 1.0),
    )
    assert redact("0123456789", overlapping) == "[PHONE]89"


def test_pseudonymize_round_trip_and_stable_placeholders() -> None:
    p = Pseudonymizer()
    text = "a@x.io wrote to b@y.io; a@x.io again. Call +44 20 7946 0958."
    masked, mapping = p.pseudonymize(text)
    assert masked == "<EMAIL_1> wrote to <EMAIL_2>; <EMAIL_1> again. Call <PHONE_1>."
    assert Pseudonymizer.restore(masked, mapping) == text
    # the same value keeps its placeholder in a later message, however it is spelled
    masked2, mapping2 = p.pseudonymize("Reply to A@X.IO or +44 (0)20… no: +44-20-7946-0958")
    assert "<EMAIL_1>" in masked2 and "<PHONE_1>" in masked2
    assert Pseudonymizer.restore(masked2, mapping2).startswith("Reply to A@X.IO")


def test_restore_leaves_unknown_placeholders() -> None:
    assert Pseudonymizer.restore("<EMAIL_9> and <EMAIL_1>", {"<EMAIL_1>": "a@b.io"}) == (
        "<EMAIL_9> and a@b.io"
    )


def test_detector_is_a_guard() -> None:
    guard: Guard = DETECTOR
    report = run_guards("mail a@b.io", [guard])
    assert report.flagged and report.findings[0].detector == "pii"
    assert not run_guards("nothing here", [guard]).flagged


def test_labelled_set_is_big_enough() -> None:
    negatives = sum(1 for _, expected in PII if not expected)
    assert len(PII) >= 60 and negatives >= 30


def test_precision_and_recall_per_kind() -> None:
    scores = pii_scores(DETECTOR.check)
    assert set(scores) == set(PIIDetector.KINDS)
    for kind, (precision, recall, _, _) in scores.items():
        assert precision >= 0.95, (kind, precision)
        assert recall >= 0.95, (kind, recall)


def test_held_out_floor() -> None:
    """Measured on text the detector was not tuned on; the floors are what it achieves."""
    scores = pii_scores(DETECTOR.check, HELD_OUT_PII)
    for kind, (precision, recall, _, _) in scores.items():
        assert precision >= 0.5, (kind, precision)
        assert recall >= 0.6, (kind, recall)


@pytest.mark.parametrize(
    ("digits", "issuer"),
    [
        ("501800000009", "Maestro"),  # 12 digits
        ("180000000000002", "JCB"),  # 15 digits, 1800
        ("213100000000001", "JCB"),
        ("3528000000000007", "JCB"),
        ("6221260000000000", "UnionPay"),
        ("6200000000000005", "UnionPay"),
        ("2200000000000004", "Mir"),
        ("4111111111111", "Visa"),  # 13 digits
        ("3530111333300000", "JCB"),
        ("1234567890128", None),  # no issuer starts with 12 at 13 digits
        ("4111111111111111111", "Visa"),  # 19 digits
        ("41111111111111111", None),  # Visa has no 17-digit numbers
    ],
)
def test_card_issuer_ranges(digits: str, issuer: str | None) -> None:
    found = card_issuer(digits)
    assert (found.name if found else None) == issuer


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("card 5018 0000 0009 on file", "5018 0000 0009"),
        ("JCB 1800 0000 0000 002", "1800 0000 0000 002"),
        ("call 345-899-3560x4587 today", "345-899-3560x4587"),
        ("office +1-912-490-4047 ext. 96", "+1-912-490-4047 ext. 96"),
        ("Berlin +49(0)7483378876", "+49(0)7483378876"),
        ("Kraków 503 940 290", "503 940 290"),
        ("Tokyo 080-9825-9791", "080-9825-9791"),
    ],
)
def test_issuer_cards_and_library_phones(text: str, value: str) -> None:
    assert [f.text for f in DETECTOR.check(text)] == [value]


@pytest.mark.parametrize(
    "text",
    [
        "1234 5678 9012 3456 is a made-up number",
        "Revenue: 184 608 773 EUR",
        "Tracking number 243091438372.",
        "ISBN 978-0-563-65410-0 is out of print.",
        "Population grew to 69,025,437 in 2009.",
    ],
)
def test_numbers_that_are_not_personal_data(text: str) -> None:
    assert DETECTOR.check(text) == ()


def test_phone_regions_are_checked() -> None:
    with pytest.raises(ValueError, match="XX"):
        PIIDetector(phone_regions=["US", "XX"])
    only_us = PIIDetector(phone_regions=["US"])
    assert only_us.check("Kraków 503 940 290") == ()  # valid in Poland only


def test_generated_set_precision_and_recall() -> None:
    """Faker across 18 locales, seeded, made here (never stored): the floors the issue sets
    for cards and phones, and no kind below 0.95."""
    scores = score_by_kind(DETECTOR.check, generate(600, seed=11))
    for kind, got in scores.items():
        assert got["precision"] >= 0.95, (kind, got)
        assert got["recall"] >= 0.95, (kind, got)
    assert {"credit_card", "phone", "email", "iban", "ip_address", "us_ssn"} <= set(scores)
