"""Replay: a chat model that answers from recorded responses, keyed by the request.

For evaluating routers on recorded answers (no model is called, nothing is spent, every run is
the same) and for deterministic re-runs of flows. Records come from:

- a JSONL file, one record a line: ``{"request": {...}, "response": "text"}`` or, for a single
  user message, ``{"prompt": "text", "response": "text"}``; optional ``usage``
  (``{"input_tokens": 12, "output_tokens": 40}``), ``model``, ``finish_reason``,
  ``tool_calls`` and ``key``. :class:`Recording` writes such files from a real model's answers;
- RouteLLM's recorded responses (``gsm8k_responses.csv``: one column of answer text per model),
  with :func:`routellm_records`: each prompt becomes one user message.

**The key.** A request is found by :func:`request_key`: the SHA-256 of a canonical JSON form of
what the model is asked -- the messages (role; text, or for each part its text or the SHA-256 of
an image's bytes or its URL; tool calls with their arguments; the tool call id) and, when the
request has them, the tools offered and the response schema. Sampling and transport settings
(``temperature``, ``max_tokens``, ``timeout``, ``tags``) are not part of it: the same question
asked with another ``max_tokens`` finds the same answer. White space inside texts counts (the
key is exact). A request not recorded is a ``ModelError`` naming the key and the file.

Several records under one key answer in turn, in the order recorded (then from the first
again), so a flow that asks the same thing twice gets the two answers it got then.

The run store cannot be replayed: its ``model_called`` events record who answered, the tokens
and the cost, and its ``model_replied`` events the answers a step got, keyed for that step
only, not the prompts. Record with :class:`Recording` to replay.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, ModelError
from ._meter import count_tokens
from ._protocol import ChatModel
from ._types import (
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    ModelSpec,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "ROUTELLM_MODELS",
    "Recorded",
    "Recording",
    "ReplayChat",
    "check_params",
    "create",
    "read_jsonl",
    "request_from_json",
    "request_json",
    "request_key",
    "routellm_records",
]

#: The two models of RouteLLM's GSM8K file, by role.
ROUTELLM_MODELS: Mapping[str, str] = {
    "weak": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "strong": "gpt-4-1106-preview",
}


# --- the key -------------------------------------------------------------------------------------
def _part_json(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.data is not None:
        return {"type": "image", "mime": part.mime, "sha256": hashlib.sha256(part.data).hexdigest()}
    return {"type": "image", "url": part.url}


def _message_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    out["content"] = m.content if isinstance(m.content, str) else [_part_json(p) for p in m.content]
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def request_json(request: ChatRequest) -> dict[str, Any]:
    """What the key is made of, as JSON: ``messages``, and ``tools`` and ``response_schema``
    when the request has them. Image bytes are replaced by their SHA-256."""
    out: dict[str, Any] = {"messages": [_message_json(m) for m in request.messages]}
    if request.tools:
        out["tools"] = [
            {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
            for t in request.tools
        ]
    if request.response_schema is not None:
        out["response_schema"] = dict(request.response_schema)
    return out


def _key_of(doc: Mapping[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def request_key(request: ChatRequest) -> str:
    """The replay key of a request: the SHA-256 (hex) of :func:`request_json`, dumped with
    sorted keys, no spaces, UTF-8."""
    return _key_of(request_json(request))


def _part_from(doc: Mapping[str, Any]) -> TextPart | ImagePart:
    if doc.get("type") == "text":
        return TextPart(str(doc.get("text", "")))
    if "data" in doc:
        return ImagePart(data=base64.b64decode(doc["data"]), mime=str(doc.get("mime", "image/png")))
    if "url" in doc:
        return ImagePart(url=str(doc["url"]))
    raise ValueError("an image part recorded by its hash only cannot be rebuilt")


def request_from_json(doc: Mapping[str, Any]) -> ChatRequest:
    """A request from :func:`request_json`'s form (image parts need ``data`` or ``url``)."""
    messages = []
    for m in doc.get("messages", []):
        content = m.get("content", "")
        parts: str | tuple[TextPart | ImagePart, ...] = (
            content if isinstance(content, str) else tuple(_part_from(p) for p in content)
        )
        calls = tuple(
            ToolCall(str(c.get("id", "")), str(c["name"]), dict(c.get("arguments") or {}))
            for c in m.get("tool_calls") or ()
        )
        messages.append(Message(m["role"], parts, calls, m.get("tool_call_id")))
    tools = tuple(
        ToolSpec(t["name"], t.get("description", ""), t.get("parameters") or {})
        for t in doc.get("tools") or ()
    )
    return ChatRequest(tuple(messages), tools, doc.get("response_schema"))


# --- records -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded answer: its text and, when recorded, usage, model, finish reason and tool
    calls. ``prompt`` is a short view of the request, for error messages."""

    text: str
    usage: Usage | None = None
    model: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt: str = ""


def _short(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _usage(doc: Any) -> Usage | None:
    if not isinstance(doc, Mapping):
        return None
    try:
        return Usage(int(doc.get("input_tokens") or 0), int(doc.get("output_tokens") or 0))
    except (TypeError, ValueError):
        return None


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[str, Recorded]]:
    """``(key, record)`` pairs of a JSONL replay file, in order. A line that is not a record
    is a ``ConfigError`` naming the file and the line."""
    p = Path(path)
    out: list[tuple[str, Recorded]] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read replay file: {exc.strerror}", file=str(p)) from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("a record is a JSON object")
            out.append(_record_from(doc))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f'not a replay record ({exc}); expected {{"request" or "prompt", '
                '"response"[, "usage"]}',
                file=str(p),
                line=n,
            ) from None
    return out


def _record_from(doc: Mapping[str, Any]) -> tuple[str, Recorded]:
    if "response" not in doc:
        raise KeyError("'response'")
    response = doc["response"]
    if isinstance(response, Mapping):  # {"text": ..., "usage": ...}
        text = str(response.get("text", ""))
        usage = _usage(response.get("usage")) or _usage(doc.get("usage"))
    else:
        text = str(response)
        usage = _usage(doc.get("usage"))
    if "request" in doc:
        req_doc = doc["request"]
        key = str(doc.get("key") or _key_of(_canonical_doc(req_doc)))
        shown = next(
            (
                m.get("content")
                for m in reversed(req_doc.get("messages", []))
                if m.get("role") == "user" and isinstance(m.get("content"), str)
            ),
            "",
        )
    elif "prompt" in doc:
        prompt = str(doc["prompt"])
        key = str(doc.get("key") or request_key(ChatRequest((Message.user(prompt),))))
        shown = prompt
    elif "key" in doc:
        key, shown = str(doc["key"]), ""
    else:
        raise KeyError("'request' or 'prompt'")
    calls = tuple(
        ToolCall(str(c.get("id", "")), str(c["name"]), dict(c.get("arguments") or {}))
        for c in doc.get("tool_calls") or ()
    )
    return key, Recorded(
        text,
        usage,
        doc.get("model"),
        doc.get("finish_reason"),
        calls,
        _short(str(shown or "")),
    )


def _canonical_doc(req_doc: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded request in the exact form :func:`request_json` gives (so that a request
    written by hand, with defaults left out, keys the same)."""
    try:
        return request_json(request_from_json(req_doc))
    except ValueError:  # image parts recorded by hash: the recorded form is already canonical
        return dict(req_doc)


def routellm_records(
    path: str | os.PathLike[str],
    model: str = "weak",
    *,
    exclude_contaminated: bool = True,
) -> list[tuple[str, Recorded]]:
    """``(key, record)`` pairs from RouteLLM's recorded responses: ``path`` is the folder
    (holding ``gsm8k_responses.csv`` and ``contaminated_prompts.jsonl``) or the CSV file;
    ``model`` is ``weak`` (Mixtral-8x7B), ``strong`` (GPT-4) or a model column of the file.
    Each prompt becomes one user message; the prompts RouteLLM removes as contaminated are
    left out unless ``exclude_contaminated`` is false. No usage is recorded in the file."""
    csv_path, contaminated = routellm_files(path)
    column = ROUTELLM_MODELS.get(model, model)
    skip = read_contaminated(contaminated) if exclude_contaminated and contaminated else set()
    out = []
    for row in read_routellm_rows(csv_path):
        answer_col = f"{column}_response"
        if answer_col not in row:
            cols = [c.removesuffix("_response") for c in row if c.endswith("_response")]
            raise ConfigError(
                f"no answers of model {column!r} in the file (models: {', '.join(cols)}; "
                "or weak / strong)",
                file=str(csv_path),
            )
        prompt = row["prompt"]
        if prompt in skip:
            continue
        key = request_key(ChatRequest((Message.user(prompt),)))
        out.append((key, Recorded(row[answer_col], None, column, "stop", (), _short(prompt))))
    return out


def routellm_files(path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """The CSV of answers and the contaminated prompts (``None`` if absent) of a RouteLLM
    data folder or CSV path."""
    p = Path(path)
    if p.is_dir():
        csv_path = p / "gsm8k_responses.csv"
        contaminated: Path | None = p / "contaminated_prompts.jsonl"
    else:
        csv_path = p
        contaminated = p.with_name("contaminated_prompts.jsonl")
    if not csv_path.is_file():
        raise ConfigError(f"no RouteLLM responses file at {csv_path}", file=str(csv_path))
    if contaminated is not None and not contaminated.is_file():
        contaminated = None
    return csv_path, contaminated


def read_routellm_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of a RouteLLM responses CSV (UTF-8, with or without a byte-order mark)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read RouteLLM responses: {exc}", file=str(csv_path)) from None
    if rows and "prompt" not in rows[0]:
        raise ConfigError("a RouteLLM responses file has a 'prompt' column", file=str(csv_path))
    return rows


def read_contaminated(path: Path) -> set[str]:
    """The ``eval_prompt`` of each line of RouteLLM's ``contaminated_prompts.jsonl``."""
    out: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.add(str(json.loads(line)["eval_prompt"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError('expected {"eval_prompt": ...}', file=str(path), line=n) from None
    return out


# --- the model -----------------------------------------------------------------------------------
Repeat = Literal["cycle", "first"]


class ReplayChat:
    """A :class:`~erpoz.models.ChatModel` that answers from recorded responses.

    ``records`` are ``(key, Recorded)`` pairs (see :func:`read_jsonl`,
    :func:`routellm_records`); ``source`` names where they came from, for error messages.
    Several records under one key answer in turn (``repeat="cycle"``, the default) or the
    first always answers (``"first"``). Usage is the recorded one, else estimated with
    ``count_tokens`` from the request and the answer. The result's ``model`` is this model's
    name. A request that was not recorded is a non-retryable ``ModelError`` with its key.
    """

    def __init__(
        self,
        name: str,
        records: Iterable[tuple[str, Recorded]],
        *,
        source: str = "(in memory)",
        repeat: Repeat = "cycle",
    ) -> None:
        if repeat not in ("cycle", "first"):
            raise ConfigError(f"replay '{name}': repeat is 'cycle' or 'first', not {repeat!r}")
        self.name = name
        self.source = source
        self.repeat: Repeat = repeat
        self._records: dict[str, list[Recorded]] = {}
        for key, rec in records:
            self._records.setdefault(key, []).append(rec)
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike[str], name: str = "replay", *, repeat: Repeat = "cycle"
    ) -> ReplayChat:
        """Answers recorded in a JSONL file (see the module's docstring)."""
        return cls(name, read_jsonl(path), source=os.fspath(path), repeat=repeat)

    @classmethod
    def from_routellm(
        cls,
        path: str | os.PathLike[str],
        model: str = "weak",
        name: str | None = None,
        *,
        exclude_contaminated: bool = True,
    ) -> ReplayChat:
        """The answers of one model (``weak``, ``strong`` or a model column) in RouteLLM's
        recorded responses (a folder or its ``gsm8k_responses.csv``)."""
        csv_path, _ = routellm_files(path)
        records = routellm_records(path, model, exclude_contaminated=exclude_contaminated)
        return cls(name or model, records, source=str(csv_path))

    def __len__(self) -> int:
        return sum(len(v) for v in self._records.values())

    def __contains__(self, request: object) -> bool:
        return isinstance(request, ChatRequest) and request_key(request) in self._records

    def keys(self) -> list[str]:
        return list(self._records)

    def lookup(self, request: ChatRequest) -> Recorded:
        """The record that answers ``request`` now (advancing the turn), or ``ModelError``."""
        key = request_key(request)
        found = self._records.get(key)
        if not found:
            asked = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            raise ModelError(
                f"no recorded response for request key {key} (user: {_short(asked)!r}) in "
                f"{self.source} ({len(self)} records)",
                model=self.name,
            )
        if self.repeat == "first" or len(found) == 1:
            return found[0]
        with self._lock:
            turn = self._next.get(key, 0)
            self._next[key] = turn + 1
        return found[turn % len(found)]

    def _result(self, request: ChatRequest, rec: Recorded, t0: float) -> ChatResult:
        usage = rec.usage or Usage(count_tokens(request.prompt_text), count_tokens(rec.text))
        return ChatResult(
            rec.text,
            self.name,
            usage,
            time.perf_counter() - t0,
            rec.tool_calls,
            rec.finish_reason or "stop",
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        t0 = time.perf_counter()
        return self._result(request, self.lookup(request), t0)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The recorded answer in one chunk, then the result."""
        result = await self.generate(request)
        if result.text:
            yield StreamChunk(result.text)
        yield StreamChunk("", result)


# --- recording -----------------------------------------------------------------------------------
class Recording:
    """A chat model that passes every request to ``inner`` and appends what it answered to
    the JSONL file ``path`` (created if missing), in the form :class:`ReplayChat` reads:
    ``{"key", "request", "response", "usage", "model", "finish_reason"[, "tool_calls"]}``.

    Image bytes are recorded as their SHA-256 only (the key needs no more). Failed calls are
    not recorded. Lines are written whole, under a lock, and flushed at once.
    """

    def __init__(self, inner: ChatModel, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = Path(path)
        self._lock = threading.Lock()

    def _write(self, request: ChatRequest, result: ChatResult) -> None:
        doc: dict[str, Any] = {
            "key": request_key(request),
            "request": request_json(request),
            "response": result.text,
            "usage": {
                "input_tokens": result.usage.input_tokens,
                "output_tokens": result.usage.output_tokens,
            },
            "model": result.model,
            "finish_reason": result.finish_reason,
        }
        if result.tool_calls:
            doc["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": dict(c.arguments)}
                for c in result.tool_calls
            ]
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()

    async def generate(self, request: ChatRequest) -> ChatResult:
        result = await self.inner.generate(request)
        self._write(request, result)
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        parts: list[str] = []
        final: ChatResult | None = None
        async for chunk in self.inner.stream(request):
            if chunk.result is not None:
                final = chunk.result
            else:
                parts.append(chunk.text)
            yield chunk
        self._write(request, final or ChatResult("".join(parts), self.name))


# --- the provider --------------------------------------------------------------------------------
_PARAMS = ("path", "format", "model", "repeat", "exclude_contaminated")


def create(spec: ModelSpec) -> ReplayChat:
    """Provider ``replay``. Params: ``path`` (required: a JSONL file, or RouteLLM's folder or
    CSV, relative to the current directory); ``format`` (``jsonl`` or ``routellm``; by default
    from the path: a ``.jsonl`` file is JSONL, a folder or a ``.csv`` file RouteLLM's);
    ``model`` (RouteLLM only: ``weak``, ``strong`` or a model column; default ``weak``);
    ``repeat`` (``cycle`` or ``first``); ``exclude_contaminated`` (RouteLLM only, default
    true)."""
    params = dict(spec.params)
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ConfigError(
            f"model '{spec.name}': unknown param(s) {', '.join(unknown)} for provider 'replay' "
            f"(known: {', '.join(_PARAMS)})"
        )
    if spec.kind != "chat":
        raise ConfigError(f"model '{spec.name}': provider 'replay' serves kind 'chat' only")
    path = params.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"model '{spec.name}': provider 'replay' needs params.path")
    fmt = params.get("format") or (
        "jsonl" if path.endswith((".jsonl", ".ndjson")) or not _is_routellm(path) else "routellm"
    )
    repeat = params.get("repeat", "cycle")
    if fmt == "jsonl":
        return ReplayChat.from_jsonl(path, spec.name, repeat=repeat)
    if fmt == "routellm":
        return ReplayChat.from_routellm(
            path,
            str(params.get("model", "weak")),
            spec.name,
            exclude_contaminated=bool(params.get("exclude_contaminated", True)),
        )
    raise ConfigError(f"model '{spec.name}': params.format is 'jsonl' or 'routellm', not {fmt!r}")


def _is_routellm(path: str) -> bool:
    return path.endswith(".csv") or Path(path).is_dir()


def check_params(spec: ModelSpec) -> None:
    """Check the params without reading the file."""
    params = dict(spec.params)
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ConfigError(
            f"model '{spec.name}': unknown param(s) {', '.join(unknown)} for provider 'replay' "
            f"(known: {', '.join(_PARAMS)})"
        )
    if not isinstance(params.get("path"), str) or not params.get("path"):
        raise ConfigError(f"model '{spec.name}': provider 'replay' needs params.path")
