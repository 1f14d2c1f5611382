"""The ``openai`` provider against a real local OpenAI-compatible server: what goes on the wire,
what comes back, retries and errors, and the whole path from a flow step to the run's log."""

import asyncio
import contextlib
import gc
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import erpoz
from erpoz import Engine
from erpoz.errors import ConfigError, ModelError
from erpoz.models import (
    ChatRequest,
    ImagePart,
    Message,
    ModelHub,
    ModelSpec,
    ToolCall,
    ToolSpec,
    block_real_providers,
)
from erpoz.models import create as create_model
from erpoz.models.openai_compat import OpenAICompatChat, OpenAICompatEmbed, create, is_loopback
from erpoz.models.stub_server import Behaviour, OpenAIStubServer
from erpoz.store import MemoryStore

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oai_server() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_server(oai_server: OpenAIStubServer) -> Iterator[None]:
    oai_server.reset()
    yield
    oai_server.reset()


def spec(server: OpenAIStubServer, name: str = "gpt", **params: Any) -> ModelSpec:
    base = {"base_url": server.base_url, "timeout": 2.0, "backoff": 0.01, "api_key": "sk-test"}
    return ModelSpec(name, "openai", params={**base, **params}, price_in=2.0, price_out=10.0)


def chat_model(server: OpenAIStubServer, **params: Any) -> OpenAICompatChat:
    return OpenAICompatChat(spec(server, **params))


def ask(text: str = "hello world", **kw: Any) -> ChatRequest:
    return ChatRequest((Message.user(text),), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def generate(model: OpenAICompatChat, request: ChatRequest) -> Any:
    try:
        return await model.generate(request)
    finally:
        await model.aclose()


def failure(model: OpenAICompatChat, request: ChatRequest | None = None) -> ModelError:
    with pytest.raises(ModelError) as info:
        run(generate(model, request or ask()))
    return info.value


# --- a plain answer and what was sent -----------------------------------------------------------
def test_a_text_reply_with_its_usage(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.reply("Paris.", usage=(12, 3)))
    result = run(generate(chat_model(oai_server), ask("capital of France?")))
    assert result.text == "Paris."
    assert result.model == "gpt"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 3)
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()
    assert result.latency_s > 0


def test_the_default_answer_echoes_the_last_user_message(oai_server: OpenAIStubServer) -> None:
    result = run(generate(chat_model(oai_server), ask("ping me")))
    assert result.text == "echo: ping me"
    assert result.usage.input_tokens == 2


def test_the_body_carries_messages_images_tools_schema_and_limits(
    oai_server: OpenAIStubServer,
) -> None:
    schema = {"title": "City Answer", "type": "object", "properties": {"city": {"type": "string"}}}
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    request = ChatRequest(
        (
            Message.system("be brief"),
            Message.user("what is this?", ImagePart(PNG, mime="image/png")),
            Message.assistant("", [call]),
            Message.tool("call_1", "sunny"),
            Message.user("and a picture by URL", ImagePart(url="https://example.com/a.jpg")),
        ),
        tools=(WEATHER,),
        response_schema=schema,
        temperature=0.2,
        max_tokens=64,
    )
    run(generate(chat_model(oai_server, model="upstream-4o"), request))
    (sent,) = oai_server.requests_to("chat")
    body = sent.body
    assert body["model"] == "upstream-4o"
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert "stream" not in body
    system, user, assistant, tool, user2 = body["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert user["content"][0] == {"type": "text", "text": "what is this?"}
    image = user["content"][1]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"] == ImagePart(PNG).data_url()
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert assistant["content"] is None
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert tool == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert user2["content"][1]["image_url"]["url"] == "https://example.com/a.jpg"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City_Answer", "schema": schema, "strict": False},
    }
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"


def test_optional_fields_are_left_out(
    oai_server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    run(generate(chat_model(oai_server), ask()))
    body = oai_server.requests_to("chat")[0].body
    assert set(body) == {"model", "messages"}
    assert body["model"] == "gpt"


def test_the_api_key_comes_from_the_named_env_variable(
    oai_server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_GATEWAY_KEY", "sk-from-env")
    model = OpenAICompatChat(
        ModelSpec(
            "gw",
            "openai",
            params={"base_url": oai_server.base_url, "api_key_env": "MY_GATEWAY_KEY"},
        )
    )
    run(generate(model, ask()))
    assert oai_server.requests[-1].headers["authorization"] == "Bearer sk-from-env"


def test_url_from_the_environment_model_from_the_spec_and_no_key(
    oai_server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", oai_server.base_url + "/")
    monkeypatch.setenv("OPENAI_MODEL", "ignored-by-the-provider")
    model = OpenAICompatChat(ModelSpec("llama-3-8b", "openai"))
    assert model.base_url == oai_server.base_url
    run(generate(model, ask()))
    sent = oai_server.requests[-1]
    assert "authorization" not in sent.headers
    assert sent.body["model"] == "llama-3-8b"


# --- tool calls ---------------------------------------------------------------------------------
def test_tool_calls_are_parsed(oai_server: OpenAIStubServer) -> None:
    oai_server.script(
        "chat",
        Behaviour.tool_calls(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})),
    )
    result = run(generate(chat_model(oai_server), ask("weather?", tools=(WEATHER,))))
    assert result.finish_reason == "tool_calls"
    assert [(c.name, dict(c.arguments)) for c in result.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    assert all(c.id for c in result.tool_calls)
    assert result.text == ""


def test_malformed_tool_arguments_are_a_non_retryable_error_naming_the_tool(
    oai_server: OpenAIStubServer,
) -> None:
    oai_server.script("chat", Behaviour.tool_calls(("get_weather", '{"city": "Par')))
    err = failure(chat_model(oai_server))
    assert not err.retryable
    assert "get_weather" in str(err)
    assert "not valid JSON" in str(err)
    assert len(oai_server.requests_to("chat")) == 1


# --- streaming ----------------------------------------------------------------------------------
async def collect(model: OpenAICompatChat, request: ChatRequest) -> list[Any]:
    try:
        return [chunk async for chunk in model.stream(request)]
    finally:
        await model.aclose()


def test_streamed_chunks_join_to_the_answer_and_the_last_carries_the_result(
    oai_server: OpenAIStubServer,
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    oai_server.script("chat", Behaviour.reply(text, usage=(9, 10)))
    chunks = run(collect(chat_model(oai_server), ask("tell me")))
    *pieces, last = chunks
    assert len(pieces) > 3
    assert all(c.result is None for c in pieces)
    assert "".join(c.text for c in pieces) == text
    assert last.text == ""
    assert last.result is not None
    assert last.result.text == text
    assert (last.result.usage.input_tokens, last.result.usage.output_tokens) == (9, 10)
    assert last.result.finish_reason == "stop"
    body = oai_server.requests_to("chat")[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_are_assembled(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.tool_calls(("get_weather", {"city": "Oslo"}), text="ok"))
    *_, last = run(collect(chat_model(oai_server), ask("weather?", tools=(WEATHER,))))
    assert last.result.text == "ok"
    (call,) = last.result.tool_calls
    assert (call.name, dict(call.arguments)) == ("get_weather", {"city": "Oslo"})
    assert call.id.startswith("call_")
    assert last.result.finish_reason == "tool_calls"


def test_a_stream_is_retried_before_it_starts(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.error(503), Behaviour.reply("after all"))
    chunks = run(collect(chat_model(oai_server), ask()))
    assert chunks[-1].result.text == "after all"
    assert len(oai_server.requests_to("chat")) == 2


def test_a_garbled_stream_event_is_an_invalid_response(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.malformed(b"{nope"))
    with pytest.raises(ModelError, match="invalid response") as info:
        run(collect(chat_model(oai_server), ask()))
    assert not info.value.retryable


def test_a_server_that_does_not_stream_gives_one_chunk(oai_server: OpenAIStubServer) -> None:
    completion = {
        "choices": [{"message": {"content": "all at once"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3},
    }
    oai_server.script("chat", Behaviour.raw(json.dumps(completion).encode()))
    chunks = run(collect(chat_model(oai_server), ask()))
    assert [c.text for c in chunks] == ["all at once", ""]
    assert chunks[-1].result.usage.output_tokens == 3


def test_an_empty_stream_is_an_invalid_response(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.raw(b"", content_type="text/event-stream"))
    with pytest.raises(ModelError, match=r"invalid response \(a stream without events\)$"):
        run(collect(chat_model(oai_server), ask()))


# --- retries ------------------------------------------------------------------------------------
def test_429_with_retry_after_is_retried_after_the_wait(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.error(429, retry_after=0.3), Behaviour.reply("fine"))
    t0 = time.perf_counter()
    result = run(generate(chat_model(oai_server, backoff=0.0), ask()))
    assert result.text == "fine"
    assert time.perf_counter() - t0 >= 0.3
    assert len(oai_server.requests_to("chat")) == 2


def test_retry_after_is_capped_by_max_backoff(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.error(429, retry_after=30), Behaviour.reply("fine"))
    t0 = time.perf_counter()
    result = run(generate(chat_model(oai_server, max_backoff=0.05), ask()))
    assert result.text == "fine"
    assert time.perf_counter() - t0 < 2


def test_500_twice_then_success(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.error(500), Behaviour.error(500), Behaviour.reply("up"))
    result = run(generate(chat_model(oai_server), ask()))
    assert result.text == "up"
    assert len(oai_server.requests_to("chat")) == 3
    assert oai_server.pending("chat") == 0


def test_persistent_503_gives_up_after_max_retries(oai_server: OpenAIStubServer) -> None:
    oai_server.always("chat", Behaviour.error(503, "overloaded"))
    err = failure(chat_model(oai_server, max_retries=3))
    assert err.retryable
    assert err.status == 503
    assert err.model == "gpt"
    assert "overloaded" in str(err)
    assert "gave up after 4 attempts" in str(err)
    assert len(oai_server.requests_to("chat")) == 4


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "API key"), (400, "bad request"), (404, "model id"), (422, "bad request")],
)
def test_client_errors_are_not_retried(
    oai_server: OpenAIStubServer, status: int, hint: str
) -> None:
    oai_server.script("chat", Behaviour.error(status, "bad request"))
    err = failure(chat_model(oai_server))
    assert not err.retryable
    assert err.status == status
    assert f"HTTP {status}" in str(err)
    assert hint in str(err)
    assert len(oai_server.requests_to("chat")) == 1


def test_a_client_timeout_is_retryable(oai_server: OpenAIStubServer) -> None:
    oai_server.always("chat", Behaviour.reply("too late").delayed(1.0))
    err = failure(chat_model(oai_server, timeout=0.1, max_retries=1))
    assert err.retryable
    assert err.status is None
    assert "timed out after 0.1 s" in str(err)
    assert len(oai_server.requests_to("chat")) == 2


def test_a_request_timeout_overrides_the_models(oai_server: OpenAIStubServer) -> None:
    oai_server.always("chat", Behaviour.reply("too late").delayed(1.0))
    err = failure(chat_model(oai_server, max_retries=0), ask(timeout=0.1))
    assert err.retryable
    assert "timed out" in str(err)


def test_a_dropped_connection_is_retried(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.disconnect(), Behaviour.reply("reconnected"))
    result = run(generate(chat_model(oai_server), ask()))
    assert result.text == "reconnected"
    assert len(oai_server.requests_to("chat")) == 2


def test_an_unreachable_server_is_a_retryable_error() -> None:
    with OpenAIStubServer() as gone:
        url = gone.base_url
    model = OpenAICompatChat(ModelSpec("gpt", "openai", params={"base_url": url, "backoff": 0}))
    err = failure(model)
    assert err.retryable
    assert "could not reach" in str(err)
    assert isinstance(err.__cause__, ConnectionRefusedError)  # the socket's error, kept


# --- garbage ------------------------------------------------------------------------------------
def test_malformed_json_is_an_invalid_response(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.malformed(b"<html>gateway</html>"))
    err = failure(chat_model(oai_server))
    assert not err.retryable
    assert "invalid response" in str(err)
    assert "gateway" in str(err)
    assert len(oai_server.requests_to("chat")) == 1


def test_json_without_choices_is_an_invalid_response(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.malformed(b'{"id": "x", "choices": []}'))
    err = failure(chat_model(oai_server))
    assert not err.retryable
    assert "invalid response" in str(err)


# --- embeddings ---------------------------------------------------------------------------------
def test_embeddings(oai_server: OpenAIStubServer) -> None:
    model = OpenAICompatEmbed(spec(oai_server, "emb", model="text-embedding-3-small"))

    async def main() -> Any:
        try:
            return await model.embed(["a cat", "a dog", "a cat"])
        finally:
            await model.aclose()

    result = run(main())
    assert result.model == "emb"
    assert len(result.vectors) == 3
    assert len(result.vectors[0]) == oai_server.dimensions
    assert result.vectors[0] == result.vectors[2] != result.vectors[1]
    assert result.usage.input_tokens == 6
    (sent,) = oai_server.requests_to("embeddings")
    assert sent.body == {"model": "text-embedding-3-small", "input": ["a cat", "a dog", "a cat"]}


def test_scripted_embeddings_and_a_count_mismatch(oai_server: OpenAIStubServer) -> None:
    oai_server.script(
        "embeddings", Behaviour.embedding([[1.0, 0.0]]), Behaviour.embedding([[1.0, 0.0]])
    )
    model = OpenAICompatEmbed(spec(oai_server, "emb"))

    async def main() -> Any:
        try:
            one = await model.embed(["x"])
            with pytest.raises(ModelError, match="1 vectors for 2 texts"):
                await model.embed(["x", "y"])
            return one
        finally:
            await model.aclose()

    assert run(main()).vectors == ((1.0, 0.0),)


# --- construction, the entry point and the real-provider guard ----------------------------------
def test_create_builds_by_kind_through_the_entry_point(oai_server: OpenAIStubServer) -> None:
    assert isinstance(create(spec(oai_server)), OpenAICompatChat)
    emb = ModelSpec("e", "openai", kind="embed", params={"base_url": oai_server.base_url})
    assert isinstance(create_model(emb), OpenAICompatEmbed)
    assert isinstance(create_model(spec(oai_server)), OpenAICompatChat)
    with pytest.raises(ConfigError, match="not 'ocr'"):
        create(ModelSpec("o", "openai", kind="ocr"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"base_url": "http://127.0.0.1:1/v1", "timout": 3}, "unknown params timout"),
        ({"max_retries": "2"}, "params.max_retries must be int"),
        ({"timeout": 0}, "timeout > 0"),
    ],
)
def test_bad_params_are_config_errors(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenAICompatChat(ModelSpec("bad", "openai", params=params))


def test_loopback_addresses_are_local() -> None:
    assert is_loopback("http://127.0.0.1:8000/v1")
    assert is_loopback("http://127.1.2.3/v1")
    assert is_loopback("http://localhost:11434/v1")
    assert is_loopback("http://[::1]:8000/v1")
    assert not is_loopback("https://api.openai.com/v1")
    assert not is_loopback("http://10.0.0.5/v1")
    assert not is_loopback("http://localhost.example.com/v1")


def test_blocked_real_providers_refuse_remote_hosts_but_not_the_local_server(
    oai_server: OpenAIStubServer,
) -> None:
    remote = OpenAICompatChat(
        ModelSpec("gpt", "openai", params={"base_url": "https://api.example.invalid/v1"})
    )
    block_real_providers(True)
    try:
        err = failure(remote)
        assert "blocked" in str(err)
        assert "https://api.example.invalid/v1" in str(err)
        assert run(generate(chat_model(oai_server), ask("hi"))).text == "echo: hi"
    finally:
        block_real_providers(False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_model_serves_several_event_loops(oai_server: OpenAIStubServer) -> None:
    # Without aclose() in the first loop its pooled sockets are dropped, unclosed, when the
    # second loop needs a client (a ResourceWarning once collected: hence gc here, not later).
    model = chat_model(oai_server)
    assert run(model.generate(ask("one"))).text == "echo: one"
    assert run(model.generate(ask("two"))).text == "echo: two"
    run(model.aclose())
    gc.collect()


# --- through erpoz: a flow step, ctx.models, the run's log --------------------------------------
@erpoz.step
async def answer(question: str, ctx: erpoz.Context) -> str:
    result = await ctx.models.chat("gpt", question, max_tokens=50)
    return result.text


def answer_flow() -> erpoz.Flow:
    flow = erpoz.Flow("answer", inputs={"question": str})
    flow.output(flow.add(answer, question=flow.input("question")))
    return flow


def run_flow(server: OpenAIStubServer, question: str) -> tuple[erpoz.RunResult, list[Any]]:
    hub = ModelHub()
    model = OpenAICompatChat(spec(server, max_retries=0))
    hub.add(model, model.spec)

    async def main() -> tuple[erpoz.RunResult, list[Any]]:
        store = MemoryStore()
        try:
            result = await Engine(store, services={ModelHub: hub}).run(
                answer_flow(), {"question": question}
            )
            return result, await store.events(result.run_id)
        finally:
            await model.aclose()
            await store.close()

    result: tuple[erpoz.RunResult, list[Any]] = run(main())
    return result


def test_a_flow_step_calls_the_model_and_the_run_records_tokens_and_cost(
    oai_server: OpenAIStubServer,
) -> None:
    oai_server.script("chat", Behaviour.reply("42", usage=(1000, 200)))
    result, events = run_flow(oai_server, "the answer?")
    assert result.ok, result.error
    assert result.output == "42"
    (called,) = [e for e in events if e.kind == "model_called"]
    assert called.step == "answer"
    data = called.data
    assert data["status"] == "ok"
    assert data["model"] == "gpt"
    assert data["provider"] == "openai"
    assert (data["input_tokens"], data["output_tokens"]) == (1000, 200)
    assert data["cost_usd"] == pytest.approx((1000 * 2.0 + 200 * 10.0) / 1e6)
    assert data["latency_ms"] > 0
    assert oai_server.requests_to("chat")[0].body["max_tokens"] == 50


def test_a_failed_call_is_recorded_and_fails_the_step(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.error(401, "invalid api key"))
    result, events = run_flow(oai_server, "the answer?")
    assert result.status == "failed"
    assert result.failed_step == "answer"
    assert result.error is not None
    assert "ModelError: model 'gpt': HTTP 401" in result.error
    assert "invalid api key" in result.error
    (called,) = [e for e in events if e.kind == "model_called"]
    assert called.data["status"] == "error"
    assert called.data["http_status"] == 401
    assert called.data["retryable"] is False
    assert called.data["cost_usd"] == 0.0


def test_streaming_through_the_hub_is_metered(oai_server: OpenAIStubServer) -> None:
    oai_server.script("chat", Behaviour.reply("one two three", usage=(5, 3)))
    hub = ModelHub()
    model = OpenAICompatChat(spec(oai_server))
    hub.add(model, model.spec)

    async def main() -> list[Any]:
        try:
            return [c async for c in hub.unbound().stream("gpt", "count")]
        finally:
            await model.aclose()

    *pieces, last = run(main())
    assert "".join(c.text for c in pieces) == "one two three"
    assert last.result.cost_usd == pytest.approx((5 * 2.0 + 3 * 10.0) / 1e6)


# --- the stub server itself ---------------------------------------------------------------------
def test_the_stub_lists_models_and_answers_unknown_routes_with_404(
    oai_server: OpenAIStubServer,
) -> None:
    with httpx.Client(base_url=oai_server.base_url) as client:
        models = client.get("/models").json()
        missing = client.post("/completions", json={"prompt": "hi"})
    assert [m["id"] for m in models["data"]] == ["stub-model"]
    assert missing.status_code == 404
    assert [r.endpoint for r in oai_server.requests] == ["models", None]
    assert oai_server.requests[1].body == {"prompt": "hi"}


def test_the_stub_refuses_unknown_endpoint_names(oai_server: OpenAIStubServer) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        oai_server.script("completions", Behaviour.reply("x"))  # type: ignore[arg-type]


def test_a_shared_client_gets_the_headers_and_stays_open(oai_server: OpenAIStubServer) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as shared:
            model = OpenAICompatChat(spec(oai_server), client=shared)
            assert (await model.generate(ask("hi"))).text == "echo: hi"
            await model.aclose()
            assert not shared.is_closed
            assert (await model.generate(ask("again"))).text == "echo: again"

    run(main())
    assert {r.headers["authorization"] for r in oai_server.requests} == {"Bearer sk-test"}


def test_a_stopped_stub_answers_nothing_even_on_kept_alive_connections() -> None:
    async def main(server: OpenAIStubServer, model: OpenAICompatChat) -> ModelError:
        try:
            assert (await model.generate(ask("hi"))).text == "echo: hi"
            server.stop()
            with pytest.raises(ModelError) as info:
                await model.generate(ask("still there?"))
            return info.value
        finally:
            await model.aclose()

    with OpenAIStubServer() as server:
        model = OpenAICompatChat(spec(server, max_retries=1, backoff=0))
        err = run(main(server, model))
    assert err.retryable
    assert "could not reach" in str(err)


# --- the provider's own HTTP/1.1 client, against a raw socket server ---------------------------
COMPLETION = json.dumps(
    {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}
).encode()


class RawServer:
    """A TCP server on 127.0.0.1 (asyncio, in a thread) that answers each request with the next
    scripted bytes; ``close`` after an answer closes that connection. It records each request's
    head and counts connections."""

    def __init__(self, *answers: bytes | tuple[bytes, str]) -> None:
        self.answers = list(answers)
        self.heads: list[bytes] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = re.search(rb"content-length: *(\d+)", head, re.I)
                await reader.readexactly(int(length.group(1)) if length else 0)
                answer = self.answers.pop(0)
                action = ""
                if isinstance(answer, tuple):
                    answer, action = answer
                if action == "stall":
                    writer.write(answer)
                    await asyncio.sleep(5)
                    return
                writer.write(answer)
                await writer.drain()
                if action == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> "RawServer":
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def raw_model(server: RawServer, **params: Any) -> OpenAICompatChat:
    base = {"base_url": server.base_url, "timeout": 2.0, "max_retries": 0, "api_key": ""}
    return OpenAICompatChat(ModelSpec("raw", "openai", params={**base, **params}))


def _chunked(body: bytes, pieces: int = 3) -> bytes:
    size = -(-len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    return chunks + b"0\r\nX-Trailer: yes\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
        % (len(COMPLETION), COMPLETION),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(COMPLETION),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(COMPLETION)), gzip.compress(COMPLETION)),
        (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + COMPLETION, "close"),
    ],
    ids=["content-length", "interim-100", "chunked", "gzip", "until-close"],
)
def test_every_framing_of_an_answer_is_read(answer: bytes | tuple[bytes, str]) -> None:
    with RawServer(answer, answer) as server:
        model = raw_model(server)
        assert run(generate(model, ask())).text == "ok"
        assert run(generate(model, ask())).text == "ok"
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "Content-Type: application/json\r\n" in head


def test_a_kept_alive_connection_is_reused_and_one_the_server_closed_is_not() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION)
    with RawServer(ok, ok, ok, (ok, "close"), ok, ok) as server:
        model = raw_model(server)  # max_retries=0: a stale connection must not fail a call

        async def calls() -> list[str]:
            texts = []
            for _ in range(6):
                texts.append((await model.generate(ask())).text)
                await asyncio.sleep(0.05)  # the server's close reaches the client meanwhile
            await model.aclose()
            return texts

        assert run(calls()) == ["ok"] * 6
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{", "before the answer was complete"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "response head over"),
    ],
)
def test_a_broken_answer_is_a_retryable_error_that_says_what_broke(
    answer: bytes, said: str
) -> None:
    with RawServer((answer, "close")) as server:
        err = failure(raw_model(server))
    assert err.retryable
    assert said in str(err)
    assert isinstance(err.__cause__, ConnectionError)


def test_a_stream_that_stalls_times_out() -> None:
    first = b'data: {"choices": [{"delta": {"content": "he"}}]}\n\n'
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with RawServer((head + b"%x\r\n%s\r\n" % (len(first), first), "stall")) as server:
        model = raw_model(server, timeout=0.2)
        with pytest.raises(ModelError, match="timed out while streaming") as info:
            run(collect(model, ask()))
    assert info.value.retryable


def test_a_proxy_named_by_the_environment_is_used_and_no_proxy_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION)
    # the remote host is reached only through the local proxy: this test opts in
    monkeypatch.delenv("ERPOZ_BLOCK_REAL_MODELS", raising=False)
    with RawServer(ok) as proxy, RawServer(ok) as direct:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "localhost")
        remote = OpenAICompatChat(
            ModelSpec("p", "openai", params={"base_url": "http://api.example.test/v1"})
        )
        assert run(generate(remote, ask())).text == "ok"
        assert proxy.heads[0].startswith(b"POST http://api.example.test/v1/chat/completions")
        model = OpenAICompatChat(
            ModelSpec("d", "openai", params={"base_url": f"http://localhost:{direct.port}/v1"})
        )
        assert run(generate(model, ask())).text == "ok"
        assert direct.heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1")


def test_the_lean_stub_answers_chat_streams_embeddings_and_models() -> None:
    from erpoz.models.stub_server import serve_lean

    loop = asyncio.new_event_loop()
    started: list[str] = []
    ready = threading.Event()

    def serve() -> None:
        task = loop.create_task(serve_lean(started=lambda url: (started.append(url), ready.set())))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    url = started[0]
    try:
        params = {"base_url": url, "max_retries": 0, "api_key": ""}
        chat = OpenAICompatChat(ModelSpec("c", "openai", params=params))
        emb = OpenAICompatEmbed(ModelSpec("e", "openai", kind="embed", params=params))

        async def main() -> tuple[Any, list[Any], Any]:
            try:
                one = await chat.generate(ask("hello lean"))
                chunks = [c async for c in chat.stream(ask("hello lean"))]
                return one, chunks, await emb.embed(["a", "b"])
            finally:
                await chat.aclose()
                await emb.aclose()

        one, chunks, vectors = run(main())
        assert one.text == "echo: hello lean"
        assert one.usage.input_tokens == 2
        assert "".join(c.text for c in chunks[:-1]) == "echo: hello lean"
        assert chunks[-1].result.text == "echo: hello lean"
        assert len(vectors.vectors) == 2 and len(vectors.vectors[0]) == 8
        with httpx.Client(base_url=url) as client:
            assert client.get("/models").json()["data"][0]["id"] == "stub-model"
            assert client.post("/completions", json={}).status_code == 404
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(5)
        loop.close()
