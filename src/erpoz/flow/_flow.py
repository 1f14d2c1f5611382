"""The Python API for defining flows: ``Flow``, ``flow.add``, ``flow.map``, ``flow.loop``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import FlowError
from ._refs import Cond, InputRef, NodeRef, Ref
from ._step import Resources, RetryPolicy, StepSpec, spec_of

if TYPE_CHECKING:
    from ._plan import Plan

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    type: Any
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(slots=True)
class NodeDef:
    """A step as declared (mutable while the flow is built; compile() freezes it into a plan)."""

    id: str
    target: StepSpec | Flow
    bindings: dict[str, Any]
    kind: str = "task"  # "task" | "map" | "loop"
    when: Cond | None = None
    over: Any = None
    item: str | None = None
    concurrency: int = 8
    state: str | None = None
    init: Any = None
    until: str | None = None
    max_iterations: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    review: bool | None = None
    cache: bool | None = None
    resources: Resources | None = None
    line: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Flow:
    """A graph of typed steps. Build it with :meth:`add`, :meth:`map`, :meth:`loop`, then
    :meth:`output`; :meth:`compile` checks it once and returns an immutable :class:`Plan`.

    >>> flow = Flow("greet", inputs={"name": str})
    >>> hello = flow.add(say_hello, who=flow.input("name"))   # doctest: +SKIP
    >>> flow.output(hello)                                    # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        description: str = "",
        source: str | None = None,
        version: str | None = None,
        compatible: Sequence[str] = (),
        patches: Sequence[str] = (),
        previous: Sequence[Flow] = (),
    ) -> None:
        if not _ID.match(name):
            raise FlowError(f"flow name {name!r} must be letters, digits, '_' or '-'")
        self.name = name
        self.description = description
        self.source = source
        #: Versioning (see erpoz.engine's choose_plan): this code's version of the flow, the
        #: older versions whose runs may go on on it, the patches steps test with
        #: ``ctx.patched(name)``, and older versions of the flow kept to finish their runs.
        self.version = version
        self.compatible = tuple(compatible)
        self.patches = tuple(patches)
        self.previous = tuple(previous)
        self.file: str | None = None
        defaults = dict(defaults or {})
        self.inputs: dict[str, InputSpec] = {}
        for key, tp in (inputs or {}).items():
            self.inputs[key] = InputSpec(key, tp, defaults.pop(key, _MISSING))
        if defaults:
            raise FlowError(f"defaults given for unknown inputs: {', '.join(defaults)}")
        self.nodes: dict[str, NodeDef] = {}
        self._output: Any = None
        self._plan: Plan | None = None

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {len(self.nodes)} steps)"

    def input(self, name: str) -> InputRef:
        """A reference to the flow input ``name``."""
        if name not in self.inputs:
            known = ", ".join(self.inputs) or "none declared"
            raise FlowError(f"flow '{self.name}' has no input '{name}' (inputs: {known})")
        return InputRef(name)

    def _new(self, target: Callable[..., Any] | Flow, node_id: str | None, **kw: Any) -> NodeRef:
        resolved: StepSpec | Flow = target if isinstance(target, Flow) else spec_of(target)
        nid = node_id or resolved.name
        if not _ID.match(nid):
            raise FlowError(f"step id {nid!r} must be letters, digits, '_' or '-'", step=nid)
        if nid in self.nodes:
            raise FlowError(
                "a step with this id already exists in the flow; pass id='...' to tell them apart",
                step=nid,
            )
        self.nodes[nid] = NodeDef(nid, resolved, **kw)
        self._plan = None
        return NodeRef(nid)

    def add(
        self,
        step: Callable[..., Any] | Flow,
        /,
        *,
        id: str | None = None,
        when: Cond | Ref | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        review: bool | None = None,
        cache: bool | None = None,
        resources: Resources | Mapping[str, object] | None = None,
        bind: Mapping[str, Any] | None = None,
        **inputs: Any,
    ) -> NodeRef:
        """Add a step (a function or a sub-flow); keyword arguments bind its inputs.

        A binding is a ref (``flow.input(...)``, another step's ref, ``ref["field"]``), a list of
        refs (fan-in) or a constant. ``when`` makes it conditional; ``bind`` binds an input whose
        name collides with an option (``id``, ``when`` …). Returns a ref to the step's output.
        """
        return self._new(
            step,
            id,
            bindings={**inputs, **(bind or {})},
            when=_cond(when),
            retry=retry,
            timeout=timeout,
            review=review,
            cache=cache,
            resources=None if resources is None else Resources.of(resources),
        )

    def map(
        self,
        step: Callable[..., Any] | Flow,
        /,
        *,
        over: Ref,
        item: str,
        concurrency: int = 8,
        id: str | None = None,
        when: Cond | Ref | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        review: bool | None = None,
        cache: bool | None = None,
        resources: Resources | Mapping[str, object] | None = None,
        bind: Mapping[str, Any] | None = None,
        **inputs: Any,
    ) -> NodeRef:
        """Run ``step`` once per element of the list ``over``, binding each to input ``item``;
        at most ``concurrency`` at a time. The output is the list of results, in order."""
        return self._new(
            step,
            id,
            bindings={**inputs, **(bind or {})},
            kind="map",
            over=over,
            item=item,
            concurrency=concurrency,
            when=_cond(when),
            retry=retry,
            timeout=timeout,
            review=review,
            cache=cache,
            resources=None if resources is None else Resources.of(resources),
        )

    def loop(
        self,
        step: Callable[..., Any] | Flow,
        /,
        *,
        state: str,
        init: Any,
        max_iterations: int,
        until: str | None = None,
        id: str | None = None,
        when: Cond | Ref | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        review: bool | None = None,
        cache: bool | None = None,
        resources: Resources | Mapping[str, object] | None = None,
        bind: Mapping[str, Any] | None = None,
        **inputs: Any,
    ) -> NodeRef:
        """Run ``step`` repeatedly, feeding each output back into input ``state`` (the first
        iteration gets ``init``), until the output's field ``until`` is true (or the output itself
        is truthy when ``until`` is None), at most ``max_iterations`` times. The output is the last
        iteration's."""
        return self._new(
            step,
            id,
            bindings={**inputs, **(bind or {})},
            kind="loop",
            state=state,
            init=init,
            until=until,
            max_iterations=max_iterations,
            when=_cond(when),
            retry=retry,
            timeout=timeout,
            review=review,
            cache=cache,
            resources=None if resources is None else Resources.of(resources),
        )

    def output(self, ref: Ref) -> None:
        """Declare the flow's result (and the output of this flow when used as a sub-flow)."""
        if not isinstance(ref, Ref):
            raise FlowError(f"flow '{self.name}': output() takes a ref, got {ref!r}")
        self._output = ref
        self._plan = None

    @property
    def declared_output(self) -> Any:
        return self._output

    def compile(self) -> Plan:
        """Validate the whole flow once and return its immutable plan (cached until changed)."""
        if self._plan is None:
            from ._plan import compile_flow

            self._plan = compile_flow(self)
        return self._plan


def _cond(when: Cond | Ref | None) -> Cond | None:
    if when is None or isinstance(when, Cond):
        return when
    if isinstance(when, Ref):
        return Cond(when, "truthy")
    raise FlowError(f"when= takes a ref or a condition (ref.eq(v), ~ref), got {when!r}")
