"""Policy: who may use which tool or model, and what happens to which data, as ordered rules.

A rule names a **subject** (flow, step, tenant, user: globs), one **resource** (a tool, a model,
or a data class that a guard finds) and an **action**. Rules are tried in order; the first rule
whose subject and resource match decides.

```yaml
rules:
  - name: billing may read invoices      # names the rule in every policy_decided event
    tool: lookup_*                       # a tool rule ("*": every tool); a rule names one
    flow: billing
    action: allow                        # tools: allow | deny | review | log
  - name: mail needs a person
    tool: send_email
    action: review
  - name: free tier stays local
    model: gpt-*                         # a model rule: allow | deny | review | log
    tenant: free-*
    action: deny
  - name: cards never reach a model
    data: pii.credit_card                # a data rule: "detector.kind" or just "detector"
    at: [model_input, delivery]          # checkpoints (default: all)
    action: redact                       # allow | log | redact | pseudonymize | block |
                                         # review | reask | escalate
  - name: rude answers are asked again
    data: toxicity
    at: [model_output]
    action: reask
    max_reasks: 2
  - name: mail only to people the user named
    tool: send_email
    action: allow
    untrusted: deny                      # arguments derived from untrusted content:
    untrusted_fields: [subject, body]    #   deny | review | allow; these fields may carry it
untrusted: deny                          # the default for tools with side effects (read-only
spotlight: delimit                       #   tools: allow); how untrusted text is marked
masked_check: true                       # re-ask the model without the user's request
delivery_untrusted: review               # a result derived from untrusted content:
                                         #   allow (default) | deny | review
```

**Provenance** (see :mod:`erpoz.provenance`): when a model whose context held untrusted text
(tool results, retrieved documents) proposes a tool call, each argument is trusted only if
trusted text (the caller's prompt, configuration) holds its value. A tool rule's ``untrusted``
says what happens to a call with untrusted arguments outside ``untrusted_fields``; without it,
tools with side effects get the policy's ``untrusted`` (default ``deny``) and read-only tools
take them. A model rule's ``untrusted`` says whether that model may read untrusted content at
all (``deny``: the dual-LLM pattern's privileged model). With ``masked_check``, a side effect
proposed after untrusted text is also checked by asking the model again with the user's
request masked: a call it proposes then too comes from the untrusted text, whatever its
arguments (MELON, Zhu et al., 2025). ``delivery_untrusted`` does the same for a flow's
result: a delivered step that read untrusted content (or whose result holds text of it) is
delivered (``allow``, the default: summarising a retrieved document is the usual case),
fails the run (``deny``) or waits for a person (``review``), with a ``policy_decided`` event.

Defaults when no rule matches: a tool is **denied** (tools are denied unless granted), a model
is allowed, a finding is logged (recorded, nothing else happens). Configuration fails closed: a
rule that names no resource, an empty one, or (in ``erpoz.yaml``) a data rule whose detector no
configured guard reports is an error with file and line, never "allow all".
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .flow import LineMap, dotted, explain, load_config_yaml, read_text_file
from .provenance import SPOTLIGHTS, SpotlightMode

Action = Literal[
    "allow", "deny", "review", "log", "redact", "pseudonymize", "block", "reask", "escalate"
]
Checkpoint = Literal["model_input", "model_output", "tool_call", "tool_result", "delivery"]
CHECKPOINTS: tuple[Checkpoint, ...] = get_args(Checkpoint)

#: What each kind of resource may be told to do.
TOOL_ACTIONS = frozenset({"allow", "deny", "review", "log"})
MODEL_ACTIONS = frozenset({"allow", "deny", "review", "log"})
DATA_ACTIONS = frozenset(
    {"allow", "log", "redact", "pseudonymize", "block", "review", "reask", "escalate"}
)
#: Which checkpoints a data action makes sense at (the others: every checkpoint).
_ONLY_AT: dict[str, frozenset[str]] = {
    "reask": frozenset({"model_output"}),
    "escalate": frozenset({"model_output"}),
    "pseudonymize": frozenset({"model_input"}),
}
#: How strong each action is when several findings in one text decide differently.
STRENGTH = {
    "allow": 0,
    "log": 1,
    "redact": 2,
    "pseudonymize": 2,
    "reask": 3,
    "escalate": 4,
    "review": 5,
    "block": 6,
    "deny": 6,
}

TOOL_DEFAULT = "default: tools are denied unless granted"
MODEL_DEFAULT = "default: models are allowed unless denied"
DATA_DEFAULT = "default: findings are logged"
UNTRUSTED_DEFAULT = "default: side effects get the policy's 'untrusted' (deny unless set)"
READ_ONLY_DEFAULT = "default: read-only tools take untrusted arguments"
#: What a rule (or the policy) may do with a tool call that has untrusted arguments.
UNTRUSTED_ACTIONS = frozenset({"allow", "deny", "review"})


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: the flow and step of the run, and the run's tenant and user (the run's
    ``tenant`` / ``user`` tags; ``"-"`` when not given)."""

    flow: str = "-"
    step: str = "-"
    tenant: str = "-"
    user: str = "-"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. ``tool`` / ``flow`` / ``step`` are positional for short tool rules:
    ``Rule("reads", "allow", "lookup_*")``. Set ``model`` or ``data`` for the other resources.
    A rule names its resource: ``Rule("r", "allow")`` is an error, not "every tool" (say
    ``tool="*"`` for that)."""

    name: str
    action: Action
    tool: str | None = None
    flow: str = "*"
    step: str = "*"
    tenant: str = "*"
    user: str = "*"
    model: str | None = None
    data: str | None = None
    at: frozenset[str] = frozenset(CHECKPOINTS)
    min_score: float = 0.0
    max_reasks: int = 1
    to: str | None = None  # escalate: the model to ask instead
    untrusted: str | None = None  # tools: allow | deny | review for untrusted arguments
    untrusted_fields: frozenset[str] = frozenset()  # tools: arguments that may be untrusted

    def __post_init__(self) -> None:
        if self.untrusted_fields and self.tool is None:
            raise ValueError(f"rule {self.name!r}: 'untrusted_fields' is for tool rules")
        if self.untrusted is not None and self.resource == "data":
            raise ValueError(f"rule {self.name!r}: 'untrusted' is for tool and model rules")
        if self.untrusted is not None and self.untrusted not in UNTRUSTED_ACTIONS:
            raise ValueError(
                f"rule {self.name!r}: untrusted={self.untrusted!r} is not one of "
                f"{', '.join(sorted(UNTRUSTED_ACTIONS))}"
            )
        if self.tool is None and self.model is None and self.data is None:
            raise ValueError(
                f"rule {self.name!r} names no resource: give tool=, model= or data= "
                "('*' for every tool); a rule that names nothing is not 'allow all'"
            )
        for what in ("name", "tool", "model", "data"):
            if getattr(self, what) == "":
                raise ValueError(f"rule {self.name!r}: {what} is empty")
        allowed = {"tool": TOOL_ACTIONS, "model": MODEL_ACTIONS, "data": DATA_ACTIONS}[
            self.resource
        ]
        if self.action not in allowed:
            raise ValueError(
                f"rule {self.name!r}: action {self.action!r} is not one of "
                f"{', '.join(sorted(allowed))} for a {self.resource} rule"
            )
        only = _ONLY_AT.get(self.action)
        if only is not None and self.resource == "data" and not self.at <= only:
            raise ValueError(
                f"rule {self.name!r}: action {self.action!r} applies only at "
                f"{', '.join(sorted(only))}; pass at=frozenset({{...}}) with that"
            )
        if self.action == "escalate" and not self.to:
            raise ValueError(f"rule {self.name!r}: an escalate rule names the model 'to' ask")

    @property
    def resource(self) -> Literal["tool", "model", "data"]:
        return "data" if self.data is not None else "model" if self.model is not None else "tool"

    def _subject(self, s: Subject) -> bool:
        return (
            _glob(s.flow, self.flow)
            and _glob(s.step, self.step)
            and _glob(s.tenant, self.tenant)
            and _glob(s.user, self.user)
        )

    def matches_data(
        self, data_class: str, checkpoint: str, score: float, s: Subject, model: str = "-"
    ) -> bool:
        if self.data is None or checkpoint not in self.at or score < self.min_score:
            return False
        pattern = self.data
        target = data_class if "." in pattern else data_class.split(".", 1)[0]
        if not fnmatch.fnmatchcase(target, pattern):
            return False
        if self.model is not None and not _glob(model, self.model):
            return False
        return self._subject(s)


def _glob(value: str, pattern: str) -> bool:
    return pattern == "*" or fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True, slots=True)
class UntrustedDecision:
    """What happens to a tool call some of whose arguments derive from untrusted content:
    ``action`` (allow | deny | review), the rule that said so, the untrusted arguments the
    rule does not let through (``blocked``) and all untrusted ones."""

    action: str
    rule: str
    blocked: tuple[str, ...]
    untrusted: tuple[str, ...]


class Policy:
    """Rules in order; the first that matches decides. ``untrusted`` is what tools with side
    effects do with arguments derived from untrusted content when their rule does not say
    (deny | review | allow); ``spotlight`` how untrusted text sent to a model is marked;
    ``delivery_untrusted`` what happens to a flow's result derived from untrusted content
    (allow | deny | review)."""

    __slots__ = (
        "_by_name",
        "_data",
        "_models",
        "_tools",
        "delivery_untrusted",
        "masked_check",
        "rules",
        "spotlight",
        "untrusted",
    )

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        untrusted: str = "deny",
        spotlight: str = "delimit",
        masked_check: bool = True,
        delivery_untrusted: str = "allow",
    ) -> None:
        if untrusted not in UNTRUSTED_ACTIONS:
            raise ValueError(f"untrusted={untrusted!r}: expected allow, deny or review")
        if delivery_untrusted not in UNTRUSTED_ACTIONS:
            raise ValueError(
                f"delivery_untrusted={delivery_untrusted!r}: expected allow, deny or review"
            )
        self.delivery_untrusted = delivery_untrusted
        if spotlight not in SPOTLIGHTS:
            raise ValueError(f"spotlight={spotlight!r}: expected {', '.join(SPOTLIGHTS)}")
        self.untrusted = untrusted
        self.spotlight = spotlight
        self.masked_check = masked_check
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._tools = tuple(r for r in self.rules if r.resource == "tool")
        self._models = tuple(r for r in self.rules if r.resource == "model")
        self._data = tuple(r for r in self.rules if r.resource == "data")
        self._by_name = {r.name: r for r in self.rules}

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, if there is one."""
        return self._by_name.get(name)

    def __repr__(self) -> str:
        return f"Policy({len(self.rules)} rules)"

    @property
    def has_model_rules(self) -> bool:
        return bool(self._models)

    @property
    def has_data_rules(self) -> bool:
        return bool(self._data)

    def decide(
        self, tool_name: str, flow: str = "-", step: str = "-", subject: Subject | None = None
    ) -> tuple[Action, str]:
        """Whether ``tool_name`` may be called: ``(action, rule name)``; no rule: denied."""
        s = subject if subject is not None else Subject(flow, step)
        for rule in self._tools:
            if _glob(tool_name, rule.tool or "") and rule._subject(s):
                return rule.action, rule.name
        return "deny", TOOL_DEFAULT

    def untrusted_of(self, tool_name: str, subject: Subject) -> dict[str, Any]:
        """What a call of ``tool_name`` gets for untrusted arguments, as ``erpoz policy check``
        says it: the action for a tool with side effects and for a read-only one, the fields
        that may carry untrusted content, and the rule (or default) that says so."""
        for rule in self._tools:
            if _glob(tool_name, rule.tool or "") and rule._subject(subject):
                if rule.untrusted is None and not rule.untrusted_fields:
                    break
                return {
                    "side_effects": rule.untrusted or self.untrusted,
                    "read_only": rule.untrusted or "allow",
                    "fields": sorted(rule.untrusted_fields),
                    "rule": rule.name,
                }
        return {
            "side_effects": self.untrusted,
            "read_only": "allow",
            "fields": [],
            "rule": f"{UNTRUSTED_DEFAULT}; {READ_ONLY_DEFAULT}",
        }

    def decide_untrusted(
        self, tool_name: str, subject: Subject, side_effects: bool, labels: Mapping[str, str]
    ) -> UntrustedDecision | None:
        """Whether a call of ``tool_name`` may take its untrusted arguments (``labels``: each
        argument's label); ``None`` when none is untrusted."""
        untrusted = tuple(k for k, label in labels.items() if label == "untrusted")
        if not untrusted:
            return None
        for rule in self._tools:
            if _glob(tool_name, rule.tool or "") and rule._subject(subject):
                if rule.untrusted is not None or rule.untrusted_fields:
                    blocked = tuple(k for k in untrusted if k not in rule.untrusted_fields)
                    action = rule.untrusted or (self.untrusted if side_effects else "allow")
                    return UntrustedDecision(
                        action if blocked else "allow", rule.name, blocked, untrusted
                    )
                break
        if not side_effects:
            return UntrustedDecision("allow", READ_ONLY_DEFAULT, (), untrusted)
        return UntrustedDecision(self.untrusted, UNTRUSTED_DEFAULT, untrusted, untrusted)

    def decide_model_untrusted(self, model: str, subject: Subject) -> tuple[str, str] | None:
        """Whether ``model`` may read untrusted content: ``(action, rule name)`` of the first
        matching model rule that says (``untrusted``), else ``None`` (it may)."""
        for rule in self._models:
            if (
                rule.untrusted is not None
                and rule.model is not None
                and _glob(model, rule.model)
                and rule._subject(subject)
            ):
                return rule.untrusted, rule.name
        return None

    def decide_model(self, model: str, subject: Subject) -> tuple[Action, str]:
        """Whether ``model`` may be asked: ``(action, rule name)``; no rule: allowed."""
        for rule in self._models:
            if rule.model is not None and _glob(model, rule.model) and rule._subject(subject):
                return rule.action, rule.name
        return "allow", MODEL_DEFAULT

    def decide_data(
        self,
        data_class: str,
        checkpoint: str,
        subject: Subject,
        *,
        score: float = 1.0,
        model: str = "-",
    ) -> Rule | None:
        """The rule that decides a finding of ``data_class`` (``"pii.email"``) at
        ``checkpoint``, or ``None`` (the default: log)."""
        for rule in self._data:
            if rule.matches_data(data_class, checkpoint, score, subject, model):
                return rule
        return None


#: The name the tool-only API had; the same class.
ToolPolicy = Policy

# --- the shape of a policy file ----------------------------------------------------------------
_GLOB = r"\S"
_NAME = r"^\s*\S"
#: what each string pattern of the models below asks for, in words
PATTERNS = {
    _GLOB: "is empty: name something, or '*' for anything",
    _NAME: "is empty",
}
Glob = Annotated[str, Field(pattern=_GLOB, description="A glob ('*': anything)")]
Untrusted = Literal["deny", "review", "allow"]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RuleSpec(_File):
    """One policy rule as written in a file: a subject (flow, step, tenant, user), one resource
    (tool, model or data) and an action; the first rule that matches decides. Which actions and
    keys go with which resource the reader checks (:class:`Rule` says it too)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Rule")
    name: str = Field(pattern=_NAME)
    action: Action
    tool: Glob | None = None
    model: Glob | None = None
    data: Glob | None = Field(None, description="A detector ('pii') or 'detector.kind'")
    flow: Glob | None = None
    step: Glob | None = None
    tenant: Glob | None = None
    user: Glob | None = None
    at: Checkpoint | Annotated[list[Checkpoint], Field(min_length=1)] | None = Field(
        None, description="Data rules only"
    )
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    max_reasks: int = Field(1, ge=1)
    to: str | None = Field(None, pattern=_NAME, description="The model an 'escalate' rule asks")
    untrusted: Untrusted | None = Field(
        None, description="Tool and model rules: what arguments derived from untrusted content get"
    )
    untrusted_fields: (
        Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]] | None
    ) = Field(None, description="Tool rules: the arguments that may carry untrusted content")


class PolicyFile(_File):
    """A policy file (or the ``policy`` section of ``erpoz.yaml``)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="erpoz policy")
    rules: list[RuleSpec]
    untrusted: Untrusted = Field(
        "deny", description="What tools with side effects get for untrusted arguments"
    )
    # ``off`` unquoted is false in YAML 1.1, which is what PyYAML reads
    spotlight: SpotlightMode | Literal[False] = Field(
        "delimit", description="How untrusted text sent to a model is marked"
    )
    masked_check: bool = Field(
        True, description="Re-ask the model without the user's request before a side effect"
    )
    delivery_untrusted: Untrusted = Field(
        "allow", description="What happens to a flow's result derived from untrusted content"
    )


#: The keys of a policy file (and of the ``policy`` section of ``erpoz.yaml``).
POLICY_KEYS = frozenset(PolicyFile.model_fields)


def load_policy(path: str | Path, *, detectors: Collection[str] | None = None) -> Policy:
    """Read a policy file; ``ConfigError`` naming file, line and what was expected."""
    fname = str(path)
    try:
        text = read_text_file(Path(path), "the policy file")
    except ValueError as exc:
        raise ConfigError(str(exc), file=fname) from None
    return parse_policy(text, file=fname, detectors=detectors)


def parse_policy(
    text: str, *, file: str = "policy.yaml", detectors: Collection[str] | None = None
) -> Policy:
    """Check the text of a policy file (a mapping with one key, ``rules``)."""
    doc: Any = load_config_yaml(text, file)
    if not isinstance(doc, LineMap) or "rules" not in doc:
        raise ConfigError(
            "a policy file is a mapping with 'rules' (a list), and optionally 'untrusted', "
            "'spotlight', 'masked_check' and 'delivery_untrusted'",
            file=file,
            line=getattr(doc, "line", 1),
        )
    return policy_from_doc(doc, file=file, detectors=detectors)


def policy_from_doc(
    doc: LineMap,
    *,
    file: str,
    detectors: Collection[str] | None = None,
    section: str = "",
) -> Policy:
    """The rules of a parsed ``{rules: [...]}`` mapping (a policy file, or the ``policy``
    section of ``erpoz.yaml``: ``section="policy"`` says so in errors), checked by
    :class:`PolicyFile`, then what a schema cannot say (one resource a rule, the actions and
    keys of each, names given once). With ``detectors`` (the guards that are configured), a
    data rule naming another detector is an error: it could never apply."""
    try:
        PolicyFile.model_validate(doc)
    except ValidationError as exc:

        def place(path: tuple[str | int, ...]) -> str:
            said = dotted(path)
            if path[:1] == ("rules",) and len(path) > 1:
                said = f"rule {int(path[1]) + 1}" + (f" ({dotted(path[2:])})" if path[2:] else "")
            return f"{section}: {said}" if section and said else section or said

        mistake = explain(exc, doc, PolicyFile, place=place, patterns=PATTERNS)
        raise ConfigError(mistake.message, file=file, line=mistake.line) from None
    rules_doc = doc["rules"]
    for raw in rules_doc:  # a key given as null is a key not given (the schema takes both)
        for key in [k for k, v in raw.items() if v is None]:
            del raw[key]
    rules: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(rules_doc):
        rule = _rule(raw, i, rules_doc.lines[i], file, detectors)
        if rule.name in names:
            assert isinstance(raw, LineMap)
            raise ConfigError(
                f"two rules are named {rule.name!r}", file=file, line=raw.lines["name"]
            )
        names.add(rule.name)
        rules.append(rule)
    options: dict[str, Any] = {}
    for key in ("untrusted", "spotlight", "delivery_untrusted", "masked_check"):
        if key in doc:
            options[key] = "off" if key == "spotlight" and doc[key] is False else doc[key]
    return Policy(tuple(rules), **options)


def _rule(raw: Any, i: int, line: int, file: str, detectors: Collection[str] | None = None) -> Rule:
    if not isinstance(raw, LineMap):
        raise ConfigError(
            "each rule is a mapping with name, action and what it applies to", file=file, line=line
        )

    def err(msg: str, key: str | None = None, *, at_key: bool = False) -> ConfigError:
        where = raw.line
        if key is not None:
            where = raw.key_lines[key] if at_key else raw.lines[key]
        return ConfigError(msg, file=file, line=where)

    action = raw["action"]
    resource = _rule_resource(raw, action, err)
    at = _rule_checkpoints(raw, resource, action, err)
    min_score, max_reasks = _rule_numbers(raw)
    untrusted, fields = _untrusted(raw, resource, err)
    globs: Mapping[str, str] = {k: raw[k] for k in ("flow", "step", "tenant", "user") if k in raw}
    if detectors is not None and "data" in raw:
        _check_rule_detector(raw, detectors, err)
    return Rule(
        name=raw["name"],
        action=action,
        tool=raw.get("tool"),
        model=raw.get("model"),
        data=raw.get("data"),
        at=at,
        min_score=min_score,
        max_reasks=max_reasks,
        to=raw.get("to"),
        untrusted=untrusted,
        untrusted_fields=fields,
        **globs,
    )


#: how a rule's checks make an error: ``err(message, key=None, *, at_key=False)``, at the line
#: of the rule, of a key's value, or (``at_key``) of the key itself
_RuleError = Callable[..., ConfigError]


def _rule_resource(raw: LineMap, action: str, err: _RuleError) -> str:
    """What the rule is about (``tool``, ``model`` or ``data``; a data rule may narrow to a
    model), with an action allowed for it."""
    resources = [k for k in ("tool", "model", "data") if k in raw]
    if len(resources) > 1 and not (set(resources) == {"data", "model"}):
        raise err(
            f"rule {raw['name']!r} names {' and '.join(resources)}; a rule is about one "
            "resource (a data rule may narrow to a model with 'model')"
        )
    resource = "data" if "data" in raw else "model" if "model" in raw else "tool"
    allowed = {"tool": TOOL_ACTIONS, "model": MODEL_ACTIONS, "data": DATA_ACTIONS}[resource]
    if action not in allowed:
        raise err(
            f"action {action!r}: expected one of {', '.join(sorted(allowed))} for a "
            f"{resource} rule",
            "action",
        )
    if not resources:
        raise err(
            f"rule {raw['name']!r} names no resource: give 'tool', 'model' or 'data' "
            "(tool: '*' for every tool); a rule that names nothing is not 'allow all'"
        )
    return resource


def _rule_checkpoints(raw: LineMap, resource: str, action: str, err: _RuleError) -> frozenset[str]:
    """The checkpoints a rule applies at (``at``: data rules only; default all), those its
    action allows, and an escalation's model (``to``) where, and only where, it belongs."""
    at: frozenset[str] = frozenset(CHECKPOINTS)
    if "at" in raw:
        if resource != "data":
            raise err("'at' (checkpoints) is for data rules only", "at", at_key=True)
        value = raw["at"]
        at = frozenset([value] if isinstance(value, str) else value)
    only = _ONLY_AT.get(action)
    if only is not None and not at <= only:
        raise err(
            f"action {action!r} applies only at {', '.join(sorted(only))}; set 'at' to that",
            "action",
        )
    if action == "escalate" and "to" not in raw:
        raise err("an 'escalate' rule names the model to ask instead with 'to'", "action")
    if "to" in raw and action != "escalate":
        raise err("'to' is for escalate rules", "to", at_key=True)
    return at


def _rule_numbers(raw: LineMap) -> tuple[float, int]:
    """``min_score`` (0 to 1, default 0) and ``max_reasks`` (default 1), checked by
    :class:`RuleSpec`."""
    return float(raw.get("min_score", 0.0)), int(raw.get("max_reasks", 1))


def _check_rule_detector(raw: LineMap, detectors: Collection[str], err: _RuleError) -> None:
    """A data rule names a detector that a configured guard reports (or a pattern)."""
    detector = raw["data"].split(".", 1)[0]
    if not any(c in detector for c in "*?[") and detector not in detectors:
        known = ", ".join(sorted(detectors)) or "none configured"
        raise err(
            f"rule {raw['name']!r}: data {raw['data']!r} names detector {detector!r}, "
            f"which no guard in guards.checks reports (detectors: {known})",
            "data",
        )


def _untrusted(raw: LineMap, resource: str, err: Any) -> tuple[str | None, frozenset[str]]:
    """A tool rule's ``untrusted`` action and ``untrusted_fields``."""
    if "untrusted_fields" in raw and resource != "tool":
        raise err("'untrusted_fields' is for tool rules", "untrusted_fields", at_key=True)
    if "untrusted" in raw and resource == "data":
        raise err("'untrusted' is for tool and model rules", "untrusted", at_key=True)
    value = raw.get("untrusted_fields") or []
    return raw.get("untrusted"), frozenset([value] if isinstance(value, str) else value)
