"""``erpoz mcp serve``: flows as MCP tools, so that any MCP client can run a governed flow.

Each flow is a tool named like the flow, whose input schema is the flow's inputs. A call runs
the flow to its end on the engine (policy, guards, budgets and the event log as for any run)
and answers with the run id and the output. A project model can be a tool too (``ask_NAME``:
one governed call, a run of the built-in flow :data:`ask_flow`).

A run that waits for a person answers at once, not after the review: ``status: waiting``, the
steps that wait and how to decide; the client asks again later with the ``erpoz_run`` tool
(``run_id``), which tells how any run stands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types
from mcp.server.lowlevel import Server
from pydantic import ConfigDict, create_model

from ...engine import Engine, RunResult, pending_reviews
from ...errors import ConfigError, ErpozError, FlowError
from ...flow import Context, Flow, Plan, step
from ...user_json import jsonable
from ...version import __version__

__all__ = [
    "STATUS_TOOL",
    "FlowTool",
    "ask_flow",
    "build_server",
    "flow_tool",
    "input_schema",
    "model_tool_name",
]

#: The tool that tells how a run stands (a run that waited for review, later).
STATUS_TOOL = "erpoz_run"


@step
async def ask(model: str, prompt: str, max_tokens: int, ctx: Context) -> str:
    """One call of a project model, through ``ctx.models``: routing, budgets, guards and the
    ``model_called`` event as for any call from a flow."""
    result = await ctx.models.chat(model, prompt, max_tokens=max_tokens)
    return result.text


#: The flow a model tool runs (importable, so that a run waiting for review resumes anywhere).
ask_flow = Flow(
    "mcp_ask",
    inputs={"model": str, "prompt": str, "max_tokens": int},
    defaults={"max_tokens": 512},
    description="Ask a project model, governed and recorded.",
    source="erpoz.integrations.mcp.server:ask_flow",
)
ask_flow.output(
    ask_flow.add(
        ask,
        model=ask_flow.input("model"),
        prompt=ask_flow.input("prompt"),
        max_tokens=ask_flow.input("max_tokens"),
    )
)


def model_tool_name(model: str) -> str:
    """``ask_<model>``, with what a tool name may not hold replaced by ``_``."""
    return "ask_" + "".join(c if c.isalnum() or c in "_-" else "_" for c in model)


@dataclass(frozen=True, slots=True)
class FlowTool:
    """A flow as an MCP tool: its plan and what the client is shown."""

    plan: Plan
    description: str
    schema: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.plan.name


def input_schema(plan: Plan) -> dict[str, Any]:
    """The JSON schema of a flow's inputs (an object with one property per input)."""
    fields: dict[str, Any] = {}
    for spec in plan.inputs:
        fields[spec.name] = (spec.type, ... if spec.required else spec.default)
    model = create_model(f"{plan.name}_inputs", __config__=ConfigDict(extra="forbid"), **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def flow_tool(flow: Flow | Plan) -> FlowTool:
    """A flow as a tool; the description is the flow's (YAML ``description:``)."""
    plan = flow.compile() if isinstance(flow, Flow) else flow
    described = flow.description if isinstance(flow, Flow) else ""
    steps = ", ".join(n.id for n in plan.nodes)
    return FlowTool(
        plan=plan,
        description=(described or f"Run the erpoz flow '{plan.name}'")
        + f" (an erpoz flow; steps: {steps}; every run is recorded and governed).",
        schema=input_schema(plan),
    )


def build_server(
    flows: Sequence[Flow | Plan],
    engine: Engine,
    *,
    models: Sequence[str] = (),
    name: str = "erpoz",
    tags: Mapping[str, str] | None = None,
) -> Server[Any]:
    """An MCP server (the SDK's low-level ``Server``) whose tools run ``flows`` on
    ``engine``, ask each of ``models`` (``ask_NAME``), and tell how a run stands
    (:data:`STATUS_TOOL`). Every run gets ``tags`` (and ``via: mcp``)."""
    tools: dict[str, FlowTool] = {}
    asks: dict[str, str] = {}  # tool name -> model
    ask_plan = ask_flow.compile()
    for f in flows:
        t = flow_tool(f)
        if t.name in tools or t.name == STATUS_TOOL:
            raise ConfigError(f"two tools would be named {t.name!r}; each flow needs its own name")
        tools[t.name] = t
    for model in models:
        tool_name = model_tool_name(model)
        if tool_name in tools or tool_name in asks:
            raise ConfigError(f"two tools would be named {tool_name!r}")
        asks[tool_name] = model
    run_tags = {"via": "mcp", **(tags or {})}
    listed = [
        mcp_types.Tool(
            name=t.name,
            description=t.description,
            input_schema=dict(t.schema),
            annotations=mcp_types.ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=False
            ),
        )
        for t in tools.values()
    ]
    for tool_name, model in asks.items():
        listed.append(
            mcp_types.Tool(
                name=tool_name,
                description=f"Ask the model '{model}' (an erpoz project model: routed, "
                "budgeted, guarded and recorded like any call from a flow).",
                input_schema={
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string"},
                        "max_tokens": {"type": "integer", "minimum": 1, "default": 512},
                    },
                    "required": ["prompt"],
                    "additionalProperties": False,
                },
                annotations=mcp_types.ToolAnnotations(read_only_hint=True, open_world_hint=True),
            )
        )
    listed.append(
        mcp_types.Tool(
            name=STATUS_TOOL,
            description="How an erpoz run stands (a run that waited for review, later): its "
            "status, output, the steps waiting for a person, or the error.",
            input_schema={
                "type": "object",
                "properties": {"run_id": {"type": "string", "description": "The run's id."}},
                "required": ["run_id"],
                "additionalProperties": False,
            },
            annotations=mcp_types.ToolAnnotations(read_only_hint=True),
        )
    )

    async def list_tools(
        ctx: Any, params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=listed)

    async def call_tool(
        ctx: Any, params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        arguments = dict(params.arguments or {})
        if params.name == STATUS_TOOL:
            return await _status(engine, arguments)
        t = tools.get(params.name)
        plan = t.plan if t is not None else ask_plan
        if t is None:
            model = asks.get(params.name)
            if model is None:
                known = ", ".join([*tools, *asks, STATUS_TOOL])
                return _error(f"no tool {params.name!r} (tools: {known})")
            unknown = set(arguments) - {"prompt", "max_tokens"}
            if unknown:
                return _error(f"{params.name}: unknown argument(s) {', '.join(sorted(unknown))}")
            arguments = {"model": model, **arguments}
        try:
            result = await engine.run(plan, arguments, tags=run_tags)
        except FlowError as exc:  # the inputs do not fit the flow
            return _error(f"{params.name}: {exc}")
        except ErpozError as exc:
            return _error(f"{params.name} could not run: {exc}")
        return _answer(result)

    return Server(
        name,
        version=__version__,
        instructions="Each tool runs an erpoz flow; a run that waits for a person's review "
        f"answers with status 'waiting', and '{STATUS_TOOL}' tells later how it ended.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _answer(result: RunResult) -> mcp_types.CallToolResult:
    data: dict[str, Any] = {"run_id": result.run_id, "status": result.status}
    if result.status == "succeeded":
        data["output"] = jsonable(result.output)
        out = data["output"]
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)
        return _result(text, data)
    if result.status == "waiting":
        data["waiting_steps"] = list(result.waiting_steps)
        return _result(_waiting_text(result.run_id, result.waiting_steps), data)
    data["error"] = result.error
    data["failed_step"] = result.failed_step
    where = f" at step '{result.failed_step}'" if result.failed_step else ""
    return _result(f"run {result.run_id} {result.status}{where}: {result.error}", data, True)


def _waiting_text(run_id: str, steps: Sequence[str]) -> str:
    return (
        f"run {run_id} is waiting for a person to review step {', '.join(steps)}; it goes on "
        f"when a reviewer decides (erpoz review ls; erpoz runs resume {run_id} --approve or "
        f"--reject). Ask later with the {STATUS_TOOL} tool and this run_id."
    )


async def _status(engine: Engine, arguments: Mapping[str, Any]) -> mcp_types.CallToolResult:
    run_id = arguments.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return _error("run_id (a string) is required")
    info = await engine.store.get_run(run_id)
    if info is None:
        return _error(f"no run {run_id!r}")
    data: dict[str, Any] = {"run_id": info.run_id, "flow": info.flow, "status": info.status}
    if info.status == "waiting":
        steps = list(pending_reviews(await engine.store.events(info.run_id)))
        data["waiting_steps"] = steps
        return _result(_waiting_text(info.run_id, steps), data)
    if info.status == "succeeded":
        output = json.loads(info.output) if info.output is not None else None
        data["output"] = output
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        return _result(text, data)
    text = f"run {info.run_id} is {info.status}"
    if info.error:
        data["error"] = info.error
        text += f": {info.error}"
    return _result(text, data, info.status in ("failed", "cancelled"))


def _result(text: str, data: dict[str, Any], error: bool = False) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)],
        structured_content=data,
        is_error=error,
    )


def _error(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], is_error=True
    )
