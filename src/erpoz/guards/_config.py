"""The ``guards`` and ``policy`` sections of ``erpoz.yaml``.

```yaml
guards:
  fail: closed                  # closed (default): a guard that crashes blocks; open: logs
  alert: {window: 50, below: 0.8, min_samples: 20}   # quality_alert on a falling pass rate
  checks:                       # name: {type, at, params...}; type defaults to the name
    pii: {at: [model_input, tool_call, delivery]}
    injection: {at: [model_input, tool_result]}
    toxicity: {at: model_output, threshold: 0.8}
    answer_json: {type: schema, at: model_output, schema: myapp.types:Answer}

policy:                         # the rules (see erpoz.policy), or the path of a policy file
  rules:
    - {name: cards never leave, data: pii.credit_card, action: redact}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..flow import LineMap, LineSeq
from ..policy import CHECKPOINTS, Policy, load_policy, policy_from_doc
from ._rails import Check, Guardrails, QualityAlert

if TYPE_CHECKING:
    from ..models import ProjectConfig

_GUARD_KEYS = {"fail", "alert", "checks"}
_ALERT_KEYS = {"window", "below", "min_samples"}


def guardrails_from_config(config: ProjectConfig) -> Guardrails | None:
    """The project's guardrails, or ``None`` when it configures neither guards nor policy."""
    doc = config._doc
    if not isinstance(doc, LineMap) or ("guards" not in doc and "policy" not in doc):
        return None
    file = config.file or "erpoz.yaml"
    checks: list[Check] = []
    fail_closed = True
    alert: QualityAlert | None = None
    section = doc.get("guards")
    if section is not None:
        line = doc.lines["guards"]
        if not isinstance(section, LineMap):
            raise ConfigError(
                "'guards' is a mapping with fail, alert and checks", file=file, line=line
            )
        _known_keys(section, _GUARD_KEYS, "guards", file)
        fail = section.get("fail", "closed")
        if fail not in ("closed", "open"):
            raise ConfigError(
                f"guards.fail: expected closed or open, not {fail!r}",
                file=file,
                line=section.lines["fail"],
            )
        fail_closed = fail == "closed"
        if "alert" in section:
            alert = _alert(section["alert"], file, section.lines["alert"])
        raw_checks = section.get("checks", LineMap())
        if not isinstance(raw_checks, LineMap):
            raise ConfigError(
                "guards.checks is a mapping of name: {type, at, params}",
                file=file,
                line=section.lines.get("checks", line),
            )
        for name in raw_checks:
            checks.append(_check(name, raw_checks, file))
    # a data rule names a detector that a configured guard reports, or it could never apply
    policy = _policy(doc, file, config._base, {c.guard.name for c in checks})
    return Guardrails(checks, policy, fail_closed=fail_closed, alert=alert)


def _policy(doc: LineMap, file: str, base: Path | None, detectors: set[str]) -> Policy:
    section = doc.get("policy")
    if section is None:
        return Policy()
    if isinstance(section, str):
        path = Path(section)
        if not path.is_absolute():
            path = (base or Path(file).parent) / path
        return load_policy(path, detectors=detectors)
    if not isinstance(section, LineMap) or "rules" not in section:
        raise ConfigError(
            "'policy' is a mapping with 'rules' (and optionally 'untrusted', 'spotlight', "
            "'masked_check', 'delivery_untrusted'), "
            "or the path of a policy file",
            file=file,
            line=doc.lines["policy"],
        )
    return policy_from_doc(section, file=file, detectors=detectors, section="policy")


def _known_keys(section: LineMap, known: set[str], where: str, file: str) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(
                f"unknown key '{key}' in {where} (expected: {', '.join(sorted(known))})",
                file=file,
                line=section.key_lines[key],
            )


def _alert(raw: Any, file: str, line: int) -> QualityAlert:
    if not isinstance(raw, LineMap):
        raise ConfigError(
            "guards.alert is a mapping: window, below, min_samples", file=file, line=line
        )
    _known_keys(raw, _ALERT_KEYS, "guards.alert", file)
    window = raw.get("window", 50)
    below = raw.get("below", 0.8)
    min_samples = raw.get("min_samples", min(20, window) if isinstance(window, int) else 20)
    for key, value in (("window", window), ("min_samples", min_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"guards.alert.{key} must be a whole number >= 1",
                file=file,
                line=raw.lines.get(key, raw.line),
            )
    if isinstance(below, bool) or not isinstance(below, int | float) or not 0 < below <= 1:
        raise ConfigError(
            "guards.alert.below must be a pass rate in (0, 1]",
            file=file,
            line=raw.lines.get("below", raw.line),
        )
    return QualityAlert(window, float(below), min(min_samples, window))


def _check(name: str, checks: LineMap, file: str) -> Check:
    from ._registry import build_guard

    raw = checks[name]
    line = checks.lines[name]
    if raw is None:
        raw = LineMap()
        raw.line, raw.lines, raw.key_lines = line, {}, {}
    if not isinstance(raw, LineMap):
        raise ConfigError(
            f"guard '{name}' is a mapping: type, at and the guard's parameters",
            file=file,
            line=line,
        )
    kind = raw.get("type", name)
    at_raw = raw.get("at", list(CHECKPOINTS))
    items = [at_raw] if isinstance(at_raw, str) else at_raw
    if not isinstance(items, LineSeq | list) or not items:
        raise ConfigError(
            f"guard '{name}': 'at' is a checkpoint or a list of them",
            file=file,
            line=raw.lines.get("at", line),
        )
    for cp in items:
        if cp not in CHECKPOINTS:
            raise ConfigError(
                f"guard '{name}': unknown checkpoint {cp!r} (checkpoints: "
                f"{', '.join(CHECKPOINTS)})",
                file=file,
                line=raw.lines.get("at", line),
            )
    params = {k: v for k, v in raw.items() if k not in ("type", "at")}
    # a guard that cannot be built is reported at its 'type' (or its name when it has none)
    where = raw.lines["type"] if "type" in raw else checks.key_lines.get(name, line)
    guard = build_guard(kind, params, file=file, line=where)
    return Check(guard, frozenset(items), name)
