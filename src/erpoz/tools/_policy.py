"""Tool policy files: rules in YAML, every mistake reported with file and line.

```yaml
rules:
  - name: billing may read invoices      # names the rule in every policy_decided event
    tool: lookup_*                       # globs; each defaults to "*"
    flow: billing
    step: "*"
    action: allow                        # allow | deny | review | log
  - name: mail needs a person
    tool: send_email
    action: review
```

Rules are tried in order; the first that matches decides; no match denies.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from ..errors import ConfigError, FlowError
from ..flow._yaml import _LineLoader, _Map, _Seq

Action = Literal["allow", "deny", "review", "log"]


@dataclass(frozen=True, slots=True)
class Rule:
    """``action`` for tools matching ``tool`` (a glob) called from ``flow`` / ``step`` (globs)."""

    name: str
    action: Action
    tool: str = "*"
    flow: str = "*"
    step: str = "*"

    def matches(self, tool_name: str, flow: str, step: str) -> bool:
        return (
            fnmatch.fnmatchcase(tool_name, self.tool)
            and fnmatch.fnmatchcase(flow, self.flow)
            and fnmatch.fnmatchcase(step, self.step)
        )


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """Rules in order; the first that matches decides. No match: denied (tools are denied
    unless granted)."""

    rules: tuple[Rule, ...] = ()

    def decide(self, tool_name: str, flow: str, step: str) -> tuple[Action, str]:
        for rule in self.rules:
            if rule.matches(tool_name, flow, step):
                return rule.action, rule.name
        return "deny", "default: tools are denied unless granted"


_KEYS = {"name", "tool", "flow", "step", "action"}
_ACTIONS = get_args(Action)


def load_policy(path: str | Path) -> ToolPolicy:
    """Read a policy file; ``ConfigError`` naming file, line and what was expected."""
    fname = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the policy file: {exc.strerror}", file=fname) from None
    return parse_policy(text, file=fname)


def parse_policy(text: str, *, file: str = "policy.yaml") -> ToolPolicy:
    try:
        doc: Any = yaml.load(text, Loader=_LineLoader)
    except FlowError as exc:
        raise ConfigError(exc.message, file=file, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(
            f"malformed YAML: {exc.problem or exc.context}",
            file=file,
            line=mark.line + 1 if mark else None,
        ) from None
    if not isinstance(doc, _Map) or set(doc) != {"rules"}:
        raise ConfigError(
            "a policy file is a mapping with one key, 'rules' (a list)",
            file=file,
            line=getattr(doc, "line", 1),
        )
    rules_doc = doc["rules"]
    if not isinstance(rules_doc, _Seq):
        raise ConfigError("'rules' must be a list of rules", file=file, line=doc.lines["rules"])
    rules: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(rules_doc):
        line = rules_doc.lines[i]
        if not isinstance(raw, _Map):
            raise ConfigError(
                "each rule is a mapping with name, action and globs", file=file, line=line
            )
        for key in raw:
            if key not in _KEYS:
                raise ConfigError(
                    f"unknown key '{key}' in a rule (expected: {', '.join(sorted(_KEYS))})",
                    file=file,
                    line=raw.key_lines[key],
                )
        for key in ("name", "action"):
            if key not in raw:
                raise ConfigError(f"rule {i + 1} has no '{key}'", file=file, line=raw.line)
        for key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"'{key}' must be a string", file=file, line=raw.lines[key])
        if raw["action"] not in _ACTIONS:
            raise ConfigError(
                f"action {raw['action']!r}: expected one of {', '.join(_ACTIONS)}",
                file=file,
                line=raw.lines["action"],
            )
        if raw["name"] in names:
            raise ConfigError(
                f"two rules are named {raw['name']!r}", file=file, line=raw.lines["name"]
            )
        names.add(raw["name"])
        rules.append(
            Rule(
                raw["name"],
                raw["action"],
                raw.get("tool", "*"),
                raw.get("flow", "*"),
                raw.get("step", "*"),
            )
        )
    return ToolPolicy(tuple(rules))
