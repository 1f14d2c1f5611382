"""The project file, ``erpoz.yaml``: the models a project may call, the routers over them and
its budget, by name. Flows refer to these names (``ctx.models.chat("default", ...)``).

```yaml
models:
  gpt-mini:
    provider: openai                  # an installed provider (entry point "erpoz.providers")
    kind: chat                        # chat (default) | embed | ocr | classify
    params:                           # handed to the provider as they are, except that
      model: gpt-4o-mini              # ${ENV:NAME} is replaced by that environment variable
      api_key: ${ENV:OPENAI_API_KEY}
    price: {input: 0.15, output: 0.60}  # USD per million tokens (default 0)
    context_window: 128000            # tokens (default 8192)
    modalities: [text, image]         # input it takes (default [text])
    tags: [json, tools]               # what it is good at; requests may require tags
  reader: {provider: extractive, context_window: 32768}
  minilm: {provider: minilm, kind: embed}

routers:                              # each is a chat model too; members are models or routers
  default:
    type: fallback                    # in order; a failing model cools down
    models: [gpt-mini, reader]
    cooldown_s: 30
  cheap:
    type: cheapest                    # lowest expected cost among the capable
    models: [reader, gpt-mini]
  checked:
    type: cascade                     # cheap → strong until the validators accept
    models: [reader, gpt-mini]
    validators: [mypkg.checks:has_citation]   # import paths (the file's folder is importable)
    threshold: 0.5
  spread:
    type: balance
    models: [gpt-mini, reader]
    strategy: weighted                # weighted (default) | least_latency
    weights: {gpt-mini: 3, reader: 1} # unlisted members weigh 1
    seed: 7
  topics:
    type: semantic                    # by similarity to examples, with an embedding model
    embed: minilm
    routes:
      billing: {model: gpt-mini, examples: ["refund my invoice", "I was charged twice"]}
      hours: {model: reader, examples: ["when are you open?"]}
    default: reader                   # below min_score: a route's name, or a model's
    min_score: 0.3
    scoring: max                      # max (default) | top3
  learning:
    type: online                      # learns from the log which model is good enough
    models: [reader, gpt-mini]        # cheap to strong
    embed: minilm                     # kinds of prompt (default: words hashed)
    target: 0.9                       # observed quality to keep (relative: true → share of best)
    explore: 0.1                      # share of decisions that may try a cheaper model
    store: default                    # the run store it learns from ($ERPOZ_STORE, .erpoz/erpoz.db)

budget:                               # USD; every ceiling is optional
  per_run_usd: 0.50
  per_project_usd: 20                 # every process sharing the run store, together
  per_tenant_usd: 5                   # each tenant (a run's "tenant" tag), unless listed:
  tenants: {acme: 50, free-trial: 0.10}
```

Every mistake is a :class:`~erpoz.errors.ConfigError` naming the file, the line and what was
expected: unknown keys, wrong types, an unknown provider, a router naming an unknown model,
routers that refer to each other in a circle, a name given twice. ``ERPOZ_CONFIG`` points to
another file than ``./erpoz.yaml``. Without a project file, :func:`load_config` gives an offline
default (see :func:`default_config`); :func:`erpoz.project.build_hub` makes its models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..errors import ConfigError
from ..flow import LineMap, dotted, explain, load_config_yaml, locate, read_text_file
from ._lazy import Factory
from ._limits import RateLimit
from ._plugins import providers
from ._types import (
    Modality,
    ModelSpec,
)

__all__ = [
    "DEFAULT_FILE",
    "BalanceConfig",
    "CascadeConfig",
    "CheapestConfig",
    "ExecutorConfig",
    "FallbackConfig",
    "ModelConfig",
    "OnlineConfig",
    "ProjectConfig",
    "SemanticConfig",
    "config_path",
    "default_config",
    "load_config",
    "parse_config",
]

DEFAULT_FILE = "erpoz.yaml"
_NAME_RULE = "a name is not empty and has no spaces (flows give it as a string)"
_ENV = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


# --- the schema -------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Price(_Strict):
    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


_TEXT_ONLY: list[Modality] = ["text"]


class LimitsConfig(_Strict):
    """``limits:`` of a model: requests and tokens per ``per_s`` seconds (default: a minute),
    shared by every process of the store; over them a call is skipped (a router goes on to
    its next model) or waits (at most ``max_wait_s``)."""

    requests: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    per_s: float = Field(60.0, gt=0)
    on_limit: Literal["skip", "wait"] = "skip"
    max_wait_s: float = Field(60.0, ge=0)
    shared: str | None = Field(None, min_length=1, max_length=100)


class ModelConfig(_Strict):
    provider: str
    kind: Literal["chat", "embed", "ocr", "classify"] = "chat"
    params: dict[str, Any] = Field(default_factory=dict)
    price: Price = Price()
    context_window: int = Field(8192, gt=0)
    modalities: list[Modality] = Field(default_factory=lambda: _TEXT_ONLY.copy())
    tags: list[str] = Field(default_factory=list)
    limits: LimitsConfig | None = None


class _Router(_Strict):
    @property
    def members(self) -> list[str]:
        """The models and routers this router sends requests to."""
        return list(getattr(self, "models", []))


class FallbackConfig(_Router):
    type: Literal["fallback"]
    models: list[str] = Field(min_length=1)
    cooldown_s: float = Field(30.0, ge=0)


class CheapestConfig(_Router):
    type: Literal["cheapest"]
    models: list[str] = Field(min_length=1)


class CascadeConfig(_Router):
    type: Literal["cascade"]
    models: list[str] = Field(min_length=1)
    validators: list[str] = Field(default_factory=list)
    threshold: float = Field(0.5, ge=0, le=1)


class BalanceConfig(_Router):
    type: Literal["balance"]
    models: list[str] = Field(min_length=1)
    weights: dict[str, float] | None = None
    strategy: Literal["weighted", "least_latency"] = "weighted"
    seed: int | None = None


class SemanticRoute(_Strict):
    model: str
    examples: list[str] = Field(min_length=1)


class SemanticConfig(_Router):
    type: Literal["semantic"]
    embed: str
    routes: dict[str, SemanticRoute] = Field(min_length=1)
    default: str | None = None  # a route's name, or a model's (or router's) of its own
    min_score: float = 0.0
    scoring: Literal["max", "top3"] = "max"

    @property
    def members(self) -> list[str]:
        names = [r.model for r in self.routes.values()]
        if self.default is not None and self.default not in self.routes:
            names.append(self.default)
        return list(dict.fromkeys(names))


class OnlineConfig(_Router):
    """A router that learns from the log which model is good enough, per kind of prompt
    (:class:`erpoz.routing.online.OnlineRouter`)."""

    type: Literal["online"]
    models: list[str] = Field(min_length=1)
    embed: str | None = None  # an embed model; without one, words hashed (no weights)
    target: float = Field(0.9, ge=0, le=1)
    relative: bool = False  # target as a share of the best model's observed quality
    explore: float = Field(0.1, ge=0, le=1)
    bits: int = Field(32, ge=0, le=62)
    confidence: float = Field(1.0, ge=0)
    validators: list[str] = Field(default_factory=list)
    store: str | None = "default"  # the run store to learn from: a URL, "default", or null
    refresh_s: float = Field(30.0, ge=0)
    seed: int = 0


RouterConfig = Annotated[
    FallbackConfig | CheapestConfig | CascadeConfig | BalanceConfig | SemanticConfig | OnlineConfig,
    Field(discriminator="type"),
]
ROUTER_TYPES = ("fallback", "cheapest", "cascade", "balance", "semantic", "online")


class BudgetConfig(_Strict):
    per_run_usd: float | None = Field(None, ge=0)
    per_project_usd: float | None = Field(None, ge=0)
    per_tenant_usd: float | None = Field(None, ge=0)
    tenants: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class ExecutorConfig(_Strict):
    """Where step functions run: ``local`` (this process's threads) or ``ray``
    (``address`` of a cluster; without one, a Ray started for the process, or the one
    ``$RAY_ADDRESS`` names)."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)


class ProjectConfig(_Strict):
    """A parsed ``erpoz.yaml`` (checked; secrets are read when the hub is built)."""

    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routers: dict[str, RouterConfig] = Field(default_factory=dict)
    budget: BudgetConfig | None = None
    executor: ExecutorConfig | Literal["local", "ray"] | None = None
    # checked by erpoz.guards.guardrails_from_config (they keep their YAML lines there)
    guards: Any = None
    policy: Any = None
    tools: Any = None  # checked by erpoz.tools.registry_from_config
    mcp: Any = None  # MCP servers: checked by erpoz.integrations.mcp (the mcp extra)
    #: who decides reviews from the command line when --reviewer and $ERPOZ_REVIEWER are unset
    reviewer: str | None = Field(None, min_length=1, max_length=200)
    audit: Any = None  # checked by erpoz.audit.settings.audit_settings
    schedules: Any = None  # checked by erpoz.engine.schedules_from_config

    _file: str | None = PrivateAttr(default=None)
    _doc: Any = PrivateAttr(default=None)
    _base: Path | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        """The file this came from (``None`` for the built-in default)."""
        return self._file

    @property
    def base(self) -> Path | None:
        """The folder of the file this came from: relative paths in it (validators, tools,
        stores) start there (``None`` for the built-in default)."""
        return self._base

    def line(self, *path: str | int, key: bool = False) -> int | None:
        """The line of a value (or, with ``key``, of its key) in the file: ``line("models",
        "gpt", "provider")``."""
        return locate(self._doc, path, "key" if key else "value")

    def error(self, message: str, *path: str | int, key: bool = False) -> ConfigError:
        return ConfigError(message, file=self._file, line=self.line(*path, key=key))

    def spec(self, name: str) -> ModelSpec:
        """The spec of model ``name``, with ``${ENV:NAME}`` in its params replaced."""
        m = self.models[name]
        return ModelSpec(
            name=name,
            provider=m.provider,
            kind=m.kind,
            params=self._env(name, m.params, ("models", name, "params")),
            price_in=m.price.input,
            price_out=m.price.output,
            context_window=m.context_window,
            modalities=frozenset(m.modalities),
            tags=frozenset(m.tags),
            limits=_limit_of(m.limits),
        )

    def _env(self, model: str, value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):

            def sub(match: re.Match[str]) -> str:
                var = match.group(1)
                found = os.environ.get(var)
                if found is None:
                    raise self.error(
                        f"model '{model}': environment variable {var} is not set "
                        f"(used in {'.'.join(map(str, path[2:]))})",
                        *path,
                    )
                return found

            return _ENV.sub(sub, value)
        if isinstance(value, dict):
            return {k: self._env(model, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._env(model, v, (*path, i)) for i, v in enumerate(value)]
        return value

    def router_order(self) -> list[str]:
        """Router names, each after the routers it uses."""
        done: dict[str, None] = {}
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            if name in visiting:
                loop = [*visiting[visiting.index(name) :], name]
                raise self.error(
                    f"routers refer to each other in a circle: {' -> '.join(loop)}",
                    "routers",
                    name,
                    key=True,
                )
            visiting.append(name)
            for member in self.routers[name].members:
                if member in self.routers:
                    visit(member)
            visiting.pop()
            done[name] = None

        for name in self.routers:
            visit(name)
        return list(done)


def _limit_of(c: LimitsConfig | None) -> RateLimit | None:
    if c is None or (c.requests is None and c.tokens is None):
        return None
    return RateLimit(c.requests, c.tokens, c.per_s, c.on_limit, c.max_wait_s, c.shared)


# --- loading ----------------------------------------------------------------------------------
def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Which project file to read: ``path``, else ``$ERPOZ_CONFIG``, else ``./erpoz.yaml`` if
    it exists (``None`` when it does not). A file named explicitly must exist."""
    named = os.fspath(path) if path is not None else os.environ.get("ERPOZ_CONFIG")
    if named:
        p = Path(named)
        if not p.is_file():
            how = "" if path is not None else " (from $ERPOZ_CONFIG)"
            raise ConfigError(f"no project file at {named}{how}", file=named)
        return p
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    extra_providers: Mapping[str, Factory] | None = None,
) -> ProjectConfig:
    """Read and check the project file (see :func:`config_path`); the built-in default when
    there is none. ``extra_providers`` are provider factories known besides the installed
    ones (tests, embedding applications)."""
    p = config_path(path)
    if p is None:
        return default_config()
    fname = str(path) if path is not None else str(p)
    try:
        text = read_text_file(p, "the project file")
    except ValueError as exc:
        raise ConfigError(str(exc), file=fname) from None
    return parse_config(text, file=fname, base=p.resolve().parent, extra_providers=extra_providers)


def parse_config(
    text: str,
    *,
    file: str = DEFAULT_FILE,
    base: Path | None = None,
    extra_providers: Mapping[str, Factory] | None = None,
) -> ProjectConfig:
    """Check the text of a project file; ``ConfigError`` with file and line when it is wrong."""
    doc = load_config_yaml(text, file)
    if doc is None:
        doc = LineMap()
        doc.line, doc.lines, doc.key_lines = 1, {}, {}
    if not isinstance(doc, LineMap):
        raise ConfigError(
            "a project file is a mapping with 'models', 'routers' and 'budget'", file=file, line=1
        )
    try:
        config = ProjectConfig.model_validate(doc)
    except ValidationError as exc:
        raise _translate(exc, doc, file) from None
    config._file = file
    config._doc = doc
    config._base = base
    _check(config, set(providers()) | set(extra_providers or {}))
    return config


def _bad_name(name: str) -> bool:
    return not name or any(c.isspace() for c in name)


def _check(config: ProjectConfig, known_providers: set[str]) -> None:
    """What the schema alone cannot see: names, providers and references."""
    for name, m in config.models.items():
        if _bad_name(name):
            raise config.error(f"model name {name!r}: {_NAME_RULE}", "models", name, key=True)
        if m.provider not in known_providers:
            raise config.error(
                f"model '{name}': unknown provider '{m.provider}' (installed providers: "
                f"{', '.join(sorted(known_providers)) or 'none'})",
                "models",
                name,
                "provider",
            )
    for name, r in config.routers.items():
        if name in config.models:
            raise config.error(
                f"router '{name}': the name is already a model's (line "
                f"{config.line('models', name, key=True)}); names are shared by models and routers",
                "routers",
                name,
                key=True,
            )
        if _bad_name(name):
            raise config.error(f"router name {name!r}: {_NAME_RULE}", "routers", name, key=True)
        _check_router(config, name, r)
    config.router_order()  # circles


def _check_router(config: ProjectConfig, name: str, r: Any) -> None:
    """A router's members are chat models or routers, named once, and what it names besides
    (an embedding model, weights, validators) is there and of the right kind."""
    if isinstance(r, SemanticConfig):
        _check_embed(config, name, r.embed)
        for route, spec in r.routes.items():
            _check_chat_member(config, name, spec.model, "routes", route, "model")
        if r.default is not None and r.default not in r.routes:
            _check_chat_member(config, name, r.default, "default")
        return
    seen: set[str] = set()
    for i, member in enumerate(r.models):
        _check_chat_member(config, name, member, "models", i)
        if member in seen:
            raise config.error(
                f"router '{name}': '{member}' is listed twice", "routers", name, "models", i
            )
        seen.add(member)
    if isinstance(r, BalanceConfig) and r.weights is not None:
        _check_weights(config, name, r.weights, seen)
    if isinstance(r, OnlineConfig) and r.embed is not None:
        _check_embed(config, name, r.embed)
    if isinstance(r, CascadeConfig | OnlineConfig):
        _check_validators(config, name, r.validators)


def _check_chat_member(config: ProjectConfig, router: str, member: str, *path: str | int) -> None:
    """``member`` (at ``path`` in the router) is a router or a chat model."""
    if member in config.routers:
        return
    if member not in config.models:
        known = ", ".join([*config.models, *config.routers]) or "none"
        raise config.error(
            f"router '{router}': unknown model '{member}' (models and routers: {known})",
            "routers",
            router,
            *path,
        )
    kind = config.models[member].kind
    if kind != "chat":
        raise config.error(
            f"router '{router}': '{member}' is a model of kind {kind}; routers send chat requests",
            "routers",
            router,
            *path,
        )


def _check_embed(config: ProjectConfig, router: str, embed: str) -> None:
    """The router's ``embed`` names a model of kind embed."""
    model = config.models.get(embed)
    if model is None or model.kind != "embed":
        what = "is not a model" if model is None else f"is a {model.kind} model"
        raise config.error(
            f"router '{router}': embed '{embed}' {what}; name a model of kind embed",
            "routers",
            router,
            "embed",
        )


def _check_weights(
    config: ProjectConfig, router: str, weights: Mapping[str, float], members: set[str]
) -> None:
    """A balance router weighs its own members, none below 0."""
    for member, weight in weights.items():
        if member not in members:
            raise config.error(
                f"router '{router}': weight for '{member}', which is not among its models",
                "routers",
                router,
                "weights",
                member,
                key=True,
            )
        if weight < 0:
            raise config.error(
                f"router '{router}': weights must be >= 0", "routers", router, "weights", member
            )


def _check_validators(config: ProjectConfig, router: str, validators: Sequence[str]) -> None:
    """Validators are import paths (``module:function``); they are imported when the hub is
    built."""
    for i, ref in enumerate(validators):
        if ":" not in ref and "." not in ref:
            raise config.error(
                f"router '{router}': validator {ref!r} must be an import path like "
                "'mypkg.checks:has_citation'",
                "routers",
                router,
                "validators",
                i,
            )


# --- where a pydantic error is, and what it means ---------------------------------------------
def _translate(exc: ValidationError, doc: LineMap, file: str) -> ConfigError:
    """The schema's mistake, said in the file's terms at its line (:func:`erpoz.flow.explain`,
    which says every configuration file's mistakes); a router whose ``type`` is unknown or
    missing lists the router types."""
    for e in exc.errors():
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc: tuple[str | int, ...] = tuple(e["loc"])
            tag = e.get("ctx", {}).get("tag")
            what = f"unknown router type {tag!r}" if tag is not None else "missing 'type'"
            return ConfigError(
                f"{dotted(loc)}: {what} (expected: {', '.join(ROUTER_TYPES)})",
                file=file,
                line=locate(doc, loc, "value" if tag is not None else "key"),
            )
    mistake = explain(exc, doc, ProjectConfig)
    return ConfigError(mistake.message, file=file, line=mistake.line)


# --- the offline default ----------------------------------------------------------------------
def default_config() -> ProjectConfig:
    """The models a project has without ``erpoz.yaml``: ``reader`` (the extractive reader,
    offline; asked without passages, it says what it does and how to configure a chat
    model), ``minilm`` (embeddings, offline), ``ocr`` (RapidOCR, offline) and ``default``,
    a router over ``reader``.
    With ``OPENAI_BASE_URL`` set, also ``openai`` (that endpoint, its key from
    ``OPENAI_API_KEY``, the upstream model id from ``OPENAI_MODEL``, default ``gpt-4o-mini``)
    and ``default`` falls back from ``openai`` to ``reader``.
    """
    models: dict[str, ModelConfig] = {
        "reader": ModelConfig(
            provider="extractive",
            context_window=32768,
            tags=["offline"],
            params={"without_passages": "explain"},  # says what it does, without passages
        ),
        "minilm": ModelConfig(provider="minilm", kind="embed", tags=["offline"]),
        "ocr": ModelConfig(provider="rapidocr", kind="ocr", modalities=["image"], tags=["offline"]),
    }
    members = ["reader"]
    if os.environ.get("OPENAI_BASE_URL"):
        upstream = os.environ.get("OPENAI_MODEL") or "gpt-4o-mini"
        models["openai"] = ModelConfig(
            provider="openai", params={"model": upstream}, context_window=32768
        )
        members = ["openai", "reader"]
    return ProjectConfig(
        models=models, routers={"default": FallbackConfig(type="fallback", models=members)}
    )
