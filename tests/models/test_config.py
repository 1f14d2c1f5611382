"""The project file: parsed with every error at its file and line; built into a hub of
metered models and routers (in dependency order); the offline default without a file."""

import asyncio
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from erpoz.errors import ConfigError, ModelError
from erpoz.models import (
    ChatRequest,
    ChatResult,
    EmbedResult,
    Metered,
    ModelHub,
    ModelSpec,
    Usage,
    load_config,
    parse_config,
)
from erpoz.project import build_hub, load_hub
from erpoz.routing import CascadeRouter, CheapestCapableRouter, FallbackRouter, LoadBalanceRouter
from erpoz.testing import FunctionModel

made: list[str] = []


def fake(spec: ModelSpec) -> FunctionModel:
    """A provider for tests: answers ``<name>: <prompt>``; ``params.fail`` makes it fail."""
    made.append(spec.name)

    def answer(req: ChatRequest) -> str | ChatResult:
        if spec.params.get("fail"):
            raise ModelError("down", model=spec.name, retryable=True)
        return ChatResult(f"{spec.name}: {req.prompt_text}", spec.name, Usage(10, 5))

    return FunctionModel(answer, name=spec.name)


WORDS = ("refund", "invoice", "charged", "hours", "open")


class BagOfWords:
    """An embedding provider for tests: counts a few words."""

    def __init__(self, spec: ModelSpec) -> None:
        self.name = spec.name

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        vectors = tuple((*(float(t.lower().count(w)) for w in WORDS), 0.1) for t in texts)
        return EmbedResult(vectors, self.name)


PROVIDERS = {"fake": fake, "bow": BagOfWords}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made.clear()
    monkeypatch.delenv("ERPOZ_CONFIG", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "erpoz.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


def parse(text: str) -> Any:
    return parse_config(textwrap.dedent(text).lstrip("\n"), extra_providers=PROVIDERS)


def chat(hub: ModelHub, name: str, prompt: str = "hi") -> ChatResult:
    return asyncio.run(hub.unbound().chat(name, prompt))


FULL = """
models:
  small:
    provider: fake
    params: {model: small-v1, api_key: "Bearer ${ENV:ERPOZ_TEST_KEY}"}
    price: {input: 0.5, output: 1.5}
    context_window: 4096
    tags: [cheap]
  big:
    provider: fake
    price: {input: 5, output: 15}
    context_window: 128000
    modalities: [text, image]
    tags: [json]
  vec: {provider: fake, kind: embed}
routers:
  default:                      # uses a router defined below it
    type: fallback
    models: [pick, big]
    cooldown_s: 5
  pick: {type: cheapest, models: [big, small]}
  spread:
    type: balance
    models: [small, big]
    weights: {small: 3}
    strategy: weighted
    seed: 1
budget: {per_run_usd: 0.5, per_project_usd: 10}
"""


def test_a_full_file_is_parsed_into_specs_routers_and_a_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ERPOZ_TEST_KEY", "s3cret")
    cfg = parse(FULL)
    assert list(cfg.models) == ["small", "big", "vec"]
    small = cfg.spec("small")
    assert small == ModelSpec(
        "small",
        "fake",
        "chat",
        {"model": "small-v1", "api_key": "Bearer s3cret"},
        0.5,
        1.5,
        4096,
        frozenset({"text"}),
        frozenset({"cheap"}),
    )
    assert cfg.spec("big").modalities == {"text", "image"}
    assert cfg.spec("vec").kind == "embed"
    assert cfg.routers["pick"].type == "cheapest"
    assert cfg.router_order() == ["pick", "default", "spread"]
    assert cfg.budget is not None and cfg.budget.per_run_usd == 0.5
    assert cfg.line("routers", "pick", key=True) == 20


def test_a_missing_secret_is_an_error_at_its_line_when_the_hub_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ERPOZ_TEST_KEY", raising=False)
    cfg = parse(FULL)  # reading the file does not need the secret
    with pytest.raises(ConfigError) as info:
        build_hub(cfg, extra_providers=PROVIDERS)
    assert info.value.line == 4
    assert "environment variable ERPOZ_TEST_KEY is not set (used in params.api_key)" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "models: {}\nfoo: 1\n",
            2,
            "unknown key 'foo' (expected: audit, budget, executor, guards, mcp, models, policy, "
            "reviewer, routers, schedules, tools)",
        ),
        (
            "models:\n  a:\n    provider: fake\n    prise: 3\n",
            4,
            "unknown key 'prise' in models.a (expected: context_window, kind, limits, modalities, "
            "params, price,",
        ),
        ("models:\n  a:\n    kind: chat\n", 2, "models.a has no 'provider'"),
        (
            "models:\n  a:\n    provider: fake\n    context_window: 8k\n",
            4,
            "models.a: 'context_window' must be a whole number > 0, got '8k'",
        ),
        (
            "models:\n  a:\n    provider: fake\n    price: {input: -1}\n",
            4,
            "models.a.price: 'input' must be a number >= 0, got -1",
        ),
        (
            "models:\n  a:\n    provider: fake\n    kind: video\n",
            4,
            "models.a: kind 'video': expected one of chat, embed, ocr, classify",
        ),
        (
            "models:\n  a: {provider: fake, modalities: [text, audio]}\n",
            2,
            "models.a: modalities[1] 'audio': expected one of text, image",
        ),
        (
            "models:\n  a:\n    provider: nope\n",
            3,
            "model 'a': unknown provider 'nope' (installed providers: ",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r:\n    type: fallback\n"
            "    models:\n      - a\n      - zz\n",
            8,
            "router 'r': unknown model 'zz' (models and routers: a, r)",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r:\n    type: fancy\n    models: [a]\n",
            5,
            "routers.r: unknown router type 'fancy' (expected: fallback, cheapest, cascade,",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r:\n    models: [a]\n",
            4,
            "routers.r: missing 'type'",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r:\n    type: fallback\n"
            "    models: [a]\n    cooldown: 3\n",
            7,
            "unknown key 'cooldown' in routers.r (expected: cooldown_s, models, type)",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r: {type: cheapest, models: []}\n",
            4,
            "routers.r: 'models' must have at least 1 item(s)",
        ),
        ("models:\n  a: {provider: fake}\n  a: {provider: fake}\n", 3, "duplicate key 'a'"),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  a: {type: fallback, models: [a]}\n",
            4,
            "router 'a': the name is already a model's (line 2)",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r: {type: fallback, models: [s]}\n"
            "  s: {type: fallback, models: [r, a]}\n",
            4,
            "routers refer to each other in a circle: r -> s -> r",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r: {type: fallback, models: [a, a]}\n",
            4,
            "router 'r': 'a' is listed twice",
        ),
        (
            "models:\n  e: {provider: fake, kind: embed}\nrouters:\n"
            "  r: {type: fallback, models: [e]}\n",
            4,
            "router 'r': 'e' is a model of kind embed; routers send chat requests",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  r:\n    type: balance\n"
            "    models: [a]\n    weights: {b: 2}\n",
            7,
            "router 'r': weight for 'b', which is not among its models",
        ),
        (
            "models:\n  a: {provider: fake}\nrouters:\n  t:\n    type: semantic\n"
            "    embed: a\n    routes: {x: {model: a, examples: [hi]}}\n",
            6,
            "router 't': embed 'a' is a chat model; name a model of kind embed",
        ),
        (
            "models:\n  a: {provider: fake}\n  e: {provider: bow, kind: embed}\nrouters:\n"
            "  t:\n    type: semantic\n    embed: e\n    routes:\n      x: {model: a}\n",
            9,
            "routers.t.routes.x has no 'examples'",
        ),
        (
            "models:\n  a: {provider: fake}\n  e: {provider: bow, kind: embed}\nrouters:\n"
            "  t:\n    type: semantic\n    embed: e\n    routes: {x: {model: a, examples: [hi]}}"
            "\n    default: y\n",
            9,
            "router 't': unknown model 'y' (models and routers: a, e, t)",
        ),
        ("models:\n  a: [\n", 3, "malformed YAML"),
        ("- a\n", 1, "a project file is a mapping with 'models', 'routers' and 'budget'"),
        ("models:\n  - a\n", 2, "'models' must be a mapping"),
        ("models:\n  my model: {provider: fake}\n", 2, "model name 'my model': a name is not"),
        (
            "budget: {per_run_usd: lots}\n",
            1,
            "budget: 'per_run_usd' must be a number >= 0, got 'lots'",
        ),
    ],
)
def test_every_error_names_the_file_the_line_and_what_was_expected(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text, "proj.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path, extra_providers=PROVIDERS)
    err = info.value
    assert (err.file, err.line) == (str(path), line), str(err)
    assert message in err.message, str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_build_hub_makes_metered_models_and_routers_in_dependency_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ERPOZ_TEST_KEY", "k")
    hub = build_hub(parse(FULL), extra_providers=PROVIDERS)
    assert hub.names() == ["small", "big", "vec", "pick", "default", "spread"]
    assert made == []  # nothing is made until it is used
    assert isinstance(hub.get("small"), Metered)
    assert isinstance(hub.get("pick"), CheapestCapableRouter)
    default = hub.get("default")
    assert isinstance(default, FallbackRouter) and default.cooldown_s == 5
    assert [m.name for m in default.models] == ["pick", "big"]
    spread = hub.get("spread")
    assert isinstance(spread, LoadBalanceRouter) and spread.weights == (3.0, 1.0)
    assert hub.budget is not None and hub.budget.per_project_usd == 10

    result = chat(hub, "default", "hello")
    assert result.text == "small: hello" and result.route == ("default", "pick")
    assert made == ["small"]
    assert hub.specs["big"].price_in == 5


def test_a_cascade_takes_validators_by_import_path_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text(
        "def long_enough(request, result):\n    return len(result.text) > 12\n"
    )
    path = write(
        tmp_path,
        """
        models:
          a: {provider: fake}
          bbbbbbbb: {provider: fake}
        routers:
          checked:
            type: cascade
            models: [a, bbbbbbbb]
            validators: ["checks:long_enough"]
            threshold: 0.7
        """,
    )
    hub = load_hub(path, extra_providers=PROVIDERS)
    router = hub.get("checked")
    assert isinstance(router, CascadeRouter) and router.threshold == 0.7
    assert chat(hub, "checked", "hi").text == "bbbbbbbb: hi"


def test_a_validator_that_cannot_be_imported_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        models:
          a: {provider: fake}
        routers:
          checked:
            type: cascade
            models: [a]
            validators:
              - nowhere_at_all:check
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_hub(path, extra_providers=PROVIDERS)
    assert info.value.line == 8 and "cannot import module 'nowhere_at_all'" in str(info.value)


def test_a_semantic_router_without_its_module_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "erpoz.routing.semantic", None)  # import fails
    path = write(
        tmp_path,
        """
        models:
          a: {provider: fake}
          vec: {provider: fake, kind: embed}
        routers:
          topics:
            type: semantic
            embed: vec
            routes:
              billing: {model: a, examples: [refund my invoice]}
        """,
    )
    cfg = load_config(path, extra_providers=PROVIDERS)
    assert cfg.routers["topics"].members == ["a"]
    with pytest.raises(ConfigError) as info:
        build_hub(cfg, extra_providers=PROVIDERS)
    assert info.value.line == 6  # its type
    assert "type 'semantic' needs erpoz.routing.semantic" in str(info.value)


def test_a_semantic_router_is_built_from_its_routes(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    path = write(
        tmp_path,
        """
        models:
          billing-model: {provider: fake}
          general: {provider: fake}
          vec: {provider: bow, kind: embed}
        routers:
          topics:
            type: semantic
            embed: vec
            routes:
              billing:
                model: billing-model
                examples: [refund my invoice, I was charged twice]
              hours: {model: general, examples: [when are you open]}
            default: general
            min_score: 0.5
        """,
    )
    hub = load_hub(path, extra_providers=PROVIDERS)
    assert chat(hub, "topics", "please refund invoice 7").text.startswith("billing-model:")
    assert chat(hub, "topics", "is it sunny?").text.startswith("general:")


def test_a_model_its_provider_cannot_make_is_a_model_error_and_fallback_moves_on(
    tmp_path: Path,
) -> None:
    def broken(spec: ModelSpec) -> Any:
        raise RuntimeError("weights missing")

    path = write(
        tmp_path,
        """
        models:
          local: {provider: broken}
          wrong: {provider: embedder}
          remote: {provider: fake}
        routers:
          default: {type: fallback, models: [local, wrong, remote]}
        """,
    )
    providers = {**PROVIDERS, "broken": broken, "embedder": lambda spec: object()}
    hub = load_hub(path, extra_providers=providers)
    with pytest.raises(ModelError, match="provider 'broken' could not make it: RuntimeError"):
        chat(hub, "local")
    with pytest.raises(ModelError, match="provider 'embedder' made a object, not a chat model"):
        chat(hub, "wrong")
    assert chat(hub, "default").text == "remote: hi"
    with pytest.raises(ModelError, match="could not make it"):
        build_hub(
            load_config(path, extra_providers=providers), extra_providers=providers, lazy=False
        )


def test_without_a_project_file_the_offline_default_is_used_and_nothing_loads() -> None:
    cfg = load_config()
    assert cfg.file is None
    assert {n: m.provider for n, m in cfg.models.items()} == {
        "reader": "extractive",
        "minilm": "minilm",
        "ocr": "rapidocr",
    }
    assert cfg.models["minilm"].kind == "embed"
    assert cfg.models["ocr"].kind == "ocr"
    assert cfg.routers["default"].members == ["reader"]
    hub = load_hub()
    assert hub.names() == ["reader", "minilm", "ocr", "default"]
    reader = hub.get("reader")
    assert isinstance(reader, Metered)
    inner: Any = reader.inner
    minilm: Any = hub.get("minilm")
    assert inner.loaded is False and minilm.loaded is False


def test_with_openai_base_url_the_default_falls_back_from_openai_to_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    cfg = load_config()
    assert cfg.models["openai"].provider == "openai"
    assert cfg.routers["default"].members == ["openai", "reader"]
    assert load_hub().names() == ["reader", "minilm", "ocr", "openai", "default"]


def test_erpoz_config_points_to_the_file_and_a_named_file_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "models:\n  here: {provider: fake}\n")  # ./erpoz.yaml
    assert list(load_config(extra_providers=PROVIDERS).models) == ["here"]
    other = write(tmp_path, "models:\n  there: {provider: fake}\n", "other.yaml")
    monkeypatch.setenv("ERPOZ_CONFIG", str(other))
    cfg = load_config(extra_providers=PROVIDERS)
    assert list(cfg.models) == ["there"] and cfg.file == str(other)
    monkeypatch.setenv("ERPOZ_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(
        ConfigError, match=r"no project file at .*gone.yaml \(from \$ERPOZ_CONFIG\)"
    ):
        load_config()
    with pytest.raises(ConfigError, match=r"no project file at missing\.yaml"):
        load_config("missing.yaml")


def test_an_empty_file_has_no_models(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "# nothing yet\n"))
    assert cfg.models == {} and cfg.routers == {} and cfg.budget is None


def test_a_typo_in_a_builtin_providers_params_is_a_config_error_with_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "erpoz.yaml"
    path.write_text(
        "models:\n"
        "  gpt:\n"
        "    provider: openai\n"
        "    params: {modle: gpt-4o, base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    with pytest.raises(ConfigError, match="unknown params modle") as err:
        load_hub(path)
    assert err.value.file == str(path) and err.value.line == 2


def test_the_executor_setting_chooses_where_steps_run(tmp_path: Path) -> None:
    from erpoz.engine import RayExecutor
    from erpoz.project import project_executor

    assert parse_config("executor: ray\n").executor == "ray"
    with pytest.raises(
        ConfigError, match=r"erpoz.yaml:2: executor: kind 'spark': expected one of local, ray"
    ):
        parse_config("models: {}\nexecutor: {kind: spark}\n")
    with pytest.raises(ConfigError, match="unknown key 'cpus' in executor"):
        parse_config("executor: {kind: ray, cpus: 2}\n")
    project = tmp_path / "erpoz.yaml"
    project.write_text("executor: {kind: ray, address: 'ray://head:10001', num_cpus: 4}\n")
    chosen = project_executor(project)
    assert isinstance(chosen, RayExecutor)
    assert (chosen.address, chosen.num_cpus) == ("ray://head:10001", 4)  # not started yet
    assert project_executor(project, kind="local") is None  # the command line wins
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        project_executor(project, kind="local", address="ray://other:1")
