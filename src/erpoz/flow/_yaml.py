"""YAML flow files: the same power as the Python API; every error names file and line.

```yaml
name: triage
inputs:
  ticket: str
  top_k: {type: int, default: 3}
steps:
  - id: classify
    uses: mypkg.steps:classify        # a step function by import path
    with: {text: "${inputs.ticket}"}
  - id: refund
    uses: mypkg.steps:refund
    when: ${classify.label} == "billing"
    with: {ticket: "${inputs.ticket}"}
output: ${first_of(refund, classify)}
```
"""

from __future__ import annotations

import builtins
import importlib
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import FlowError
from ._flow import Flow
from ._refs import Coalesce, Cond, FieldRef, InputRef, NodeRef, Ref
from ._step import Resources, RetryPolicy

_REF = re.compile(r"^\$\{\s*(.+?)\s*\}$")
_WHEN = re.compile(r"^(not\s+)?\$\{\s*([^}]+?)\s*\}\s*(?:(==|!=)\s*(.+))?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "Any": Any,
    "any": Any,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "None": type(None),
    "Optional": typing.Optional,
    "Literal": typing.Literal,
}


class LineMap(dict[str, Any]):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    lines: dict[str, int]  # line of each value
    key_lines: dict[str, int]  # line of each key


class LineSeq(list[Any]):
    line: int = 0
    lines: list[int]


#: Bounds on any YAML erpoz reads (flow files, erpoz.yaml, policies): a file bigger, deeper or
#: whose aliases expand to more is an error naming the file, not a process that grows without
#: bound ("billion laughs") or dies of recursion.
MAX_YAML_CHARS = 4 * 1024 * 1024
MAX_YAML_DEPTH = 100
MAX_ALIAS_VALUES = 100_000


class _LineLoader(yaml.SafeLoader):
    """Safe YAML with line numbers kept, bounded in depth and in what aliases expand to."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise FlowError(
                    f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep",
                    line=mark.line + 1,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineMap:  # type: ignore[override]
        out = LineMap()
        out.line = node.start_mark.line + 1
        out.lines = {}
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise FlowError(
                    f"keys must be strings, got {key!r}", line=key_node.start_mark.line + 1
                )
            if key in out:
                raise FlowError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
            out[key] = self.construct_object(value_node, deep=True)
            out.lines[key] = value_node.start_mark.line + 1
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineSeq:
        out = LineSeq(self.construct_object(n, deep=True) for n in node.value)
        out.line = node.start_mark.line + 1
        out.lines = [n.start_mark.line + 1 for n in node.value]
        return out


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose aliases add more than ``MAX_ALIAS_VALUES`` values, make it
    deeper than ``MAX_YAML_DEPTH`` once expanded, or refer to themselves. Counted over the
    node graph (an alias is the node it names), never by expanding it."""
    size: dict[int, int] = {}  # node -> values it stands for, expanded
    depth: dict[int, int] = {}
    distinct: set[int] = set()
    open_: set[int] = set()

    def visit(node: yaml.Node) -> None:
        key = id(node)
        if key in size:
            return
        if key in open_:
            raise FlowError(
                "an alias refers to the value that contains it (a recursive anchor)",
                line=node.start_mark.line + 1,
            )
        open_.add(key)
        distinct.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            visit(child)
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        open_.discard(key)
        if depth[key] > MAX_YAML_DEPTH:
            raise FlowError(
                f"aliases make the YAML more than {MAX_YAML_DEPTH} levels deep",
                line=node.start_mark.line + 1,
            )
        if size[key] - len(distinct) > MAX_ALIAS_VALUES:
            raise FlowError(
                f"aliases expand the YAML by more than {MAX_ALIAS_VALUES:,} values (a "
                '"billion laughs"?); write the values out instead',
                line=node.start_mark.line + 1,
            )

    if root is not None:
        visit(root)


def load_bounded_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_LineLoader` within the bounds above; ``FlowError`` (with
    the line when there is one) for malformed or oversized YAML."""
    if len(text) > MAX_YAML_CHARS:
        raise FlowError(
            f"the YAML is {len(text):,} characters long, more than the "
            f"{MAX_YAML_CHARS:,} a file may have"
        )
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FlowError(
            f"malformed YAML: {exc.problem or exc.context}", line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise FlowError(f"malformed YAML: {exc}") from None


def read_text_file(path: Path, what: str) -> str:
    """A text file's contents as UTF-8; ``ValueError`` saying what is wrong (unreadable, not
    UTF-8, too big) in words that name no path (callers add it)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_CHARS * 4 + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_CHARS * 4:
        raise ValueError(f"{what} is larger than {MAX_YAML_CHARS * 4:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _LineLoader.construct_mapping,
)
_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
    _LineLoader.construct_sequence,
)


def parse_type(text: str, *, base: Path | None = None) -> Any:
    """Parse a type written in a flow file: ``str``, ``list[int]``, ``int | None``,
    ``mypkg.models:Doc``."""
    text = text.strip()
    parts = _split_args(text, sep="|")
    if len(parts) > 1:
        return typing.Union[tuple(parse_type(p, base=base) for p in parts)]  # noqa: UP007
    m = re.match(r"^([\w.:]+)\s*(?:\[(.*)\])?$", text)
    if not m:
        raise ValueError(f"cannot read type {text!r}")
    head, args = m.group(1), m.group(2)
    if head in _TYPE_NAMES:
        origin = _TYPE_NAMES[head]
    else:
        origin = import_object(head, base=base, what="type")
    if args is None:
        return origin
    parsed = tuple(
        _literal(a)
        if origin is typing.Literal
        else Ellipsis
        if a == "..."
        else parse_type(a, base=base)
        for a in _split_args(args)
    )
    return origin[parsed if len(parsed) > 1 else parsed[0]]


def _literal(text: str) -> Any:
    return yaml.safe_load(text)


def _split_args(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets: ``dict[str, int], str`` → two parts."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def import_object(ref: str, *, base: Path | None = None, what: str = "step") -> Any:
    """Import ``module:attr`` (or ``module.attr``); the flow file's folder is importable too."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
    else:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} {ref!r} must be an import path like 'package.module:name'")
    added = False
    if base is not None and str(base) not in sys.path:
        sys.path.insert(0, str(base))
        added = True
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module '{module_name}' for {what} {ref!r}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove(str(base))
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module '{module_name}' has no {what} '{attr}'") from None
    return obj


def load_yaml_flow(path: str | Path, *, _stack: tuple[Path, ...] = ()) -> Flow:
    """Read a flow file; ``FlowError`` with file and line for anything wrong in it."""
    p = Path(path).resolve()
    fname = str(path)
    if p in _stack:
        raise FlowError(
            "sub-flows include each other: " + " -> ".join(str(s) for s in (*_stack, p)), file=fname
        )
    try:
        text = read_text_file(p, "the flow file")
    except ValueError as exc:
        raise FlowError(str(exc), file=fname) from None
    try:
        doc = load_bounded_yaml(text)
    except FlowError as exc:
        raise exc.at(file=fname) from None
    return _Builder(fname, p, _stack).build(doc)


class _Builder:
    def __init__(self, fname: str, path: Path, stack: tuple[Path, ...]) -> None:
        self.fname = fname
        self.path = path
        self.base = path.parent
        self.stack = (*stack, path)

    def err(self, msg: str, line: int | None, step: str | None = None) -> FlowError:
        return FlowError(msg, file=self.fname, line=line, step=step)

    def build(self, doc: Any) -> Flow:
        if not isinstance(doc, LineMap):
            raise self.err("a flow file is a mapping with 'name', 'inputs', 'steps', 'output'", 1)
        self.check(doc)
        inputs, defaults = self.inputs(doc)
        try:
            flow = Flow(
                str(doc.get("name", self.path.stem)),
                inputs,
                defaults=defaults,
                description=str(doc.get("description", "")),
                source=str(self.path),
            )
        except FlowError as exc:
            raise exc.at(file=self.fname, line=doc.lines.get("name")) from None
        flow.file = self.fname
        steps = doc["steps"]
        for i, raw in enumerate(steps):
            self.add_step(flow, raw, steps.lines[i])
        if "output" in doc:
            line = doc.lines["output"]
            ref = self.ref(doc["output"], line, None)
            if not isinstance(ref, Ref):
                raise self.err("'output' must be a reference like ${step} or ${step.field}", line)
            flow.output(ref)
        return flow

    def check(self, doc: LineMap) -> None:
        """The file's shape, as :class:`FlowFile` describes it; what a schema cannot say (refs,
        imports, types, sub-flows) is checked while building."""
        from ._checked import dotted, explain
        from ._file import PATTERNS, FlowFile

        try:
            FlowFile.model_validate(doc)
        except ValidationError as exc:

            def place(path: tuple[str | int, ...]) -> str:
                return dotted(path[2:] if path[:1] == ("steps",) else path)

            mistake = explain(exc, doc, FlowFile, place=place, patterns=PATTERNS)
            step = None
            if mistake.loc[:1] == ("steps",) and len(mistake.loc) > 1:
                raw = doc["steps"][mistake.loc[1]]
                step = raw.get("id") if isinstance(raw, dict) else None
            raise self.err(
                mistake.message, mistake.line, step if isinstance(step, str) else None
            ) from None
        # an optional key given as null is a key not given (the schema lets both through)
        for mapping in (doc, *doc["steps"]):
            for key in [k for k, v in mapping.items() if v is None]:
                del mapping[key]

    def inputs(self, doc: LineMap) -> tuple[dict[str, Any], dict[str, Any]]:
        """The flow's ``inputs``: their types, and the defaults of those that have one."""
        inputs: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        raw_inputs = doc.get("inputs") or LineMap()
        for key, spec in raw_inputs.items():
            line = raw_inputs.lines[key] if isinstance(raw_inputs, LineMap) else None
            if isinstance(spec, dict):
                if "default" in spec:
                    defaults[key] = spec["default"]
                spec = spec.get("type", "Any")
            try:
                inputs[key] = parse_type(spec, base=self.base)
            except ValueError as exc:
                raise self.err(f"input '{key}': {exc}", line) from None
        return inputs, defaults

    def ref(self, value: Any, line: int | None, step: str | None) -> Any:
        """Turn ``${...}`` strings (also inside lists) into refs; anything else is a constant."""
        if isinstance(value, list):
            return [self.ref(v, line, step) for v in value]
        if not isinstance(value, str):
            return value
        m = _REF.match(value.strip())
        if not m:
            if "${" in value:
                raise self.err(
                    f"{value!r}: a reference must be the whole value, like "
                    "'${step.field}' (no string interpolation)",
                    line,
                    step,
                )
            return value
        return self.parse_ref(m.group(1), line, step)

    def parse_ref(self, expr: str, line: int | None, step: str | None) -> Ref:
        expr = expr.strip()
        fm = re.match(r"^first_of\((.*)\)$", expr)
        if fm:
            parts = [p.strip() for p in fm.group(1).split(",") if p.strip()]
            if len(parts) < 2:
                raise self.err("first_of() needs two or more references", line, step)
            return Coalesce(tuple(self.parse_ref(p, line, step) for p in parts))
        if not _NAME.match(expr):
            raise self.err(
                f"cannot read reference '${{{expr}}}': use inputs.NAME, STEP or STEP.FIELD",
                line,
                step,
            )
        head, *path = expr.split(".")
        if head == "inputs":
            if not path:
                raise self.err("'${inputs}' needs an input name: ${inputs.NAME}", line, step)
            base: Ref = InputRef(path[0])
            path = path[1:]
        else:
            base = NodeRef(head)
        return FieldRef(base, tuple(path)) if path else base

    def exceptions(self, names: Any) -> tuple[type[BaseException], ...]:
        """``ValueError`` or ``[TimeoutError, mypkg.errors:RateLimited]`` as exception classes."""
        out = []
        for name in [names] if isinstance(names, str) else list(names):
            obj = getattr(builtins, str(name), None)
            if obj is None:
                obj = import_object(str(name), base=self.base, what="exception")
            if not (isinstance(obj, type) and issubclass(obj, BaseException)):
                raise ValueError(f"{name!r} is not an exception class")
            out.append(obj)
        return tuple(out)

    def when(self, text: Any, line: int | None, step: str) -> Cond:
        if not isinstance(text, str):
            raise self.err("'when' must be a condition like ${step.field} == \"value\"", line, step)
        m = _WHEN.match(text.strip())
        if not m:
            raise self.err(
                f"cannot read condition {text!r}: use ${{ref}}, not ${{ref}}, "
                "${ref} == VALUE or ${ref} != VALUE",
                line,
                step,
            )
        negate, expr, op, literal = m.groups()
        ref = self.parse_ref(expr, line, step)
        if op:
            cond = Cond(ref, "eq" if op == "==" else "ne", yaml.safe_load(literal))
        else:
            cond = Cond(ref, "truthy")
        return ~cond if negate else cond

    def add_step(self, flow: Flow, raw: Any, line: int) -> None:
        sid = self.step_id(raw)
        target = self.target(raw, sid)
        with_ = raw.get("with") or LineMap()
        bindings = {
            k: self.ref(v, with_.lines.get(k) if isinstance(with_, LineMap) else line, sid)
            for k, v in with_.items()
        }
        opts = self.options(raw, sid)
        try:
            if "map" in raw and "loop" in raw:
                raise self.err("a step is either a map or a loop, not both", raw.line, sid)
            if "map" in raw:
                self.add_map(flow, target, raw, sid, bindings, opts)
            elif "loop" in raw:
                self.add_loop(flow, target, raw, sid, bindings, opts)
            else:
                flow.add(target, id=sid, bind=bindings, **opts)
        except FlowError as exc:
            raise exc.at(file=self.fname, line=raw.line) from None
        flow.nodes[sid].line = raw.line

    def step_id(self, raw: Any) -> str:
        """The ``id`` of a step mapping (checked by :class:`FlowFile`)."""
        assert isinstance(raw, LineMap) and isinstance(raw["id"], str)
        return raw["id"]

    def target(self, raw: LineMap, sid: str) -> Callable[..., Any] | Flow:
        """What a step runs: the function of ``uses`` or the sub-flow file of ``flow``."""
        if ("uses" in raw) == ("flow" in raw):
            raise self.err(
                "give exactly one of 'uses' (a step function) or 'flow' (a sub-flow file)",
                raw.line,
                sid,
            )
        if "uses" in raw:
            try:
                target: Callable[..., Any] = import_object(str(raw["uses"]), base=self.base)
            except ValueError as exc:
                raise self.err(str(exc), raw.lines["uses"], sid) from None
            if not callable(target):
                raise self.err(f"'{raw['uses']}' is not a function", raw.lines["uses"], sid)
            return target
        sub_path = (self.base / str(raw["flow"])).resolve()
        try:
            return load_yaml_flow(sub_path, _stack=self.stack)
        except FlowError as exc:
            if exc.file == str(sub_path):
                raise
            raise self.err(str(exc), raw.lines["flow"], sid) from None

    def options(self, raw: LineMap, sid: str) -> dict[str, Any]:
        """A step's ``when``, ``retry``, ``timeout``, ``cache``, ``review`` and ``resources``."""
        opts: dict[str, Any] = {}
        if "when" in raw:
            opts["when"] = self.when(raw["when"], raw.lines["when"], sid)
        if "retry" in raw:
            opts["retry"] = self.retry(raw["retry"], raw.lines["retry"], sid)
        for key in ("timeout", "cache", "review"):
            if raw.get(key) is not None:
                opts[key] = raw[key]
        if "resources" in raw:
            try:
                opts["resources"] = Resources.of(raw["resources"])
            except FlowError as exc:
                raise self.err(f"resources: {exc}", raw.lines["resources"], sid) from None
        return opts

    def retry(self, r: Any, line: int, sid: str) -> RetryPolicy:
        if isinstance(r, int):
            r = {"attempts": r}
        try:
            r = dict(r)
            for key in ("retry_on", "give_up_on"):
                if key in r:
                    r[key] = self.exceptions(r[key])
            return RetryPolicy(**r)
        except (TypeError, ValueError, FlowError) as exc:
            raise self.err(f"retry: {exc}", line, sid) from None

    def add_map(
        self,
        flow: Flow,
        target: Callable[..., Any] | Flow,
        raw: LineMap,
        sid: str,
        bindings: dict[str, Any],
        opts: dict[str, Any],
    ) -> None:
        over = self.ref(raw["map"], raw.lines["map"], sid)
        if not isinstance(over, Ref):
            raise self.err(
                "'map' must be a reference to a list, like ${step.items}", raw.lines["map"], sid
            )
        if "item" not in raw:
            raise self.err(
                "a map step needs 'item': the input that receives each element",
                raw.lines["map"],
                sid,
            )
        flow.map(
            target,
            id=sid,
            over=over,
            item=str(raw["item"]),
            concurrency=raw.get("concurrency", 8),
            bind=bindings,
            **opts,
        )

    def add_loop(
        self,
        flow: Flow,
        target: Callable[..., Any] | Flow,
        raw: LineMap,
        sid: str,
        bindings: dict[str, Any],
        opts: dict[str, Any],
    ) -> None:
        lp = raw["loop"]
        lline = raw.lines["loop"]
        flow.loop(
            target,
            id=sid,
            state=str(lp["state"]),
            init=self.ref(lp["init"], lline, sid),
            max_iterations=lp["max_iterations"],
            until=lp.get("until"),
            bind=bindings,
            **opts,
        )


def load_config_yaml(text: str, file: str) -> Any:
    """Parse a configuration file (a project file, a policy) with line numbers kept; every
    YAML mistake is a ``ConfigError`` naming the file and the line."""
    from ..errors import ConfigError

    try:
        return load_bounded_yaml(text)
    except FlowError as exc:  # malformed, too big or too deep; duplicate or non-string keys
        raise ConfigError(exc.message, file=file, line=exc.line) from None
