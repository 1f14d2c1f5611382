"""Guards: detectors run over text before it reaches a model, a tool or a person.

Each implements :class:`Guard` (a ``name`` and ``check(text) -> tuple[Finding, ...]``);
:func:`run_guards` runs several and returns one :class:`GuardReport`.
"""

from ._findings import Finding, Guard, GuardReport, run_guards
from .injection import InjectionDetector
from .pii import PIIDetector, Pseudonymizer, redact

__all__ = [
    "Finding",
    "Guard",
    "GuardReport",
    "InjectionDetector",
    "PIIDetector",
    "Pseudonymizer",
    "redact",
    "run_guards",
]
