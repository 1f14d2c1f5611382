"""The replay provider: answers from recorded responses keyed by the request, a clear error for
a request that was not recorded, usage from the record or estimated, the RouteLLM adapter, the
``replay`` entry point in a project file, and the ``Recording`` wrapper's round trip."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from erpoz.errors import ConfigError, ModelError
from erpoz.models import (
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    ModelHub,
    ModelSpec,
    ToolSpec,
    Usage,
    count_tokens,
    parse_config,
    providers,
)
from erpoz.models.replay import (
    Recording,
    ReplayChat,
    request_json,
    request_key,
    routellm_records,
)
from erpoz.project import build_hub
from erpoz.testing import FunctionModel, ScriptedModel


def ask(text: str, **kw: object) -> ChatRequest:
    return ChatRequest((Message.user(text),), **kw)  # type: ignore[arg-type]


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- the key ------------------------------------------------------------------------------------
def test_key_is_the_messages_tools_and_schema_not_sampling() -> None:
    base = ask("What is 2 + 2?")
    assert request_key(base) == request_key(ask("What is 2 + 2?", max_tokens=5, temperature=0.3))
    assert request_key(base) != request_key(ask("What is 2 + 2? "))  # exact text
    assert request_key(base) != request_key(
        ChatRequest((Message.system("Be brief."), Message.user("What is 2 + 2?")))
    )
    tool = ToolSpec("add", "adds", {"type": "object"})
    assert request_key(base) != request_key(ask("What is 2 + 2?", tools=(tool,)))
    assert request_key(base) != request_key(ask("What is 2 + 2?", response_schema={"type": "x"}))
    # images are keyed by their bytes' hash, never stored
    img = ChatRequest((Message.user("what is this?", ImagePart(data=b"\x89PNG fake")),))
    doc = request_json(img)
    assert "sha256" in json.dumps(doc) and "PNG" not in json.dumps(doc)
    assert len(request_key(img)) == 64


# --- hits, misses, usage ------------------------------------------------------------------------
def test_jsonl_hit_usage_from_record_or_estimated(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"prompt": "What is 2 + 2?", "response": "4", "usage": {"input_tokens": 9}},
            {
                "request": {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Capital of France?"},
                    ]
                },
                "response": "Paris",
                "finish_reason": "stop",
            },
        ],
    )
    replay = ReplayChat.from_jsonl(path, "recorded")
    assert len(replay) == 2
    hit = asyncio.run(replay.generate(ask("What is 2 + 2?", max_tokens=3)))
    assert (hit.text, hit.model, hit.usage) == ("4", "recorded", Usage(9, 0))
    request = ChatRequest((Message.system("Be brief."), Message.user("Capital of France?")))
    assert request in replay
    paris = asyncio.run(replay.generate(request))
    assert paris.text == "Paris"
    # no usage recorded: estimated from the request and the answer
    assert paris.usage == Usage(count_tokens(request.prompt_text), count_tokens("Paris"))


def test_miss_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "answers.jsonl", [{"prompt": "known", "response": "yes"}])
    replay = ReplayChat.from_jsonl(path, "recorded")
    unknown = ask("What is the airspeed of an unladen swallow?")
    with pytest.raises(ModelError) as caught:
        asyncio.run(replay.generate(unknown))
    message = str(caught.value)
    assert request_key(unknown) in message
    assert str(path) in message
    assert "unladen swallow" in message and "1 records" in message
    assert caught.value.model == "recorded" and not caught.value.retryable


def test_records_under_one_key_answer_in_turn(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"prompt": "roll", "response": "3"}, {"prompt": "roll", "response": "5"}],
    )
    cycling = ReplayChat.from_jsonl(path)
    got = [asyncio.run(cycling.generate(ask("roll"))).text for _ in range(3)]
    assert got == ["3", "5", "3"]
    first = ReplayChat.from_jsonl(path, repeat="first")
    assert {asyncio.run(first.generate(ask("roll"))).text for _ in range(3)} == {"3"}


def test_a_bad_line_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "no answer"}\n')
    with pytest.raises(ConfigError) as caught:
        ReplayChat.from_jsonl(path)
    assert caught.value.line == 2 and str(path) in str(caught.value)


def test_stream_gives_the_recorded_answer(tmp_path: Path) -> None:
    replay = ReplayChat.from_jsonl(
        write_jsonl(tmp_path / "a.jsonl", [{"prompt": "hi", "response": "hello there"}])
    )

    async def collect() -> list[str]:
        return [c.text async for c in replay.stream(ask("hi"))]

    assert "".join(asyncio.run(collect())) == "hello there"


# --- RouteLLM's files
WEAK_COL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_COL = "gpt-4-1106-preview"


def write_routellm(folder: Path, rows: list[tuple[str, bool, bool, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "gsm8k_responses.csv").open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["prompt", WEAK_COL, STRONG_COL, f"{WEAK_COL}_response", f"{STRONG_COL}_response"]
        )
        w.writerows(rows)
    (folder / "contaminated_prompts.jsonl").write_text(
        json.dumps({"train_prompt": "x", "eval_prompt": "Dirty?", "train_idx": 1, "eval_idx": 2})
        + "\n",
        encoding="utf-8",
    )
    return folder


def test_routellm_adapter_picks_a_model_column_and_drops_contaminated(tmp_path: Path) -> None:
    folder = write_routellm(
        tmp_path / "gsm8k",
        [
            ("Clean?", True, True, " 1 + 1 = 2\n#### 2", "It is 2."),
            ("Dirty?", False, True, "#### 7", "#### 8"),
        ],
    )
    weak = ReplayChat.from_routellm(folder, "weak")
    strong = ReplayChat.from_routellm(folder / "gsm8k_responses.csv", "strong", "gpt4")
    assert len(weak) == len(strong) == 1
    assert asyncio.run(weak.generate(ask("Clean?"))).text == " 1 + 1 = 2\n#### 2"
    assert asyncio.run(strong.generate(ask("Clean?"))).model == "gpt4"
    with pytest.raises(ModelError, match="no recorded response"):
        asyncio.run(weak.generate(ask("Dirty?")))
    assert len(routellm_records(folder, "weak", exclude_contaminated=False)) == 2
    with pytest.raises(ConfigError, match="no answers of model 'claude'"):
        routellm_records(folder, "claude")


# --- the provider -----------------------------------------------------------------------------
def test_replay_is_a_provider_of_the_project_file(tmp_path: Path) -> None:
    assert "replay" in providers()
    path = write_jsonl(tmp_path / "calls.jsonl", [{"prompt": "Ping?", "response": "pong"}])
    config = parse_config(
        f"""
models:
  recorded:
    provider: replay
    params: {{path: {json.dumps(str(path))}}}
    price: {{input: 1.0, output: 2.0}}
"""
    )
    hub = build_hub(config)
    reply = asyncio.run(hub.unbound().chat("recorded", "Ping?"))
    assert reply.text == "pong" and reply.cost_usd > 0  # metered like any configured model
    bad = parse_config(
        "models:\n  r: {provider: replay, params: {path: x.jsonl, speed: 2}}\n", file="p.yaml"
    )
    with pytest.raises(ConfigError, match="unknown param"):
        build_hub(bad)


# --- recording ------------------------------------------------------------------------------------
def test_recording_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "recorded" / "calls.jsonl"

    def answer(request: ChatRequest) -> ChatResult:
        return ChatResult(
            f"echo: {request.messages[-1].text}", "live", Usage(11, 3), finish_reason="stop"
        )

    live = FunctionModel(answer, name="writer")
    hub = ModelHub()
    hub.add(Recording(live, path), ModelSpec("writer", "function", price_in=1, price_out=1))
    models = hub.unbound()
    asked = [
        "first question",
        [Message.system("Be brief."), Message.user("second question")],
        "first question",
    ]
    live_answers = [asyncio.run(models.chat("writer", p)).text for p in asked]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3

    replay = ReplayChat.from_jsonl(path, "writer")
    requests = [
        ask("first question"),
        ChatRequest((Message.system("Be brief."), Message.user("second question"))),
        ask("first question"),
    ]
    replayed = [asyncio.run(replay.generate(r)) for r in requests]
    assert [r.text for r in replayed] == live_answers
    assert replayed[0].usage == Usage(11, 3)  # the recorded usage
    assert replayed[0].finish_reason == "stop"


def test_recording_streams_and_skips_failures(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    flaky = Recording(ScriptedModel(["one two", ModelError("down")], name="m"), path)

    async def run() -> str:
        text = "".join([c.text async for c in flaky.stream(ask("q"))])
        with pytest.raises(ModelError):
            await flaky.generate(ask("q"))
        return text

    assert asyncio.run(run()).strip() == "one two"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["response"].strip() == "one two"
