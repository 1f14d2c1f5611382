"""Step functions shared by the flow tests (importable as ``flowsteps``)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from pydantic import BaseModel

from erpoz import step


@dataclass
class Doc:
    title: str
    words: int


@dataclass
class Other:
    title: str
    words: int


@dataclass
class Draft:
    text: str
    version: int
    valid: bool


class Report(BaseModel):
    name: str
    scores: list[int]
    doc: Doc | None = None


def make_text(n: int) -> str:
    return "x" * n


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def halve(x: float) -> float:
    return x / 2


def shout(text: str) -> str:
    return text.upper()


def count(text: str) -> int:
    return len(text)


def words(text: str) -> list[str]:
    return text.split()


def numbers(n: int) -> list[int]:
    return list(range(n))


def total(xs: list[int]) -> int:
    return sum(xs)


def make_doc(title: str) -> Doc:
    return Doc(title=title, words=len(title.split()))


def read_doc(doc: Doc) -> str:
    return doc.title


def read_other(doc: Other) -> str:
    return doc.title


def maybe_int(x: int) -> int | None:
    return x if x > 0 else None


def opt_or_zero(x: int | None) -> int:
    return 0 if x is None else x


def int_or_str(x: int | str) -> str:
    return str(x)


def flag(x: int) -> bool:
    return x > 0


def classify(text: str) -> str:
    return "billing" if "refund" in text else "other"


def label(text: str) -> str:
    return f"label:{text}"


def with_default(x: int = 7) -> int:
    return x * 10


def revise(draft: Draft, target: int) -> Draft:
    version = draft.version + 1
    return Draft(text=f"{draft.text}+", version=version, valid=version >= target)


def bump(n: int) -> int:
    return n + 1


def make_report(name: str, scores: list[int]) -> Report:
    return Report(name=name, scores=scores, doc=Doc(title=name, words=len(scores)))


def report_name(report: Report) -> str:
    return report.name


def thread_name(x: int) -> str:
    return threading.current_thread().name


def thread_is_main(x: int) -> bool:
    return threading.current_thread() is threading.main_thread()


@step(inline=True)
def inline_thread_is_main(x: int) -> bool:
    return threading.current_thread() is threading.main_thread()


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x
