"""Per-model rate limits as steps meet them: a limited model is skipped by a fallback router
(which records why: ``rate_limited``) or waited for; limits in the store hold across engines;
``limits:`` in erpoz.yaml is checked with file and line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from erpoz import Context, Engine, Flow, step
from erpoz.errors import ConfigError
from erpoz.models import ModelHub, ModelSpec, RateLimit
from erpoz.models._config import parse_config
from erpoz.routing import FallbackRouter
from erpoz.store import Event, SQLiteStore
from erpoz.testing import FunctionModel


@step
async def ask(q: str, ctx: Context) -> dict[str, Any]:
    r = await ctx.models.chat("router", q)
    return {"text": r.text, "model": r.model}


def hub_with(limit: RateLimit) -> ModelHub:
    hub = ModelHub()
    a = hub.add(FunctionModel(lambda r: "from a", name="a"), ModelSpec("a", "test", limits=limit))
    b = hub.add(FunctionModel(lambda r: "from b", name="b"), ModelSpec("b", "test"))
    hub.add(FallbackRouter("router", [a, b]))  # type: ignore[list-item]
    return hub


def run_many(store: SQLiteStore, hub: ModelHub, n: int) -> list[tuple[Any, list[Event]]]:
    flow = Flow("routed", inputs={"q": str})
    flow.output(flow.add(ask, q=flow.input("q")))

    async def main() -> list[tuple[Any, list[Event]]]:
        hub.rates.book = store  # what erpoz run / worker / serve do
        out = []
        for _ in range(n):
            result = await Engine(store, services={ModelHub: hub}).run(flow, {"q": "hi"})
            out.append((result, await store.events(result.run_id)))
        return out

    return asyncio.run(main())


def test_a_limited_model_is_skipped_and_the_router_records_why(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    runs = run_many(store, hub_with(RateLimit(requests=2)), 3)
    assert [r.output["model"] for r, _ in runs] == ["a", "a", "b"]
    _, events = runs[2]
    (decision,) = [e.data for e in events if e.kind == "route_decided"]
    a = next(c for c in decision["candidates"] if c["model"] == "a")
    assert a["status"] == "rate_limited" and "2 requests per 60 s reached" in a["error"]
    refused = [e.data for e in events if e.kind == "model_called" and e.data["model"] == "a"]
    assert refused[0]["status"] == "refused" and "rate limited" in refused[0]["error"]
    # the limit is the store's: another hub (another process) sharing it is limited too
    again = run_many(store, hub_with(RateLimit(requests=2)), 1)
    assert again[0][0].output["text"] == "from b"


def test_a_limited_model_can_be_waited_for(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    runs = run_many(store, hub_with(RateLimit(requests=1, per_s=0.3, on_limit="wait")), 2)
    assert [r.output["text"] for r, _ in runs] == ["from a", "from a"]
    _, events = runs[1]
    (called,) = [e.data for e in events if e.kind == "model_called"]
    assert called["status"] == "ok" and 0 < called["rate_wait_s"] <= 0.31


def test_a_call_bigger_than_the_token_limit_is_refused_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    runs = run_many(store, hub_with(RateLimit(tokens=100, on_limit="wait")), 1)
    assert runs[0][0].output["text"] == "from b"  # 256 output tokens assumed > 100 a minute
    (decision,) = [e.data for e in runs[0][1] if e.kind == "route_decided"]
    a = next(c for c in decision["candidates"] if c["model"] == "a")
    assert a["status"] == "rate_limited" and "more than 100 per 60 s" in a["error"]


def test_limits_in_the_project_file() -> None:
    cfg = parse_config(
        "models:\n  m:\n    provider: extractive\n"
        "    limits: {requests: 5, tokens: 1000, per_s: 1, on_limit: wait}\n"
    )
    assert cfg.spec("m").limits == RateLimit(5, 1000, 1.0, "wait", 60.0)
    for bad, line, words in (
        ("{requests: 0}", 4, "'requests' must be a whole number > 0, got 0"),
        ("{requests: 1, on_limit: sometimes}", 4, "on_limit"),
        ("{rpm: 1}", 4, "rpm"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(f"models:\n  m:\n    provider: extractive\n    limits: {bad}\n")
        assert info.value.line == line and words in str(info.value), str(info.value)


def test_without_a_store_the_limit_holds_in_the_process() -> None:
    hub = hub_with(RateLimit(requests=1))

    async def main() -> list[str]:
        router = hub.get("router")
        from erpoz.models import ChatRequest, Message

        return [
            (await router.generate(ChatRequest((Message.user("hi"),)))).text  # type: ignore[union-attr]
            for _ in range(2)
        ]

    assert asyncio.run(main()) == ["from a", "from b"]


DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_the_docs_example_prints_what_the_page_shows_and_its_yaml_parses() -> None:
    import contextlib
    import io
    import re

    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(blocks[index][1], str(DOC), "exec", dont_inherit=True), {"__name__": "doc"})
    assert blocks[index + 1][0] == "text"
    assert printed.getvalue().strip() == blocks[index + 1][1].strip()
    yaml = next(body for lang, body in blocks if lang == "yaml")
    limits = parse_config(yaml, file="erpoz.yaml").spec("gpt-mini").limits
    assert limits == RateLimit(500, 200_000, 60.0, "skip", 60.0)


def test_models_that_share_a_limit_count_against_it_together(tmp_path: Path) -> None:
    account = RateLimit(requests=2, shared="openai-org")
    hub = ModelHub()
    a = hub.add(FunctionModel(lambda r: "from a", name="a"), ModelSpec("a", "t", limits=account))
    b = hub.add(FunctionModel(lambda r: "from b", name="b"), ModelSpec("b", "t", limits=account))
    c = hub.add(FunctionModel(lambda r: "from c", name="c"), ModelSpec("c", "t"))
    hub.add(FallbackRouter("router", [a, b, c]))  # type: ignore[list-item]
    store = SQLiteStore(tmp_path / "s.db")
    runs = run_many(store, hub, 3)
    assert [r.output["model"] for r, _ in runs] == ["a", "a", "c"]  # b shares a's account
    (decision,) = [e.data for e in runs[2][1] if e.kind == "route_decided"]
    statuses = {c["model"]: c["status"] for c in decision["candidates"]}
    assert statuses == {"a": "rate_limited", "b": "rate_limited", "c": "answered"}
    b_row = next(c for c in decision["candidates"] if c["model"] == "b")
    assert "(shared: openai-org)" in b_row["error"]
    cfg = parse_config(
        "models:\n  m:\n    provider: extractive\n    limits: {requests: 5, shared: acme}\n"
    )
    assert cfg.spec("m").limits == RateLimit(5, None, 60.0, "skip", 60.0, "acme")
