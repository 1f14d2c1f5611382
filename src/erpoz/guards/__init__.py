"""Guards: detectors run over text before it reaches a model, a tool or a person.

Each implements :class:`Guard` (a ``name`` and ``check(text) -> tuple[Finding, ...]``);
:func:`run_guards` runs several and returns one :class:`GuardReport`. A guard that needs the
sources a text was written from (:class:`GroundednessGuard`) says so with
``uses_sources = True`` and takes them as ``check(text, sources)``.

:func:`build_guard` makes a guard from a kind and parameters, as a YAML file names them; the
kinds are plug-ins of the ``erpoz.guards`` entry-point group (:func:`known_guards`).

:class:`Guardrails` runs the configured guards at the checkpoints (model input and output, tool
call and result, delivery) and maps their findings to actions through the policy
(:mod:`erpoz.policy`); steps meet it through ``ctx.models`` and ``ctx.tools``.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_getattr
from ._checkpoints import Governed
from ._config import guardrails_from_config
from ._findings import Finding, Guard, GuardReport, run_guards
from ._rails import Check, Decided, Guardrails, QualityAlert, QualityMonitor, Verdict
from ._registry import build_guard, known_guards

if TYPE_CHECKING:
    from .grounded import GroundednessGuard
    from .injection import InjectionDetector
    from .injection_model import InjectionClassifier
    from .language import LanguageGuard
    from .length import LengthGuard
    from .pii import PIIDetector, Pseudonymizer, redact
    from .schema import SchemaGuard
    from .toxicity import ToxicityGuard

_DETECTORS = {
    "GroundednessGuard": ".grounded",
    "InjectionDetector": ".injection",
    "InjectionClassifier": ".injection_model",
    "LanguageGuard": ".language",
    "LengthGuard": ".length",
    "PIIDetector": ".pii",
    "Pseudonymizer": ".pii",
    "redact": ".pii",
    "SchemaGuard": ".schema",
    "ToxicityGuard": ".toxicity",
}
"""The detectors, imported on first use (a run whose project configures no guard, or only some,
does not pay for the others; :func:`build_guard` imports a kind's module by its entry point)."""


__getattr__: Callable[[str], Any] = lazy_getattr(__name__, _DETECTORS, globals())


__all__ = [
    "Check",
    "Decided",
    "Finding",
    "Governed",
    "GroundednessGuard",
    "Guard",
    "GuardReport",
    "Guardrails",
    "InjectionClassifier",
    "InjectionDetector",
    "LanguageGuard",
    "LengthGuard",
    "PIIDetector",
    "Pseudonymizer",
    "QualityAlert",
    "QualityMonitor",
    "SchemaGuard",
    "ToxicityGuard",
    "Verdict",
    "build_guard",
    "guardrails_from_config",
    "known_guards",
    "redact",
    "run_guards",
]
