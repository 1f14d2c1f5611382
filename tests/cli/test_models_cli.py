"""``erpoz models ls|ping`` and ``erpoz stats models``, driven in-process through Typer.

Providers come in through the real plug-in mechanism: a throw-away distribution on
``sys.path`` whose entry points (group ``erpoz.providers``) name a test provider.
"""

import asyncio
import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from erpoz import Context, Engine, Flow, step
from erpoz.cli.models import models_app, stats_app
from erpoz.errors import ModelError
from erpoz.models import ChatResult, ModelHub, ModelSpec, Usage, providers
from erpoz.observe.stats import model_stats, parse_since
from erpoz.routing import FallbackRouter
from erpoz.store import SQLiteStore
from erpoz.testing import FunctionModel, ScriptedModel

app = typer.Typer()
app.add_typer(models_app, name="models")
app.add_typer(stats_app, name="stats")

PROVIDER = """
from erpoz.errors import ModelError
from erpoz.models import ChatResult, Usage
from erpoz.testing import FunctionModel


def create(spec):
    def answer(request):
        if spec.params.get("down"):
            raise ModelError("upstream 503", model=spec.name, retryable=True, status=503)
        return ChatResult("pong", spec.params.get("model", spec.name), Usage(7, 1))

    return FunctionModel(answer, name=spec.name)
"""


@pytest.fixture(autouse=True)
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install providers ``testecho`` and ``bomb`` (whose module explodes on import)."""
    site = tmp_path / "site"
    dist = site / "erpoz_test_providers-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: erpoz-test-providers\n")
    (dist / "entry_points.txt").write_text(
        "[erpoz.providers]\ntestecho = erpoz_test_echo:create\nbomb = erpoz_test_bomb:create\n"
    )
    (site / "erpoz_test_echo.py").write_text(PROVIDER)
    (site / "erpoz_test_bomb.py").write_text("raise RuntimeError('a provider was loaded')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(tmp_path)
    for var in ("ERPOZ_CONFIG", "OPENAI_BASE_URL", "ERPOZ_STORE"):
        monkeypatch.delenv(var, raising=False)
    providers.cache_clear()
    yield
    providers.cache_clear()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "erpoz.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """
models:
  echo:
    provider: testecho
    params: {model: echo-1}
    price: {input: 1, output: 2}
    context_window: 16000
    modalities: [text, image]
    tags: [json]
  flaky: {provider: testecho, params: {down: true}}
  heavy: {provider: bomb, kind: embed}
routers:
  default: {type: fallback, models: [flaky, echo]}
budget: {per_run_usd: 1}
"""


def test_models_ls_json_lists_models_and_routers_without_loading_any(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    res = invoke("models", "ls", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["file"] == "erpoz.yaml"
    assert data["models"][0] == {
        "name": "echo",
        "kind": "chat",
        "provider": "testecho",
        "price_in": 1.0,
        "price_out": 2.0,
        "context_window": 16000,
        "modalities": ["text", "image"],
        "tags": ["json"],
    }
    assert [m["name"] for m in data["models"]] == ["echo", "flaky", "heavy"]
    assert data["routers"] == [
        {"name": "default", "type": "fallback", "members": ["flaky", "echo"]}
    ]
    assert data["budget"] == {
        "per_run_usd": 1.0,
        "per_project_usd": None,
        "per_tenant_usd": None,
        "tenants": {},
    }


def test_models_ls_prints_tables(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    res = invoke("models", "ls")
    assert res.exit_code == 0, res.output
    for text in ("models from erpoz.yaml", "echo", "testecho", "16,000", "text, image", "json"):
        assert text in res.stdout
    assert "default" in res.stdout and "flaky, echo" in res.stdout
    assert "budget: per run $1.0" in res.stdout


def test_models_ls_without_a_project_file_shows_the_offline_default() -> None:
    res = invoke("models", "ls", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["file"] is None
    assert [m["name"] for m in data["models"]] == ["reader", "minilm", "ocr"]


def test_a_broken_project_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    write_config(tmp_path, "models:\n  a:\n    provider: testecho\n    colour: red\n")
    res = invoke("models", "ls")
    assert res.exit_code == 2
    assert "erpoz.yaml:4: unknown key 'colour' in models.a" in " ".join(res.output.split())


def test_models_ping_reports_latency_tokens_and_reply(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    res = invoke("models", "ping", "echo")
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    assert "ok echo in" in out and " ms" in out
    assert "answered by echo-1 · 7 in / 1 out tokens" in out and "reply: pong" in out


def test_models_ping_through_a_router_shows_the_route_and_the_failures(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    res = invoke("models", "ping", "default", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] is True and data["reply"] == "pong" and data["route"] == ["default"]
    assert data["input_tokens"] == 7 and data["output_tokens"] == 1 and data["latency_ms"] >= 0
    kinds = [(e["kind"], e["data"].get("model") or e["data"]["winner"]) for e in data["events"]]
    assert kinds == [("model_called", "flaky"), ("model_called", "echo"), ("route_decided", "echo")]
    text = invoke("models", "ping", "default")
    assert "flaky failed: ModelError" in text.stdout and "echo answered" in text.stdout


def test_models_ping_of_an_unreachable_endpoint_exits_1_with_the_error(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        f"""
        models:
          local:
            provider: openai
            params:
              base_url: http://127.0.0.1:{closed_port()}/v1
              api_key: ""
              max_retries: 0
              timeout: 2
        """,
    )
    res = invoke("models", "ping", "local", "--timeout", "10")
    assert res.exit_code == 1, res.output
    msg = " ".join(res.output.split())
    assert msg.startswith("error: model 'local':"), msg
    res = invoke("models", "ping", "local", "--json")
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["error"].startswith("model 'local':")


def test_models_ping_of_an_unknown_name_exits_2(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    res = invoke("models", "ping", "nope")
    assert res.exit_code == 2
    assert "unknown model 'nope' (models and routers: echo, flaky, heavy, default)" in " ".join(
        res.output.split()
    )


# --- stats ----------------------------------------------------------------------------------
@step
async def ask(q: str, ctx: Context) -> str:
    try:
        return (await ctx.models.chat("default", q)).text
    except ModelError:
        return "gave up"


def test_stats_models_summarises_the_recorded_calls(tmp_path: Path) -> None:
    hub = ModelHub()
    flaky = hub.add(
        ScriptedModel([ModelError("503", retryable=True), "f1", "f2"], name="flaky"),
        ModelSpec("flaky", "test", price_in=1.0, price_out=1.0),
    )
    steady = hub.add(
        FunctionModel(lambda r: ChatResult("s", "steady", Usage(100, 10))),
        ModelSpec("steady", "test", price_in=2.0, price_out=4.0),
    )
    hub.add(FallbackRouter("default", [flaky, steady], cooldown_s=0))  # type: ignore[list-item]
    flow = Flow("stats", inputs={"q": str})
    flow.output(flow.add(ask, q=flow.input("q")))
    db = tmp_path / "runs.db"

    async def main() -> None:
        store = SQLiteStore(db)
        engine = Engine(store, services={ModelHub: hub})
        for q in ("one", "two", "three"):
            assert (await engine.run(flow, {"q": q})).ok
        await store.close()

    asyncio.run(main())
    res = invoke("stats", "models", "--store", str(db), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["runs"] == 3
    rows = {r["model"]: r for r in data["models"]}
    assert rows["flaky"]["calls"] == 3 and rows["flaky"]["errors"] == 1
    assert rows["flaky"]["error_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert rows["steady"]["calls"] == 1 and rows["steady"]["input_tokens"] == 100
    assert rows["steady"]["cost_usd"] == pytest.approx((100 * 2 + 10 * 4) / 1e6)
    assert rows["steady"]["p50_ms"] is not None and rows["steady"]["p95_ms"] is not None
    assert data["models"][0]["model"] == "steady"  # costliest first

    recent = json.loads(
        invoke("stats", "models", "--store", str(db), "--since", "1h", "--json").stdout
    )
    assert recent["runs"] == 3 and recent["since"] == "1h"
    text = invoke("stats", "models", "--store", str(db))
    assert "4 model calls in all runs (3 runs)" in text.stdout and "steady" in text.stdout


def test_stats_since_must_be_a_span() -> None:
    res = invoke("stats", "models", "--store", "memory", "--since", "yesterday")
    assert res.exit_code == 2 and "write a span like 30m, 24h or 7d" in res.output
    assert (
        parse_since("90s") == 90 and parse_since("24h") == 86400 and parse_since("1.5d") == 129600
    )


def test_model_stats_percentiles_and_errors() -> None:
    events = [{"model": "m", "status": "ok", "latency_ms": float(i)} for i in range(1, 101)]
    events.append({"model": "m", "status": "error", "latency_ms": 9999.0})
    (row,) = model_stats(events)
    assert row["calls"] == 101 and row["errors"] == 1
    assert row["p50_ms"] == 50.0 and row["p95_ms"] == 95.0  # failures leave latency alone
