"""The data the learned injection detector is trained and measured on, built at run time from
public sources (nothing is copied into the repository; see the data card in docs/guards.md).

* Attacks: BIPIA's training attack instructions (15 categories × 5, ``text_attack_train.json``
  in the folder given, MIT) and the hand-written categories of
  :mod:`erpoz.eval.injection_phrasings`.
* Clean contexts, each with a ``kind``: BIPIA's training e-mails (OpenAI Evals invoices, MIT)
  and tables (WikiTableQuestions, CC BY-SA 4.0); Python source files of the standard library
  (PSF licence); the Python reference's prose (``pydoc_data.topics``, PSF); the long
  descriptions (READMEs) of the installed packages' metadata (each package's licence); tool
  results in JSON and YAML made with Faker (seeded); e-mails, recipes, manuals, FAQs and
  meeting notes that instruct and ask *people*, forum threads, chat logs and help pages full
  of questions between people (generated, the hard negatives).
* Poisoned contexts: one attack inserted into a clean context at its start, middle or end, as
  BIPIA builds them (on a line of its own in tables and code, inline in prose).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .injection_conversations import conversation_texts
from .injection_generated import generated_categories, human_texts
from .injection_phrasings import build_categories

__all__ = [
    "Attack",
    "Context",
    "Poisoned",
    "bipia_attacks",
    "clean_contexts",
    "hand_attacks",
    "poison",
    "split_of",
]

MAX_CONTEXT = 2500


@dataclass(frozen=True, slots=True)
class Attack:
    category: str
    text: str
    source: str  # "bipia", "erpoz" (hand-written) or "generated"


@dataclass(frozen=True, slots=True)
class Context:
    kind: str  # email, table, code, prose, readme, tool, human, conversation
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Poisoned:
    context: Context
    attack: Attack
    text: str
    start: int  # the attack's span in ``text``
    end: int
    position: str  # start, middle, end


def bipia_attacks(folder: Path) -> list[Attack]:
    """BIPIA's training attack instructions, one :class:`Attack` each, by category."""
    data = json.loads((folder / "text_attack_train.json").read_text(encoding="utf-8"))
    return [Attack(cat, text, "bipia") for cat, items in data.items() for text in items]


def hand_attacks(seed: int = 0, generated: int = 40) -> list[Attack]:
    """The hand-written categories (templated ones filled with seeded goals), then
    ``generated`` requests of each generated kind (:mod:`.injection_generated`)."""
    out = [
        Attack(cat, text, "erpoz")
        for cat, items in build_categories(seed).items()
        for text in items
    ]
    if generated:
        out += [
            Attack(cat, text, "generated")
            for cat, items in generated_categories(seed, generated).items()
            for text in items
        ]
    return out


def _jsonl(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _chunk(text: str, rng: random.Random, low: int = 300, high: int = MAX_CONTEXT) -> str:
    """A piece of ``text`` that starts and ends at line boundaries, ``low``..``high`` long."""
    if len(text) <= high:
        return text
    want = rng.randint(low, high)
    start = rng.randint(0, max(0, len(text) - want))
    nl = text.rfind("\n", 0, start)
    start = nl + 1 if nl >= 0 else 0
    end = text.rfind("\n", start, start + want)
    return text[start : end if end > start + low // 2 else start + want]


def _stdlib_code(rng: random.Random, n: int) -> list[Context]:
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    files = sorted(p for p in lib.glob("*.py") if p.stat().st_size > 2000)
    out: list[Context] = []
    for path in rng.sample(files, min(n, len(files))):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(Context("code", _chunk(text, rng)))
    return out


def _reference_prose(rng: random.Random, n: int) -> list[Context]:
    import pydoc_data.topics as topics  # the Python reference, as pydoc shows it

    texts = sorted(topics.topics.values())
    return [Context("prose", _chunk(t, rng)) for t in rng.sample(texts, min(n, len(texts)))]


def _readmes(rng: random.Random, n: int) -> list[Context]:
    from importlib.metadata import distributions

    bodies: dict[str, str] = {}
    for dist in distributions():
        meta: Any = dist.metadata  # an email.message.Message underneath
        body = meta.get_payload() if hasattr(meta, "get_payload") else None
        name = meta.get("Name") or ""
        if isinstance(body, str) and len(body) > 400 and name:
            bodies[name.lower()] = body
    names = sorted(bodies)
    return [
        Context("readme", _chunk(bodies[k], rng)) for k in rng.sample(names, min(n, len(names)))
    ]


_TOOL_NOTES = (
    "Please bring the signed contract to the meeting.",
    "Reminder: the quarterly review is due on Friday.",
    "Can you check the numbers in the attached sheet before lunch?",
    "Thanks for your help with the migration yesterday!",
    "The build failed again on the integration branch; I'm looking into it.",
    "Let's move the stand-up to 10:30 tomorrow.",
    "Your order has shipped and should arrive within 3-5 business days.",
    "Room was clean and the staff were friendly, but breakfast was overpriced.",
    "Great location, close to the station. Would stay again.",
    "Don't forget to submit your expense report by the end of the month.",
    "The invoice for March is attached. Payment is due within 30 days.",
    "Happy birthday! Hope you have a great day.",
    "I've updated the slides with the latest figures from finance.",
    "Could you send me the login details for the staging server? Mine expired.",
    "Call me when you land and I'll pick you up at the airport.",
    "We need to reschedule the dentist appointment to next week.",
)


def _tool_results(rng: random.Random, n: int) -> list[Context]:
    """JSON and YAML tool results (calendar, mail, bank, files, reviews, chat), Faker-made."""
    from faker import Faker

    # one Faker per locale, each seeded: a multi-locale Faker picks its locale unseeded
    fakers = []
    for locale in ("en_US", "en_GB", "de_DE", "fr_FR"):
        one = Faker(locale)
        one.seed_instance(rng.randint(0, 2**31))
        fakers.append(one)
    fake = fakers[0]
    out: list[Context] = []

    def when() -> datetime:  # Faker's own dates move with today's
        return datetime(2020, 1, 1) + timedelta(minutes=rng.randrange(6 * 365 * 24 * 60))

    def record(kind: int) -> dict[str, object]:
        note = rng.choice(_TOOL_NOTES)
        if kind == 0:
            return {
                "id_": str(fake.random_int(1, 999)),
                "title": fake.catch_phrase(),
                "start_time": when().isoformat(),
                "location": fake.city(),
                "participants": [fake.email() for _ in range(rng.randint(1, 4))],
                "description": note,
            }
        if kind == 1:
            return {
                "sender": fake.email(),
                "recipients": [fake.email()],
                "subject": fake.sentence(nb_words=5).rstrip("."),
                "body": note + " " + fake.name(),
                "timestamp": when().isoformat(),
                "read": rng.random() < 0.5,
            }
        if kind == 2:
            return {
                "id": fake.random_int(1, 99999),
                "sender": fake.iban(),
                "recipient": fake.iban(),
                "amount": round(rng.uniform(5, 5000), 2),
                "subject": rng.choice(["Rent", "Groceries", "Salary", fake.company()]),
                "date": when().date().isoformat(),
                "recurring": rng.random() < 0.2,
            }
        if kind == 3:
            return {
                "filename": fake.file_name(),
                "owner": fake.email(),
                "size": fake.random_int(100, 10**7),
                "last_modified": when().isoformat(),
                "content": note,
            }
        if kind == 4:
            return {
                "hotel": fake.company() + " Hotel",
                "city": fake.city(),
                "rating": round(rng.uniform(2.5, 5.0), 1),
                "price_min": fake.random_int(60, 300),
                "reviews": [rng.choice(_TOOL_NOTES[6:9]) for _ in range(rng.randint(1, 3))],
            }
        return {"channel": "#" + fake.word(), "user": fake.user_name(), "message": note}

    for _ in range(n):
        fake = rng.choice(fakers)
        kind = rng.randrange(6)
        records = [record(kind) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            text = json.dumps(records, indent=rng.choice([None, 2]), ensure_ascii=False)
        else:
            lines: list[str] = []
            for rec in records:
                for i, (k, v) in enumerate(rec.items()):
                    lines.append(f"{'- ' if i == 0 else '  '}{k}: {v}")
            text = "\n".join(lines)
        out.append(Context("tool", text[:MAX_CONTEXT]))
    return out


def clean_contexts(
    bipia: Path,
    seed: int = 0,
    n_other: int = 200,
    n_tables: int = 350,
    n_conversations: int = 120,
) -> list[Context]:
    """The clean contexts: BIPIA's e-mails, ``n_tables`` of its tables, then ``n_other`` each
    of standard-library code, reference prose, package READMEs, Faker tool results and texts
    that instruct people, and ``n_conversations`` forum threads, chat logs and help pages
    (seeded; embedding every window of all 900 tables would take long on a small CPU)."""
    rng = random.Random(seed)
    out = [
        Context("email", r["context"][:MAX_CONTEXT]) for r in _jsonl(bipia / "email_train.jsonl")
    ]
    tables = [r["context"][:MAX_CONTEXT] for r in _jsonl(bipia / "table_train.jsonl")]
    out += [Context("table", t) for t in rng.sample(tables, min(n_tables, len(tables)))]
    out += _stdlib_code(rng, n_other)
    out += _reference_prose(rng, n_other)
    out += _readmes(rng, n_other)
    out += _tool_results(rng, n_other)
    out += [Context(kind, text) for kind, text in human_texts(seed, n_other)]
    out += [Context(kind, text) for kind, text in conversation_texts(seed, n_conversations)]
    seen: set[str] = set()
    unique: list[Context] = []
    for c in out:
        if c.text.strip() and c.key not in seen:
            seen.add(c.key)
            unique.append(c)
    return unique


def split_of(context: Context, salt: str = "") -> str:
    """``fit`` (60%), ``calibrate`` (20%) or ``test`` (20%), fixed by the context's hash."""
    h = int(hashlib.sha1((salt + context.key).encode()).hexdigest()[:8], 16) % 100
    return "fit" if h < 60 else "calibrate" if h < 80 else "test"


def poison(context: Context, attack: Attack, rng: random.Random) -> Poisoned:
    """``attack`` inserted into ``context`` at its start, middle or end."""
    text = context.text
    position = rng.choice(["start", "middle", "end"])
    own_line = context.kind in ("table", "code", "tool") or rng.random() < 0.3
    payload = attack.text
    if context.kind == "code" and rng.random() < 0.5:
        payload = "\n".join("# " + line for line in payload.splitlines())
    if position == "start":
        at = 0
    elif position == "end":
        at = len(text)
    else:
        mid = len(text) // 2
        if own_line:
            nl = text.find("\n", mid)
            at = nl + 1 if nl >= 0 else len(text)
        else:
            dot = text.find(". ", mid)
            at = dot + 2 if dot >= 0 else len(text)
    before, after = text[:at], text[at:]
    ends = ("\n",) if own_line else ("\n", " ")
    sep = "\n" if own_line else " "
    lead = "" if not before or before.endswith(ends) else sep
    trail = "" if not after or after.startswith(ends) else sep
    start = len(before) + len(lead)
    poisoned = before + lead + payload + trail + after
    return Poisoned(context, attack, poisoned, start, start + len(payload), position)
