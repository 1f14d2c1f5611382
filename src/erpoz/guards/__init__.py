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

from ._checkpoints import Governed
from ._config import guardrails_from_config, project_guardrails, reset_project_guardrails
from ._findings import Finding, Guard, GuardReport, run_guards
from ._rails import Check, Decided, Guardrails, QualityAlert, QualityMonitor, Verdict
from ._registry import build_guard, known_guards
from .grounded import GroundednessGuard
from .injection import InjectionDetector
from .injection_model import InjectionClassifier
from .language import LanguageGuard
from .length import LengthGuard
from .pii import PIIDetector, Pseudonymizer, redact
from .schema import SchemaGuard
from .toxicity import ToxicityGuard

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
    "project_guardrails",
    "redact",
    "reset_project_guardrails",
    "run_guards",
]
