"""compile(): check a flow once and freeze it into a plan the engine can run without reflection."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import FlowError
from ._flow import Flow, InputSpec, NodeDef
from ._refs import Coalesce, Cond, FieldRef, InputRef, NodeRef, Ref
from ._step import NO_RETRY, Resources, RetryPolicy, StepSpec
from ._types import admits_none, field_type, get_field, is_compatible, item_type, type_name

TASK, MAP, LOOP = 0, 1, 2
_EXACT = frozenset((str, int, float, bool))
_KINDS = {"task": TASK, "map": MAP, "loop": LOOP}


class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()
"""The value of a step that a ``when`` condition skipped."""

Getter = Callable[[list[Any], Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True, eq=False)
class PlanNode:
    """One step of a compiled plan: everything the engine needs, precomputed."""

    id: str
    index: int
    kind: int
    spec: StepSpec | None
    sub: Plan | None
    args: tuple[tuple[str, Getter], ...]
    deps: tuple[int, ...]
    dependents: tuple[int, ...]
    when: Callable[[list[Any], Mapping[str, Any]], bool] | None
    may_skip: bool
    out_type: Any
    unit_type: Any
    retry: RetryPolicy
    timeout: float | None
    review: bool
    cache: bool
    resources: Resources | None = None
    over: Getter | None = None
    item: str | None = None
    concurrency: int = 1
    state: str | None = None
    init: Getter | None = None
    until: str | None = None
    max_iterations: int = 1
    line: int | None = None
    label: str = ""
    reads: frozenset[str] = frozenset()
    """The flow inputs the step reads itself (its bindings, ``when``, ``over``, ``init``)."""
    plain: bool = field(init=False)
    """A task that uses none of the features that cost the engine work per step (no sub-flow,
    ``ctx``, cache, review, timeout, resources, ``when``, skipped inputs; async or inline): the
    engine runs it on its fast path (``Engine._plain``), which writes the same events."""

    def __post_init__(self) -> None:
        spec = self.spec
        plain = (
            self.kind == TASK
            and spec is not None
            and self.sub is None
            and (spec.is_async or spec.inline)
            and spec.context_param is None
            and not (self.review or self.cache or self.may_skip)
            and self.timeout is None
            and self.resources is None
            and self.when is None
        )
        object.__setattr__(self, "plain", plain)


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """An immutable, validated flow: nodes in dependency order and how to read the output."""

    name: str
    nodes: tuple[PlanNode, ...]
    roots: tuple[int, ...]
    inputs: tuple[InputSpec, ...]
    output: Getter
    output_type: Any
    fingerprint: str
    source: str | None
    by_id: Mapping[str, int]
    input_adapters: Mapping[str, TypeAdapter[Any]]
    #: The steps whose output becomes the flow's result (the delivery checkpoint's place).
    delivery: frozenset[str] = frozenset()
    #: Versioning: see ``Flow(version=, compatible=, patches=, previous=)``.
    version: str | None = None
    compatible: frozenset[str] = frozenset()
    patches: frozenset[str] = frozenset()
    previous: tuple[Plan, ...] = ()

    def node(self, step_id: str) -> PlanNode:
        try:
            return self.nodes[self.by_id[step_id]]
        except KeyError:
            raise FlowError(
                f"flow '{self.name}' has no step '{step_id}' (steps: {', '.join(self.by_id)})"
            ) from None

    def bind_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check run inputs against the declared types (lax: ``"3"`` is accepted for an int)."""
        unknown = set(given) - set(self.input_adapters)
        if unknown:
            raise FlowError(
                f"flow '{self.name}' has no input(s) {', '.join(sorted(unknown))} "
                f"(inputs: {', '.join(i.name for i in self.inputs) or 'none'})"
            )
        out: dict[str, Any] = {}
        for spec in self.inputs:
            if spec.name in given:
                value = given[spec.name]
                if type(value) is spec.type and spec.type in _EXACT:
                    out[spec.name] = value  # already what was declared: nothing to check
                    continue
                try:
                    out[spec.name] = self.input_adapters[spec.name].validate_python(
                        given[spec.name]
                    )
                except ValidationError as exc:
                    raise FlowError(
                        f"flow '{self.name}': input '{spec.name}' expects "
                        f"{type_name(spec.type)}: {_first_error(exc)}"
                    ) from None
            elif spec.required:
                raise FlowError(f"flow '{self.name}': missing required input '{spec.name}'")
            else:
                out[spec.name] = spec.default
        return out

    def downstream(self, step_id: str) -> set[str]:
        """The step and every step that depends on it, transitively."""
        start = self.node(step_id).index
        seen, todo = {start}, [start]
        while todo:
            for d in self.nodes[todo.pop()].dependents:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return {self.nodes[i].id for i in seen}

    def affected_by(self, inputs: set[str] | frozenset[str]) -> set[str]:
        """The steps that read any of ``inputs``, and every step that depends on them."""
        out: set[str] = set()
        for n in self.nodes:
            if n.reads & inputs and n.id not in out:
                out |= self.downstream(n.id)
        return out


def _inputs_read(ref: Any) -> set[str]:
    """The names of the flow inputs a binding (or nested structure of bindings) reads."""
    if isinstance(ref, InputRef):
        return {ref.name}
    if isinstance(ref, FieldRef):
        return _inputs_read(ref.base)
    if isinstance(ref, Cond):
        return _inputs_read(ref.ref)
    if isinstance(ref, Coalesce):
        ref = ref.refs
    if isinstance(ref, dict):
        ref = list(ref.values())
    if isinstance(ref, list | tuple):
        return set().union(*(_inputs_read(r) for r in ref)) if ref else set()
    return set()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc + ': ' if loc else ''}{err['msg']}"


class _Compiler:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.defs = flow.nodes
        self.index = {nid: i for i, nid in enumerate(self.defs)}
        self.out_types: dict[str, Any] = {}
        self.may_skip: dict[str, bool] = {}

    def err(self, msg: str, node: NodeDef | None = None) -> FlowError:
        return FlowError(
            msg,
            step=node.id if node else None,
            file=self.flow.file,
            line=node.line if node else None,
        )

    # --- references -------------------------------------------------------------------------
    def ref_deps(self, ref: Any, node: NodeDef) -> set[str]:
        """The steps a binding (or nested structure of bindings) reads from."""
        out: set[str] = set()
        self._collect(ref, node, out)
        return out

    def _collect(self, ref: Any, node: NodeDef, out: set[str]) -> None:
        if isinstance(ref, NodeRef):
            if ref.node_id not in self.defs:
                raise self.err(f"refers to unknown step '{ref.node_id}'", node)
            if ref.node_id == node.id:
                raise self.err("refers to its own output; use flow.loop() to iterate", node)
            out.add(ref.node_id)
        elif isinstance(ref, InputRef):
            if ref.name not in self.flow.inputs:
                known = ", ".join(self.flow.inputs) or "none declared"
                raise self.err(f"refers to unknown flow input '{ref.name}' (inputs: {known})", node)
        elif isinstance(ref, FieldRef):
            self._collect(ref.base, node, out)
        elif isinstance(ref, list | tuple):
            for r in ref:
                self._collect(r, node, out)
        elif isinstance(ref, dict):
            for r in ref.values():
                self._collect(r, node, out)
        elif isinstance(ref, Coalesce):
            for r in ref.refs:
                self._collect(r, node, out)
        elif isinstance(ref, Cond):
            self._collect(ref.ref, node, out)

    def ref_type(self, ref: Ref, node: NodeDef | None) -> Any:
        if isinstance(ref, InputRef):
            return self.flow.inputs[ref.name].type
        if isinstance(ref, NodeRef):
            return self.out_types[ref.node_id]
        if isinstance(ref, FieldRef):
            tp = self.ref_type(ref.base, node)
            for name in ref.path:
                try:
                    tp = field_type(tp, name)
                except KeyError as exc:
                    raise self.err(f"{ref!r}: {exc.args[0]}", node) from None
            return tp
        if isinstance(ref, Coalesce):
            types_ = [self.ref_type(r, node) for r in ref.refs]
            first = types_[0]
            for other in types_[1:]:
                if not (is_compatible(other, first) or is_compatible(first, other)):
                    raise self.err(
                        f"first_of() merges incompatible types {type_name(first)} and "
                        f"{type_name(other)}",
                        node,
                    )
            return first
        raise self.err(f"not a reference: {ref!r}", node)

    def ref_may_skip(self, ref: Ref) -> bool:
        if isinstance(ref, NodeRef):
            return self.may_skip[ref.node_id]
        if isinstance(ref, FieldRef):
            return self.ref_may_skip(ref.base)
        if isinstance(ref, Coalesce):
            return all(self.ref_may_skip(r) for r in ref.refs)
        return False

    def getter(self, ref: Any) -> Getter:
        if isinstance(ref, InputRef):
            name = ref.name
            return lambda outs, inputs: inputs[name]
        if isinstance(ref, NodeRef):
            idx = self.index[ref.node_id]
            return lambda outs, inputs: outs[idx]
        if isinstance(ref, FieldRef):
            base, path = self.getter(ref.base), ref.path

            def get_field_path(outs: list[Any], inputs: Mapping[str, Any]) -> Any:
                value = base(outs, inputs)
                if value is SKIPPED:
                    return SKIPPED
                for name in path:
                    value = get_field(value, name)
                return value

            return get_field_path
        if isinstance(ref, Coalesce):
            getters = tuple(self.getter(r) for r in ref.refs)

            def first_not_skipped(outs: list[Any], inputs: Mapping[str, Any]) -> Any:
                for g in getters:
                    value = g(outs, inputs)
                    if value is not SKIPPED:
                        return value
                return SKIPPED

            return first_not_skipped
        if isinstance(ref, list):
            parts = tuple(self.getter(r) for r in ref)

            def gather(outs: list[Any], inputs: Mapping[str, Any]) -> Any:
                # fan-in collects what ran: a branch skipped by when= is left out
                return [v for v in (g(outs, inputs) for g in parts) if v is not SKIPPED]

            return gather
        const = ref
        return lambda outs, inputs: const

    # --- bindings ---------------------------------------------------------------------------
    def check_binding(self, node: NodeDef, pname: str, ptype: Any, value: Any) -> Any:
        """Check a binding against the input's type; constants come back converted to it
        (a mapping written in YAML becomes the dataclass or model the step declares)."""
        if isinstance(value, Ref):
            src = self.ref_type(value, node)
            if not is_compatible(src, ptype):
                raise self.err(
                    f"input '{pname}' expects {type_name(ptype)} but {value!r} gives "
                    f"{type_name(src)}",
                    node,
                )
        elif isinstance(value, list) and any(isinstance(v, Ref) for v in value):
            it = item_type(ptype)
            if it is None:
                raise self.err(
                    f"input '{pname}' expects {type_name(ptype)}, not a list of refs", node
                )
            return [self.check_binding(node, f"{pname}[]", it, v) for v in value]
        elif isinstance(value, Cond):
            raise self.err(f"input '{pname}': a condition is only valid in when=", node)
        else:
            try:
                return TypeAdapter(ptype).validate_python(value, strict=False)
            except ValidationError as exc:
                raise self.err(
                    f"input '{pname}' expects {type_name(ptype)}, constant {value!r} does not "
                    f"fit: {_first_error(exc)}",
                    node,
                ) from None
            except Exception:  # a type pydantic cannot build a validator for: trust the user
                return value
        return value

    def unit_signature(self, node: NodeDef) -> tuple[dict[str, tuple[Any, bool]], Any]:
        """Inputs (name -> (type, has_default)) and output type of what the node runs."""
        target = node.target
        if isinstance(target, Flow):
            sub = target.compile()
            params = {i.name: (i.type, not i.required) for i in sub.inputs}
            return params, sub.output_type
        params = {p.name: (p.type, p.has_default) for p in target.params}
        return params, target.returns

    def compile_node(self, node: NodeDef) -> dict[str, Any]:
        params, returns = self.unit_signature(node)
        target = node.target
        what = "sub-flow" if isinstance(target, Flow) else f"step function {target.ref}"
        special: set[str] = set()
        init = node.init
        if node.kind == "map":
            special.add(self.check_map(node, params, what))
        elif node.kind == "loop":
            state, init = self.check_loop(node, params, returns, what)
            special.add(state)
        self.check_bound_names(node, params, special, what)
        args, skippy = self.bind_args(node, params, special)
        if node.when is not None:
            self.ref_type(node.when.ref, node)
            if self.ref_may_skip(node.when.ref):
                skippy = True
        out_type = list[returns] if node.kind == "map" else returns  # type: ignore[valid-type]
        extra: dict[str, Any] = {}
        if node.kind == "map":
            extra = {
                "over": self.getter(node.over),
                "item": node.item,
                "concurrency": node.concurrency,
            }
            skippy = skippy or self.ref_may_skip(node.over)
        elif node.kind == "loop":
            extra = {
                "state": node.state,
                "init": self.getter(init),
                "until": node.until,
                "max_iterations": node.max_iterations,
            }
        self.out_types[node.id] = out_type
        self.may_skip[node.id] = node.when is not None or skippy
        return {
            "args": tuple(args),
            "may_skip": skippy,
            "out_type": out_type,
            "unit_type": returns,
            "extra": extra,
            "spec": target if isinstance(target, StepSpec) else None,
            "sub": target.compile() if isinstance(target, Flow) else None,
        }

    def check_map(self, node: NodeDef, params: dict[str, tuple[Any, bool]], what: str) -> str:
        """A map's item is an input of what it runs, fed by the elements of a list; the item."""
        if node.item not in params:
            raise self.err(
                f"map item={node.item!r} is not an input of {what} (inputs: {', '.join(params)})",
                node,
            )
        if not isinstance(node.over, Ref):
            raise self.err("map over= must be a ref to a list", node)
        over_t = self.ref_type(node.over, node)
        it = item_type(over_t)
        if it is None:
            raise self.err(f"map over={node.over!r} is {type_name(over_t)}, not a list", node)
        if not is_compatible(it, params[node.item][0]):
            raise self.err(
                f"map item '{node.item}' expects {type_name(params[node.item][0])} but "
                f"{node.over!r} holds {type_name(it)}",
                node,
            )
        if node.concurrency < 1:
            raise self.err("map concurrency must be >= 1", node)
        return node.item

    def check_loop(
        self, node: NodeDef, params: dict[str, tuple[Any, bool]], returns: Any, what: str
    ) -> tuple[str, Any]:
        """A loop is bounded and feeds its output back into its state; the state's name and
        the checked init."""
        if node.max_iterations is None or node.max_iterations < 1:
            raise self.err("a loop needs max_iterations >= 1 (unbounded loops are refused)", node)
        state = node.state
        if state is None or state not in params:
            raise self.err(
                f"loop state={state!r} is not an input of {what} (inputs: {', '.join(params)})",
                node,
            )
        st = params[state][0]
        if not is_compatible(returns, st):
            raise self.err(
                f"loop feeds its output ({type_name(returns)}) back into '{state}' "
                f"({type_name(st)}): the types do not fit",
                node,
            )
        init = self.check_binding(node, state, st, node.init)
        if node.until is not None:
            try:
                field_type(returns, node.until)
            except KeyError as exc:
                raise self.err(f"loop until={node.until!r}: {exc.args[0]}", node) from None
        return state, init

    def check_bound_names(
        self, node: NodeDef, params: dict[str, tuple[Any, bool]], special: set[str], what: str
    ) -> None:
        for pname in node.bindings:
            if pname not in params:
                raise self.err(
                    f"{what} has no input '{pname}' (inputs: {', '.join(params) or 'none'})",
                    node,
                )
            if pname in special:
                raise self.err(f"input '{pname}' is set by the {node.kind}; do not bind it", node)

    def bind_args(
        self, node: NodeDef, params: dict[str, tuple[Any, bool]], special: set[str]
    ) -> tuple[list[tuple[str, Getter]], bool]:
        """How each bound input is read, and whether a skipped step upstream skips this one."""
        args: list[tuple[str, Getter]] = []
        skippy = False
        for pname, (ptype, has_default) in params.items():
            if pname in special:
                continue
            if pname not in node.bindings:
                if not has_default:
                    raise self.err(
                        f"input '{pname}' ({type_name(ptype)}) is not bound; bind it "
                        "to a flow input, a step output or a constant",
                        node,
                    )
                continue
            value = self.check_binding(node, pname, ptype, node.bindings[pname])
            g = self.getter(value)
            if isinstance(value, Ref) and self.ref_may_skip(value):
                if has_default or admits_none(ptype):
                    g = _soft(g, self._default_of(node, pname))
                else:
                    skippy = True
            args.append((pname, g))
        return args, skippy

    def _default_of(self, node: NodeDef, pname: str) -> Any:
        if isinstance(node.target, StepSpec):
            p = node.target.param_map[pname]
            return p.default if p.has_default else None
        spec = next(i for i in node.target.compile().inputs if i.name == pname)
        return None if spec.required else spec.default

    # --- graph ------------------------------------------------------------------------------
    def toposort(self, deps: dict[str, set[str]]) -> list[str]:
        indeg = {n: len(d) for n, d in deps.items()}
        users: dict[str, list[str]] = {n: [] for n in deps}
        for n, ds in deps.items():
            for d in ds:
                users[d].append(n)
        ready = [n for n in deps if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for u in users[n]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
        if len(order) != len(deps):
            stuck = [n for n in deps if n not in set(order)]
            cycle = _find_cycle(stuck, deps)
            node = self.defs[cycle[0]]
            raise self.err(
                f"cycle {' -> '.join([*cycle, cycle[0]])}; a cycle must be a flow.loop() with "
                "max_iterations",
                node,
            )
        return order

    def run(self) -> Plan:
        flow = self.flow
        if not self.defs:
            raise FlowError(f"flow '{flow.name}' has no steps", file=flow.file)
        deps = {
            n.id: self.ref_deps([n.bindings, n.when, n.over, n.init], n) for n in self.defs.values()
        }
        order = self.toposort(deps)
        pos = {nid: i for i, nid in enumerate(order)}
        self.index = pos  # getters index outputs by plan position
        compiled = {nid: self.compile_node(self.defs[nid]) for nid in order}
        users: dict[str, list[int]] = {nid: [] for nid in order}
        for nid in order:
            for dep in deps[nid]:
                users[dep].append(pos[nid])
        nodes = []
        for nid in order:
            d, c = self.defs[nid], compiled[nid]
            target = d.target
            spec: StepSpec | None = c["spec"]
            when = None
            if d.when is not None:
                when = _cond_fn(d.when, self.getter(d.when.ref))
            nodes.append(
                PlanNode(
                    id=nid,
                    index=pos[nid],
                    kind=_KINDS[d.kind],
                    spec=spec,
                    sub=c["sub"],
                    args=c["args"],
                    deps=tuple(sorted(pos[x] for x in deps[nid])),
                    dependents=tuple(users[nid]),
                    when=when,
                    may_skip=c["may_skip"],
                    out_type=c["out_type"],
                    unit_type=c["unit_type"],
                    retry=d.retry or (spec.retry if spec else NO_RETRY),
                    timeout=d.timeout
                    if d.timeout is not None
                    else (spec.timeout if spec else None),
                    review=d.review if d.review is not None else (spec.review if spec else False),
                    cache=d.cache if d.cache is not None else (spec.cache if spec else False),
                    resources=d.resources or (spec.resources if spec else None),
                    line=d.line,
                    label=target.ref if isinstance(target, StepSpec) else f"flow:{target.name}",
                    reads=frozenset(_inputs_read([d.bindings, d.when, d.over, d.init])),
                    **c["extra"],
                )
            )
        out_ref = flow.declared_output
        if out_ref is None:
            sinks = [n for n in nodes if not n.dependents]
            if len(sinks) != 1:
                how = "add 'output: ${step}'" if flow.file else "call flow.output(ref)"
                raise FlowError(
                    f"flow '{flow.name}' has {len(sinks)} final steps "
                    f"({', '.join(n.id for n in sinks)}); {how} to say which one is the result",
                    file=flow.file,
                )
            out_ref = NodeRef(sinks[0].id)
        self.ref_deps(out_ref, NodeDef("output", flow, {}))
        out_type = self.ref_type(out_ref, None)
        adapters: dict[str, TypeAdapter[Any]] = {}
        for spec_ in flow.inputs.values():
            try:
                adapters[spec_.name] = TypeAdapter(spec_.type)
            except Exception as exc:
                raise FlowError(
                    f"flow '{flow.name}': input '{spec_.name}' has a type pydantic "
                    f"cannot check: {exc}",
                    file=flow.file,
                ) from None
        return Plan(
            name=flow.name,
            nodes=tuple(nodes),
            roots=tuple(n.index for n in nodes if not n.deps),
            inputs=tuple(flow.inputs.values()),
            output=self.getter(out_ref),
            output_type=out_type,
            fingerprint=self.fingerprint(order),
            source=flow.source,
            by_id=MappingProxyType(pos),
            input_adapters=MappingProxyType(adapters),
            delivery=frozenset(_ref_nodes(out_ref)),
            version=flow.version,
            compatible=frozenset(flow.compatible),
            patches=frozenset(flow.patches),
            previous=tuple(f.compile() for f in flow.previous),
        )

    def fingerprint(self, order: list[str]) -> str:
        h = hashlib.sha256(self.flow.name.encode())
        for nid in order:
            d = self.defs[nid]
            t = d.target
            ident = (
                f"{t.ref}@{t.version}"
                if isinstance(t, StepSpec)
                else f"flow:{t.compile().fingerprint}"
            )
            h.update(
                f"|{nid}|{d.kind}|{ident}|{sorted(d.bindings.items(), key=str)!r}|"
                f"{d.when!r}|{d.over!r}|{d.item}|{d.state}|{d.until}".encode()
            )
        return h.hexdigest()[:16]


def _soft(g: Getter, fallback: Any) -> Getter:
    def soft(outs: list[Any], inputs: Mapping[str, Any]) -> Any:
        value = g(outs, inputs)
        return fallback if value is SKIPPED else value

    return soft


def _cond_fn(cond: Cond, g: Getter) -> Callable[[list[Any], Mapping[str, Any]], bool]:
    op, const = cond.op, cond.value

    def when(outs: list[Any], inputs: Mapping[str, Any]) -> bool:
        value = g(outs, inputs)
        if value is SKIPPED:  # a condition on a skipped step skips this one too
            return False
        if op == "truthy":
            return bool(value)
        if op == "falsy":
            return not value
        return bool(value == const) if op == "eq" else bool(value != const)

    return when


def _find_cycle(stuck: list[str], deps: dict[str, set[str]]) -> list[str]:
    stuck_set = set(stuck)
    path: list[str] = []
    node = stuck[0]
    while node not in path:
        path.append(node)
        node = next(d for d in sorted(deps[node]) if d in stuck_set)
    cycle = path[path.index(node) :]
    cycle.reverse()
    return cycle


def compile_flow(flow: Flow) -> Plan:
    return _Compiler(flow).run()


def _ref_nodes(ref: Any) -> set[str]:
    """The steps a reference reads from."""
    if isinstance(ref, NodeRef):
        return {ref.node_id}
    if isinstance(ref, FieldRef):
        return _ref_nodes(ref.base)
    if isinstance(ref, Coalesce):
        return set().union(*(_ref_nodes(r) for r in ref.refs))
    return set()
