"""Kubeflow Pipelines (kfp 2.x): an erpoz flow compiled into a KFP pipeline (the ``kfp`` extra).

:func:`flow_pipeline` makes a pipeline whose parameters are the flow's inputs and whose one
component (a lightweight Python component) runs the whole flow with erpoz's engine against a
*shared* run store (``postgresql://…`` on a cluster; a SQLite file for ``kfp.local``), so that
the run is recorded, audited and resumable like any other; the component's outputs are the
erpoz run id and the flow's output (JSON). :func:`compile_flow` writes the pipeline's YAML with
kfp's compiler.

Each pipeline task has one erpoz run, whose id comes from the KFP run and the task: a task
that KFP retries resumes the run where its log stands (steps that succeeded are not run again)
and a task whose run already succeeded returns its output. A run that waits for a person's
review fails the task with a message saying how to decide (``erpoz review approve RUN``), or,
with ``review_wait_s``, the task waits that long for the decision; retried after the decision,
the task picks the run's outcome up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import keyword
import linecache
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_origin

from pydantic import TypeAdapter

from ..errors import FlowError
from ..flow import Flow, Plan
from ..store import TERMINAL, open_store

__all__ = ["ComponentResult", "compile_flow", "flow_pipeline", "run_component"]

_ANY = TypeAdapter(Any)
_PRIMITIVE = {str: "str", int: "int", float: "float", bool: "bool"}
#: the names the generated functions use for themselves; a flow input may not take them
_RESERVED = {"erpoz_store", "kfp_run", "kfp_task"}


class ComponentResult(NamedTuple):
    run_id: str
    output: str


def flow_pipeline(
    flow: str | Flow,
    *,
    store: str,
    config: str | None = None,
    name: str | None = None,
    base_image: str = "python:3.11",
    packages_to_install: Sequence[str] = (),
    review_wait_s: float = 0.0,
) -> Any:
    """A KFP pipeline (``@dsl.pipeline``) that runs ``flow``.

    ``flow`` is what the component loads where it runs: a flow file, ``module:attr`` or
    ``file.py:attr`` (or a :class:`~erpoz.Flow` loaded from one). ``store`` is the default of
    the pipeline's ``erpoz_store`` parameter; ``config`` the project file (``erpoz.yaml``) the
    run uses there. On a cluster, ``base_image`` / ``packages_to_install`` must bring erpoz.
    """
    from kfp import dsl

    ref, plan = _load(flow)
    pipeline_name = name or f"erpoz-{plan.name}".replace("_", "-")
    params = _parameters(plan)
    fn_name = "erpoz_" + plan.name.replace("-", "_")
    signature = ", ".join(p for p, _ in params)
    passed = ", ".join(f"{n}={n}" for _, n in params)
    call = ", ".join(f"{n!r}: {n}" for _, n in params)
    component_src = (
        f"def {fn_name}(erpoz_store: str, kfp_run: str, kfp_task: str"
        f"{', ' if params else ''}{signature}"
        ") -> NamedTuple('Outputs', [('run_id', str), ('output', str)]):\n"
        "    from erpoz.integrations.kubeflow import run_component\n"
        f"    return run_component({ref!r}, erpoz_store, {{{call}}}, kfp_run=kfp_run,\n"
        f"                         kfp_task=kfp_task, config={config!r}, "
        f"review_wait_s={float(review_wait_s)!r})\n"
    )
    component_fn = _define(component_src, fn_name, f"component:{plan.name}")
    component = dsl.component(
        component_fn,
        base_image=base_image,
        packages_to_install=list(packages_to_install) or None,
        install_kfp_package=bool(packages_to_install),
    )
    pipeline_src = (
        f"def {fn_name}_pipeline({signature}{', ' if params else ''}"
        f"erpoz_store: str = {store!r}) -> str:\n"
        f"    task = component({passed}{', ' if params else ''}erpoz_store=erpoz_store, "
        "kfp_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, kfp_task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)\n"
        "    task.set_caching_options(False)\n"
        "    task.set_display_name(" + repr(f"erpoz flow {plan.name}") + ")\n"
        "    return task.outputs['output']\n"
    )
    pipeline_fn = _define(
        pipeline_src, f"{fn_name}_pipeline", f"pipeline:{plan.name}", component=component, dsl=dsl
    )
    pipeline_fn.__doc__ = f"The erpoz flow '{plan.name}' ({len(plan.nodes)} steps)."
    return dsl.pipeline(name=pipeline_name, description=pipeline_fn.__doc__)(pipeline_fn)


def compile_flow(flow: str | Flow, path: str | Path, **options: Any) -> Path:
    """Compile ``flow`` into a KFP pipeline file (YAML) at ``path`` (options as
    :func:`flow_pipeline`'s)."""
    from kfp import compiler

    out = Path(path)
    compiler.Compiler().compile(flow_pipeline(flow, **options), str(out))
    return out


def _load(flow: str | Flow) -> tuple[str, Plan]:
    from ..flow import load_flow

    if isinstance(flow, Flow):
        if not flow.source:
            raise FlowError(
                f"flow '{flow.name}' has no source, so a pipeline component could not load it: "
                "give a flow file or 'module:attr', or Flow(..., source='pkg.mod:attr')"
            )
        return flow.source, flow.compile()
    return flow, load_flow(flow).compile()


def _parameters(plan: Plan) -> list[tuple[str, str]]:
    """``(declaration, name)`` of each pipeline parameter: the flow's inputs, typed as KFP
    parameters (str, int, float, bool, list; anything else a dict), required ones first."""
    required, optional = [], []
    for spec in plan.inputs:
        if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
            raise FlowError(f"flow '{plan.name}': input '{spec.name}' is not a KFP parameter name")
        if spec.name in _RESERVED:
            raise FlowError(f"flow '{plan.name}': input '{spec.name}' is a name erpoz needs here")
        tp = spec.type
        kind = _PRIMITIVE.get(tp) or ("list" if get_origin(tp) in (list, tuple) else "dict")
        if spec.required:
            required.append((f"{spec.name}: {kind}", spec.name))
        else:
            default = _ANY.dump_python(spec.default, mode="json")
            optional.append((f"{spec.name}: {kind} = {default!r}", spec.name))
    return required + optional


def _define(source: str, name: str, label: str, **namespace: Any) -> Any:
    """A function from generated source that ``inspect.getsource`` can read back (KFP copies
    a component's source into the task's command)."""
    filename = f"<erpoz-kfp {label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict[str, Any] = {"NamedTuple": NamedTuple, **namespace}
    # dont_inherit: real annotations (this module has `from __future__ import annotations`)
    exec(compile(source, filename, "exec", dont_inherit=True), ns)
    return ns[name]


# --- inside the component ---------------------------------------------------------------------
def run_component(
    flow: str,
    store: str,
    inputs: Mapping[str, Any],
    *,
    kfp_run: str,
    kfp_task: str,
    config: str | None = None,
    review_wait_s: float = 0.0,
) -> ComponentResult:
    """What a pipeline task runs: the flow's run for this task (resumed when a try before this
    one left it unfinished). Raises ``RuntimeError`` naming the step when the run failed, or
    saying how to decide when it waits for review (the task fails; KFP shows the message)."""
    return asyncio.run(
        _run_component(flow, store, inputs, kfp_run, kfp_task, config, review_wait_s)
    )


async def _run_component(
    flow: str,
    store: str,
    inputs: Mapping[str, Any],
    kfp_run: str,
    kfp_task: str,
    config: str | None,
    review_wait_s: float,
) -> ComponentResult:
    from ..engine import Engine
    from ..flow import load_flow
    from ..project import project_services

    plan = load_flow(flow).compile()
    base = "kfp" + hashlib.sha256(f"{kfp_run}\0{kfp_task}".encode()).hexdigest()[:22]
    st = open_store(store)
    try:
        engine = Engine(st, services=await project_services(st, config))
        rid, tries = base, 1
        info = await st.get_run(rid)
        while info is not None and info.status in ("failed", "cancelled"):
            tries += 1  # a try after a failed run: a run of its own
            rid = f"{base}.{tries}"
            info = await st.get_run(rid)
        tags = {"kfp_run": kfp_run, "kfp_task": kfp_task}
        if info is None:
            result = await engine.run(plan, inputs, run_id=rid, tags=tags)
            status, output, error, step = (
                result.status,
                result.output,
                result.error,
                result.failed_step,
            )
        elif info.status in ("running", "queued"):
            result = await engine.resume(rid, plan, requeue=False)
            status, output, error, step = (
                result.status,
                result.output,
                result.error,
                result.failed_step,
            )
        else:
            status = info.status
            output = json.loads(info.output) if info.output is not None else None
            error, step = info.error, None
        if status == "waiting" and review_wait_s > 0:
            status, output, error, step = await _wait(st, rid, review_wait_s)
        if status == "succeeded":
            out = _ANY.dump_python(output, mode="json")
            return ComponentResult(rid, json.dumps(out, ensure_ascii=False))
        if status == "waiting":
            raise RuntimeError(
                f"erpoz run {rid} of flow '{plan.name}' is waiting for a person's review; "
                f"decide with `erpoz review approve {rid} --store {store}` (or reject), then "
                "retry this task: it picks the run's outcome up"
            )
        where = f" at step '{step}'" if step else ""
        raise RuntimeError(f"erpoz run {rid} of flow '{plan.name}' {status}{where}: {error}")
    finally:
        await st.close()


async def _wait(st: Any, rid: str, seconds: float) -> tuple[str, Any, str | None, str | None]:
    deadline = time.monotonic() + seconds
    while True:
        info = await st.get_run(rid)
        if info.status in TERMINAL or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(2.0, max(0.05, seconds / 100)))
    output = json.loads(info.output) if info.output is not None else None
    step = None
    if info.status == "failed":
        for e in reversed(await st.events(rid)):
            if e.kind == "run_failed":
                step = e.data.get("step")
                break
    return info.status, output, info.error, step
