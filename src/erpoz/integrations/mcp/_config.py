"""The ``mcp`` section of ``erpoz.yaml``: the MCP servers whose tools a project may call.

```yaml
mcp:
  calc:                           # the server's name; its tools become calc__add, calc__div, ...
    command: python               # stdio: the program to start, and its arguments
    args: [calc_server.py]
    env: {CALC_KEY: "${ENV:CALC_KEY}"}
    cwd: servers                  # relative to the project file's folder
  search:
    url: http://127.0.0.1:8765/mcp    # streamable HTTP
    headers: {Authorization: "Bearer ${ENV:SEARCH_TOKEN}"}
    tools: [search]               # take only these (default: every tool the server lists)
    prefix: "web_"                # the tools' names in erpoz (default: "<server>__")
    read_only: [search]           # no side effects (default: the server's readOnlyHint)
    secret: [api_key]             # arguments redacted in the log
    timeout_s: 30                 # one call (default 60)
    connect_timeout_s: 20         # starting the server and the handshake (default 30)
```

Parsed without the ``mcp`` package, so that a mistake is a ``ConfigError`` naming the file and
the line whether the extra is installed or not.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...errors import ConfigError
from ...models import ProjectConfig

__all__ = ["ServerSpec", "servers_from_config"]

_KEYS = (
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "tools",
    "prefix",
    "read_only",
    "secret",
    "timeout_s",
    "connect_timeout_s",
)
_ENV = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One MCP server of the project, checked; secrets (``${ENV:…}``) already read."""

    name: str
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[str, ...] | None = None  # None: every tool the server lists
    prefix: str = ""  # the tools' names in erpoz start with this (from erpoz.yaml: "<name>__")
    read_only: bool | frozenset[str] | None = None  # None: the server's readOnlyHint
    secret: frozenset[str] = frozenset()
    timeout_s: float = 60.0
    connect_timeout_s: float = 30.0
    file: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        """``erpoz.yaml:12`` (or the server's name when it was not read from a file)."""
        if self.file is None:
            return f"server '{self.name}'"
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def target(self) -> str:
        """What is connected to: the command line or the URL (headers and env left out)."""
        if self.transport == "http":
            return str(self.url)
        return shlex.join([str(self.command), *self.args])

    def connection_key(self) -> tuple[Any, ...]:
        """Everything that makes a connection different: two specs with the same key share one
        session in a process."""
        return (
            self.transport,
            self.command,
            self.args,
            tuple(sorted(self.env.items())),
            self.cwd,
            self.url,
            tuple(sorted(self.headers.items())),
        )

    def is_read_only(self, tool: str, hint: bool | None) -> bool:
        """Whether ``tool`` has no side effects: what the project says, else the server's hint
        (an MCP tool without the hint may change things, so it gets idempotency keys)."""
        if isinstance(self.read_only, bool):
            return self.read_only
        if isinstance(self.read_only, frozenset):
            return tool in self.read_only
        return bool(hint)


def servers_from_config(config: ProjectConfig) -> list[ServerSpec]:
    """The servers of the ``mcp`` section (empty without one); ``ConfigError`` with the file
    and line of the first mistake."""
    section = config.mcp
    if section is None:
        return []
    if not isinstance(section, Mapping) or not section:
        raise config.error(
            "'mcp' maps server names to servers (each with 'command' or 'url')", "mcp"
        )
    base: Path | None = config._base  # the project file's folder
    if base is None:
        base = Path(config.file).resolve().parent if config.file else Path.cwd()
    return [_server(config, str(name), raw, base) for name, raw in section.items()]


def _server(config: ProjectConfig, name: str, raw: Any, base: Path) -> ServerSpec:
    if not _NAME.match(name):
        raise config.error(
            f"mcp server name {name!r}: letters, digits, '_' and '-' only (it prefixes the "
            "names of its tools)",
            "mcp",
            name,
            key=True,
        )
    r = _Reader(config, name, raw)
    stdio = r.check_shape()
    command = args = cwd = url = None
    env: dict[str, str] = {}
    headers: dict[str, str] = {}
    if stdio:
        command, args, env, cwd = r.stdio(base)
    else:
        url, headers = r.http()
    return ServerSpec(
        name=name,
        transport="stdio" if stdio else "http",
        command=command,
        args=args or (),
        env=env,
        cwd=cwd,
        url=url,
        headers=headers,
        tools=r.strings("tools") if "tools" in raw else None,
        prefix=r.prefix(),
        read_only=r.read_only(),
        secret=frozenset(r.strings("secret")) if "secret" in raw else frozenset(),
        timeout_s=r.seconds("timeout_s", 60.0),
        connect_timeout_s=r.seconds("connect_timeout_s", 30.0),
        file=config.file,
        line=config.line("mcp", name, key=True),
    )


class _Reader:
    """Reads one server's mapping; every mistake is a ``ConfigError`` at its line."""

    def __init__(self, config: ProjectConfig, name: str, raw: Any) -> None:
        self.config, self.name, self.raw = config, name, raw

    def err(self, message: str, *path: str | int, key: bool = False) -> ConfigError:
        # without a path: the line of the server's name
        return self.config.error(
            f"mcp server '{self.name}': {message}", "mcp", self.name, *path, key=key or not path
        )

    def check_shape(self) -> bool:
        """Known keys, and either ``command`` or ``url`` with the keys of its kind; whether it
        is a stdio server."""
        raw, err = self.raw, self.err
        if not isinstance(raw, Mapping):
            raise err("expected a mapping with 'command' (stdio) or 'url' (streamable HTTP)")
        for key in raw:
            if key not in _KEYS:
                raise err(f"unknown key '{key}' (expected: {', '.join(_KEYS)})", key, key=True)
        has_command, has_url = "command" in raw, "url" in raw
        if has_command == has_url:
            raise err(
                "give either 'command' (a program started over stdio) or 'url' (a streamable "
                "HTTP endpoint), not " + ("both" if has_command else "neither")
            )
        for key in ("env", "cwd", "args") if has_url else ("headers",):
            if key in raw:
                raise err(
                    f"'{key}' is for "
                    f"{'stdio servers (command)' if has_url else 'HTTP servers (url)'}",
                    key,
                    key=True,
                )
        return has_command

    def stdio(self, base: Path) -> tuple[str, tuple[str, ...], dict[str, str], str]:
        """``command``, ``args``, ``env`` and ``cwd`` (relative to the project file's folder)."""
        raw = self.raw
        command = self.text("command")
        args = tuple(
            _env(a, lambda var: self.err(f"environment variable {var} is not set", "args"))
            for a in (self.strings("args") if "args" in raw else ())
        )
        env = self.table("env") if "env" in raw else {}
        cwd = str(base)
        if "cwd" in raw:
            folder = base / self.text("cwd")
            if not folder.is_dir():
                raise self.err(f"'cwd': no folder {folder}", "cwd")
            cwd = str(folder)
        return command, args, env, cwd

    def http(self) -> tuple[str, dict[str, str]]:
        url = self.text("url")
        if not url.startswith(("http://", "https://")):
            raise self.err(f"'url' must be an http:// or https:// URL, got {url!r}", "url")
        return url, self.table("headers") if "headers" in self.raw else {}

    def prefix(self) -> str:
        if "prefix" not in self.raw:
            return f"{self.name}__"
        prefix = self.raw["prefix"]
        if not isinstance(prefix, str) or (prefix and not _NAME.match(prefix)):
            raise self.err("'prefix' must be a string of letters, digits, '_' and '-'", "prefix")
        return prefix

    def read_only(self) -> bool | frozenset[str] | None:
        if "read_only" not in self.raw:
            return None
        value = self.raw["read_only"]
        return value if isinstance(value, bool) else frozenset(self.strings("read_only"))

    def text(self, key: str) -> str:
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip():
            raise self.err(f"'{key}' must be a non-empty string", key)
        return _env(value, lambda var: self.err(f"environment variable {var} is not set", key))

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw[key]
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise self.err(f"'{key}' must be a list of strings", key)
        if not value:
            raise self.err(f"'{key}' is empty; it must name at least one (or leave it out)", key)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.err(f"'{key}' must be a list of non-empty strings", key, i)
        return tuple(value)

    def table(self, key: str) -> dict[str, str]:
        value = self.raw[key]
        if not isinstance(value, Mapping):
            raise self.err(f"'{key}' must be a mapping of names to strings", key)
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise self.err(f"'{key}.{k}' must be a string", key, k)
            out[str(k)] = _env(
                str(v),
                lambda var, k=k: self.err(f"environment variable {var} is not set", key, k),
            )
        return out

    def seconds(self, key: str, default: float) -> float:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.err(f"'{key}' must be a number of seconds > 0", key)
        return float(value)


def _env(value: str, missing: Any) -> str:
    def sub(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise missing(match.group(1))
        return found

    return _ENV.sub(sub, value)
