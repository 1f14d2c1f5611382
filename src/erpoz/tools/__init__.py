"""Tools: Python functions a step (or later a model) may call, each call checked by policy and
recorded.

Register with :func:`tool`; the JSON schema of the parameters comes from the type hints. A step
calls ``await ctx.tools.call("name", **arguments)``. Tools are denied unless a rule grants them;
every decision is a ``policy_decided`` event naming the rule, every call a ``tool_called`` event
(arguments with secret ones redacted, result size, duration, and an idempotency key for tools
with side effects).

A tool with side effects is journaled: its intent (``tool_intent``) is committed to the store
before it is called and its result right after, so a step that runs again (resumed after a
crash, retried, re-run after an approval) gets the recorded result instead of calling it again,
and a call cut off by a crash is made again with the same idempotency key, which the tool
receives when it declares a parameter ``idempotency_key: str``.

Tool results are untrusted content (see :mod:`erpoz.provenance`) unless the tool is declared
``trusted_output=True``; in :meth:`Tools.agent` a call the model proposes after reading
untrusted text is checked argument by argument, and the policy decides what a tool may take
from untrusted content.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import to_jsonable_python

from ..errors import ErpozError, GuardBlocked, PolicyViolation, ReviewRequired
from ..flow import is_retryable
from ..models import ChatResult, Message, ToolSpec
from ..models import ToolCall as ModelToolCall
from ..policy import Policy, Subject
from ..provenance import UNTRUSTED, Provenance, RunProvenance, SpotlightMode, Untrusted
from ..provenance import spotlight as mark_untrusted
from ._policy import Rule, ToolPolicy, load_policy, parse_policy

if TYPE_CHECKING:
    from ..flow import Context, Journal
    from ..guards import Governed
    from ..models import ProjectConfig

__all__ = [
    "KEY_PARAM",
    "Rule",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolPolicy",
    "ToolRegistry",
    "Tools",
    "current_call",
    "load_policy",
    "parse_policy",
    "registry_from_config",
    "tool",
]


class ToolError(ErpozError):
    """A tool was called wrongly (unknown, bad arguments: not retryable) or raised
    (``retryable`` as the tool's own error was); ``tool`` names the tool."""

    def __init__(self, message: str, *, tool: str | None = None, retryable: bool = False) -> None:
        self.tool = tool
        self.retryable = retryable
        super().__init__(message)


KEY_PARAM = "idempotency_key"
"""A side-effecting tool that declares a parameter of this name gets the call's idempotency key
in it (the parameter is not part of the schema a model or a step fills in)."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool: its function, description and the JSON schema of its parameters."""

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: Mapping[str, Any]
    side_effects: bool
    secret_params: frozenset[str]
    validator: Any = field(repr=False, compare=False)
    takes_key: bool = False
    """Whether the function declares ``idempotency_key`` (it is then passed the call's key)."""
    trusted_output: bool = False
    """Whether its results are trusted content (the tool's own data, not text from outside)."""

    def decode(self, payload: str) -> Any:
        """A result recorded as JSON, read back as the tool's declared return type."""
        value = json.loads(payload)
        returns = inspect.get_annotations(self.fn, eval_str=True).get("return")
        if returns is None or returns is Any:
            return value
        try:
            return TypeAdapter(returns).validate_python(value)
        except ValidationError:
            return value

    @property
    def spec(self) -> ToolSpec:
        """What a model is offered."""
        return ToolSpec(self.name, self.description, self.parameters)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The call a tool function is carrying out (see :func:`current_call`): which run and
    step, the idempotency key to hand to the outside world (tools with side effects), and
    ``emit`` to record an event of the tool's own in the run."""

    tool: str
    run_id: str
    step_id: str
    idempotency_key: str | None
    emit: Callable[[str, dict[str, Any]], None]


_CURRENT: ContextVar[ToolCall | None] = ContextVar("erpoz_tool_call", default=None)


def current_call() -> ToolCall | None:
    """Inside a tool function called through ``ctx.tools``: the call; elsewhere ``None``."""
    return _CURRENT.get()


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    secret: Sequence[str] = (),
    trusted_output: bool = False,
) -> Any:
    """Declare a function as a tool. ``side_effects=True`` journals each call under an
    idempotency key, which the function gets when it declares ``idempotency_key: str``;
    parameters named in ``secret`` are redacted in the log. Results are untrusted content
    unless ``trusted_output=True`` (the tool returns only its own data: a clock, an id)."""

    def make(f: Callable[..., Any]) -> Tool:
        sig = inspect.signature(f)
        hints = {k: v for k, v in inspect.get_annotations(f, eval_str=True).items()}
        fields: dict[str, Any] = {}
        takes_key = KEY_PARAM in sig.parameters
        if takes_key and not side_effects:
            raise ToolError(
                f"tool {f.__name__}: only tools with side_effects=True get an idempotency key; "
                f"declare it so, or rename the parameter '{KEY_PARAM}'"
            )
        if takes_key and hints.get(KEY_PARAM) is not str:
            raise ToolError(f"tool {f.__name__}: declare the key as '{KEY_PARAM}: str'")
        for p in sig.parameters.values():
            if p.name == KEY_PARAM:
                continue
            if p.name not in hints:
                raise ToolError(f"tool {f.__name__}: parameter '{p.name}' needs a type hint")
            fields[p.name] = (hints[p.name], ... if p.default is p.empty else p.default)
        model = create_model(f"{f.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema()
        schema.pop("title", None)
        unknown = set(secret) - set(fields)
        if unknown:
            raise ToolError(f"tool {f.__name__}: secret names unknown parameters {unknown}")
        return Tool(
            name=name or f.__name__,
            description=description or (inspect.getdoc(f) or "").split("\n\n")[0],
            fn=f,
            parameters=schema,
            side_effects=side_effects,
            secret_params=frozenset(secret),
            validator=model,
            takes_key=takes_key,
            trusted_output=trusted_output,
        )

    return make(fn) if fn is not None else make


class ToolRegistry:
    """The tools of a process and the policy over them; pass it as an engine service.

    Without a ``policy`` the project's (``erpoz.yaml``) decides, and without that none is
    granted."""

    def __init__(self, tools: Sequence[Tool] = (), policy: Policy | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.policy = policy
        for t in tools:
            self.add(t)

    def add(self, t: Tool) -> None:
        if not isinstance(t, Tool):
            raise ToolError(f"{t!r} is not a tool; decorate it with @erpoz.tools.tool")
        if t.name in self._tools:
            raise ToolError(f"a tool named '{t.name}' is already registered")
        self._tools[t.name] = t

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none registered"
            raise ToolError(f"unknown tool '{name}' (tools: {known})", tool=name) from None

    def specs(self, names: Sequence[str] | None = None) -> list[ToolSpec]:
        return [self.get(n).spec for n in (names if names is not None else self._tools)]

    def bind(self, ctx: Context, flow: str, governed: Governed | None = None) -> Tools:
        return Tools(self, ctx, flow, governed)


_NO_POLICY = Policy()


class Tools:
    """What a step sees as ``ctx.tools``."""

    __slots__ = ("_ctx", "_flow", "_gov", "_reg")

    def __init__(
        self, registry: ToolRegistry, ctx: Context, flow: str, governed: Governed | None = None
    ) -> None:
        self._reg = registry
        self._ctx = ctx
        self._flow = flow
        self._gov = governed

    async def call(self, name: str, **arguments: Any) -> Any:
        """Call tool ``name`` if policy allows; ``PolicyViolation`` if denied,
        ``ReviewRequired`` if a person must decide."""
        return await self._call(name, arguments, None)

    async def _call(self, name: str, arguments: dict[str, Any], prov: Provenance | None) -> Any:
        """A call; ``prov``: the provenance of the conversation of a model that proposed it."""
        ctx = self._ctx
        gov = self._gov
        t = self._reg.get(name)
        step = ctx.step_id
        if gov is not None:
            subject = gov.subject
        else:
            tags: Any = getattr(ctx, "tags", {})
            subject = Subject(
                self._flow or "-", step, tags.get("tenant", "-"), tags.get("user", "-")
            )
        policy = self._reg.policy or (gov.rails.policy if gov is not None else _NO_POLICY)
        action, rule = policy.decide(name, subject=subject)
        if action != "deny" and gov is not None:  # the arguments as they may pass (redacted)
            arguments = await gov.tool_arguments(name, dict(arguments))
        shown = {k: ("[REDACTED]" if k in t.secret_params else v) for k, v in arguments.items()}
        grant = None
        approved = False
        if action == "review":
            canonical = json.dumps(arguments, sort_keys=True, default=repr)
            grant = f"tool:{name}:" + hashlib.sha256(canonical.encode()).hexdigest()[:24]
            approved = bool(getattr(ctx, "approved", lambda _k: False)(grant))
        decided: dict[str, Any] = {
            "resource": f"tool:{name}",
            "action": "allow" if approved else action,
            "rule": rule,
            "flow": self._flow,
            "step": step,
        }
        if subject.tenant != "-":
            decided["tenant"] = subject.tenant
        if subject.user != "-":
            decided["user"] = subject.user
        if approved:
            decided["approved_by_review"] = True
        ctx.emit("policy_decided", decided)
        if action == "deny":
            raise PolicyViolation(f"tool '{name}' denied for step '{step}' ({rule})", rule=rule)
        if action == "review" and not approved:
            raise ReviewRequired(
                f"tool '{name}' needs approval ({rule})",
                evidence={"tool": name, "arguments": _jsonable(shown)},
                grant=grant,
            )
        if prov is not None and prov.tainted:
            self._contain(t, arguments, shown, prov, policy, subject)
        try:
            args = t.validator(**arguments).model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ToolError(
                f"tool '{name}': argument {'.'.join(map(str, err['loc']))}: {err['msg']}",
                tool=name,
            ) from None
        data: dict[str, Any] = {"tool": name, "arguments": _jsonable(shown)}
        if not t.trusted_output:
            data["result_label"] = UNTRUSTED
        if t.side_effects:
            result = await self._journaled(t, args, data)
        else:
            result = await self._run(t, args, data, None)
        if gov is not None:
            result = await gov.tool_result(name, result)
        run_prov = self._run_provenance()
        if run_prov is not None and not t.trusted_output:
            run_prov.add(result, f"tool:{name}", ctx.step_id)
        return result

    def _run_provenance(self) -> RunProvenance | None:
        """What the run has seen of untrusted content (``None`` in a context of a user's own)."""
        prov = getattr(self._ctx, "provenance", None)
        return prov if isinstance(prov, RunProvenance) else None

    def _contain(
        self,
        t: Tool,
        arguments: dict[str, Any],
        shown: dict[str, Any],
        prov: Provenance,
        policy: Policy,
        subject: Subject,
    ) -> None:
        """Information-flow control: a call proposed by a model that read untrusted text may
        take untrusted arguments only where the policy lets it. Records a ``policy_decided``
        event with the labels when any argument is untrusted."""
        labels = prov.labels(arguments)
        decision = policy.decide_untrusted(t.name, subject, t.side_effects, labels)
        if decision is None:
            return
        grant = None
        approved = False
        if decision.action == "review":
            canonical = json.dumps(arguments, sort_keys=True, default=repr)
            grant = f"untrusted:{t.name}:" + hashlib.sha256(canonical.encode()).hexdigest()[:24]
            approved = self._ctx.approved(grant) if hasattr(self._ctx, "approved") else False
        decided: dict[str, Any] = {
            "resource": f"tool:{t.name}",
            "action": "allow" if approved else decision.action,
            "rule": decision.rule,
            "flow": self._flow,
            "step": self._ctx.step_id,
            "provenance": {
                "arguments": labels,
                "blocked": list(decision.blocked),
                "sources": list(prov.sources),
            },
        }
        if approved:
            decided["approved_by_review"] = True
        self._ctx.emit("policy_decided", decided)
        if decision.action == "allow" or approved:
            return
        fields = ", ".join(f"'{f}'" for f in decision.blocked)
        why = (
            f"tool '{t.name}': argument(s) {fields} derive from untrusted content "
            f"({', '.join(prov.sources)}) and appear nowhere in trusted input ({decision.rule})"
        )
        if decision.action == "deny":
            raise PolicyViolation(why, rule=decision.rule)
        raise ReviewRequired(
            why,
            evidence={
                "tool": t.name,
                "arguments": _jsonable(shown),
                "untrusted": list(decision.blocked),
                "sources": list(prov.sources),
            },
            grant=grant,
        )

    async def _journaled(self, t: Tool, args: dict[str, Any], data: dict[str, Any]) -> Any:
        """A side effect under the run's journal: its recorded result when there is one, else
        the call, its intent committed first."""
        ctx = self._ctx
        canonical = json.dumps(args, sort_keys=True, default=repr)
        journal: Journal | None = getattr(ctx, "journal", None)
        if journal is None:  # a context of a user's own: a key, nothing journaled
            base = f"{ctx.run_id}/{ctx.step_id}/{t.name}/{canonical}#1"
            data[KEY_PARAM] = hashlib.sha256(base.encode()).hexdigest()[:32]
            return await self._run(t, args, data, None)
        key = data[KEY_PARAM] = journal.key(f"{t.name}/{canonical}")
        done = journal.result(key)
        if done is not None:
            ctx.emit("tool_reused", {"tool": t.name, KEY_PARAM: key})
            return t.decode(done)
        repeat = journal.begun(key)
        if repeat:
            data["repeat"] = repeat  # cut off before (a crash) or raised: made again, same key
        intent = {**data, "arguments_sha256": hashlib.sha256(canonical.encode()).hexdigest()}
        await journal.begin("tool_intent", key, intent)
        return await self._run(t, args, data, journal)

    async def _run(
        self, t: Tool, args: dict[str, Any], data: dict[str, Any], journal: Journal | None
    ) -> Any:
        """Call the tool's function and record the call (journaled: committed at once)."""
        if t.takes_key:
            args = {**args, KEY_PARAM: data[KEY_PARAM]}
        t0 = time.perf_counter()
        ctx = self._ctx
        token = _CURRENT.set(
            ToolCall(t.name, ctx.run_id, ctx.step_id, data.get(KEY_PARAM), ctx.emit)
        )
        try:
            if inspect.iscoroutinefunction(t.fn):
                result = await t.fn(**args)
            else:
                result = await asyncio.to_thread(t.fn, **args)
        except Exception as exc:
            failed = {
                **data,
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "type": type(exc).__name__,
                "ms": round((time.perf_counter() - t0) * 1000, 3),
            }
            if journal is not None:
                await journal.finish("tool_called", data[KEY_PARAM], failed, None, commit=True)
            else:
                self._ctx.emit("tool_called", failed)
            raise ToolError(
                f"tool '{t.name}' raised {type(exc).__name__}: {exc}",
                tool=t.name,
                retryable=is_retryable(exc),
            ) from exc
        finally:
            _CURRENT.reset(token)
        ms = round((time.perf_counter() - t0) * 1000, 3)
        if journal is None:
            size = len(json.dumps(_jsonable(result)))
            self._ctx.emit("tool_called", {**data, "status": "ok", "result_bytes": size, "ms": ms})
            return result
        payload = json.dumps(to_jsonable_python(result, fallback=repr))
        done = {**data, "status": "ok", "result_bytes": len(payload), "ms": ms}
        await journal.finish("tool_called", data[KEY_PARAM], done, payload, commit=True)
        return result

    async def agent(
        self,
        model: str,
        prompt: str | Sequence[Message],
        *,
        tools: Sequence[str] | None = None,
        max_turns: int = 5,
        max_tokens: int | None = None,
        context: Sequence[Untrusted] = (),
        spotlight: SpotlightMode | None = None,
    ) -> ChatResult:
        """Let ``model`` call ``tools`` (default: all registered) until it answers without a
        tool call, at most ``max_turns`` model calls. Each tool call goes through policy and is
        recorded like :meth:`call`; a denied or failing tool is told to the model as the tool's
        result, so it can answer without it. Running out of turns is a ``ToolError``.

        ``prompt`` is trusted (it comes from the caller); ``context`` is untrusted text for the
        model to read (retrieved documents, web pages), and so are tool results. Untrusted
        text reaches the model spotlighted (``spotlight``; default: the policy's), and once the
        model has read it, the arguments of the calls it proposes are labelled value by value
        and checked against the policy (see :mod:`erpoz.provenance`)."""
        if max_turns < 1:
            raise ToolError("max_turns must be >= 1", retryable=False)
        specs = self._reg.specs(tools)
        messages = [Message.user(prompt)] if isinstance(prompt, str) else list(prompt)
        run_prov = self._run_provenance()
        prov = self._seed(messages, run_prov)
        mode = spotlight or self._spotlight()
        masked = _Masked(model, messages, prov, mode) if self._policy().masked_check else None
        for doc in context:
            prov.distrust(doc.text, doc.source)
            if run_prov is not None:
                run_prov.add(doc.text, doc.source, self._ctx.step_id)
            messages.append(Message.user(mark_untrusted(doc.text, doc.source, mode)))
        models = self._ctx.models
        for turn in range(1, max_turns + 1):
            if prov.tainted:
                self._may_read_untrusted(model, prov)
                self._ctx.emit(
                    "provenance_labeled",
                    {
                        "at": "model_input",
                        "model": model,
                        "turn": turn,
                        "label": UNTRUSTED,
                        "sources": list(prov.sources),
                        "spotlight": mode,
                    },
                )
            result = await models.chat(model, messages, tools=specs, max_tokens=max_tokens)
            if not result.tool_calls:
                if prov.tainted and run_prov is not None:  # said after reading untrusted text
                    run_prov.add(result.text, f"model:{model}", self._ctx.step_id)
                return result
            vetoed: dict[str, str] = {}
            if masked is not None and prov.tainted:
                vetoed = await self._masked_veto(masked, messages, result, specs, max_tokens)
            messages.append(Message.assistant(result.text, result.tool_calls))
            for call in result.tool_calls:
                if call.id in vetoed:
                    messages.append(Message.tool(call.id, vetoed[call.id]))
                    continue
                messages.append(await self._agent_call(call, prov, mode))
            self._ctx.emit(
                "agent_turn",
                {"model": model, "turn": turn, "tool_calls": [c.name for c in result.tool_calls]},
            )
        raise ToolError(
            f"agent with model '{model}' still calling tools after {max_turns} turns",
            retryable=True,
        )

    def _may_read_untrusted(self, model: str, prov: Provenance) -> None:
        """A model rule may keep a model from reading untrusted content (the privileged model
        of the dual-LLM pattern): ``PolicyViolation`` or ``ReviewRequired``."""
        gov = self._gov
        subject = gov.subject if gov is not None else Subject(self._flow or "-", self._ctx.step_id)
        decided = self._policy().decide_model_untrusted(model, subject)
        if decided is None or decided[0] == "allow":
            return
        action, rule = decided
        grant = (
            f"untrusted-model:{model}:"
            + hashlib.sha256("\n".join(prov.sources).encode()).hexdigest()[:24]
        )
        approved = action == "review" and bool(
            getattr(self._ctx, "approved", lambda _k: False)(grant)
        )
        self._ctx.emit(
            "policy_decided",
            {
                "resource": f"model:{model}",
                "action": "allow" if approved else action,
                "rule": rule,
                "flow": self._flow,
                "step": self._ctx.step_id,
                "provenance": {"sources": list(prov.sources), "blocked": [], "arguments": {}},
            },
        )
        if approved:
            return
        why = f"model '{model}' may not read untrusted content ({', '.join(prov.sources)}) ({rule})"
        if action == "deny":
            raise PolicyViolation(why, rule=rule)
        raise ReviewRequired(
            why, evidence={"model": model, "sources": list(prov.sources)}, grant=grant
        )

    def _seed(self, messages: Sequence[Message], run_prov: RunProvenance | None) -> Provenance:
        """The caller's messages are trusted, except the untrusted content of the run found in
        them (an earlier step's retrieved page pasted into the prompt)."""
        prov = Provenance()
        for m in messages:
            if run_prov is None or not run_prov:
                prov.trust(m.text)
                continue
            rest, found = run_prov.split(m.text)
            prov.trust(rest)
            for source, text in found:
                prov.distrust(text, source)
                run_prov.taint(self._ctx.step_id, source)
        return prov

    async def _agent_call(self, call: ModelToolCall, prov: Provenance, mode: str) -> Message:
        """One tool call a model proposed, as the tool message it reads back: the result
        (spotlighted unless the tool is trusted) or why there is none."""
        source = f"tool:{call.name}"
        try:
            out = await self._call(call.name, dict(call.arguments), prov)
        except ToolError as exc:  # a tool's own error may carry text from outside
            text = f"error: {exc}"
            prov.distrust(text, source)
            return Message.tool(call.id, mark_untrusted(text, source, mode))
        except (PolicyViolation, GuardBlocked) as exc:
            return Message.tool(call.id, f"error: {exc}")
        text = json.dumps(_jsonable(out))
        if self._reg.get(call.name).trusted_output:
            prov.trust(text)
            return Message.tool(call.id, text)
        prov.distrust(text, source)
        return Message.tool(call.id, mark_untrusted(text, source, mode))

    def _policy(self) -> Policy:
        return self._reg.policy or (self._gov.rails.policy if self._gov is not None else _NO_POLICY)

    def _spotlight(self) -> str:
        return self._policy().spotlight

    async def _masked_veto(
        self,
        masked: _Masked,
        messages: Sequence[Message],
        result: ChatResult,
        specs: Sequence[ToolSpec],
        max_tokens: int | None,
    ) -> dict[str, str]:
        """Side effects the model proposes again when the user's request is masked: they come
        from the untrusted text. Each is denied (a ``policy_decided`` event); returns what the
        model is told, by call id."""
        side = [
            c
            for c in result.tool_calls
            if c.name in self._reg._tools and self._reg.get(c.name).side_effects
        ]
        if not side:
            return {}
        again = await self._ctx.models.chat(
            masked.model, masked.messages(messages), tools=specs, max_tokens=max_tokens
        )
        vetoed: dict[str, str] = {}
        for call in side:
            if not masked.same(call, again.tool_calls):
                continue
            why = (
                f"tool '{call.name}': the model proposes this call also when the user's request "
                f"is masked: it comes from untrusted content ({', '.join(masked.prov.sources)})"
            )
            self._ctx.emit(
                "policy_decided",
                {
                    "resource": f"tool:{call.name}",
                    "action": "deny",
                    "rule": MASKED_RULE,
                    "flow": self._flow,
                    "step": self._ctx.step_id,
                    "provenance": {
                        "arguments": masked.prov.labels(call.arguments),
                        "blocked": [],
                        "sources": list(masked.prov.sources),
                        "masked": True,
                    },
                },
            )
            vetoed[call.id] = f"error: {why}"
        return vetoed


MASKED_RULE = "masked check: proposed without the user's request too"
#: What the masked re-execution asks in place of the user's request (as MELON does).
MASK_PROMPT = "Summarize the tool outputs and the documents below."


class _Masked:
    """The conversation of an agent with the caller's request masked: the system messages,
    :data:`MASK_PROMPT` with the untrusted content the request held, and everything after."""

    def __init__(self, model: str, caller: Sequence[Message], prov: Provenance, mode: str) -> None:
        self.model = model
        self.prov = prov
        self._n = len(caller)
        untrusted = prov.untrusted_texts()
        text = "\n\n".join([MASK_PROMPT, *(mark_untrusted(t, "prompt", mode) for t in untrusted)])
        self._head = [m for m in caller if m.role == "system"] + [Message.user(text)]

    def messages(self, conversation: Sequence[Message]) -> list[Message]:
        return [*self._head, *conversation[self._n :]]

    def same(self, call: ModelToolCall, proposed: Sequence[ModelToolCall]) -> bool:
        """Whether ``proposed`` holds the call: the same tool with the same trusted arguments
        (untrusted ones, a mail's body, are free text a model words anew each time)."""
        labels = self.prov.labels(call.arguments)
        keys = [k for k, label in labels.items() if label != UNTRUSTED]
        return any(
            p.name == call.name
            and all(_same_value(p.arguments.get(k), call.arguments.get(k)) for k in keys)
            for p in proposed
        )


def _same_value(a: Any, b: Any) -> bool:
    return " ".join(str(a).casefold().split()) == " ".join(str(b).casefold().split())


def registry_from_config(config: ProjectConfig) -> ToolRegistry | None:
    """The ``tools`` section of ``erpoz.yaml``: a list of import paths of ``@tool`` functions
    (``myapp.tools:send_email``), or ``None`` when there is none. Their policy is the
    project's (``policy`` section): without a rule granting them, they stay denied."""
    from ..errors import ConfigError
    from ..flow import LineMap, LineSeq, import_object

    doc = config._doc
    if not isinstance(doc, LineMap) or "tools" not in doc:
        return None
    file = config.file or "erpoz.yaml"
    section = doc["tools"]
    if not isinstance(section, LineSeq):
        raise ConfigError(
            "'tools' is a list of import paths of @tool functions",
            file=file,
            line=doc.lines["tools"],
        )
    registry = ToolRegistry()
    for i, ref in enumerate(section):
        line = section.lines[i]
        if not isinstance(ref, str):
            raise ConfigError(
                "each tool is an import path like 'pkg.mod:name'", file=file, line=line
            )
        try:
            obj = import_object(ref, base=config._base or Path(file).parent, what="tool")
            registry.add(obj)
        except (ValueError, ToolError) as exc:
            raise ConfigError(str(exc), file=file, line=line) from None
    return registry


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
