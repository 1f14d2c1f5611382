"""The ``audit`` section of ``erpoz.yaml``: the checkpoint signing key (kept outside the
store), the key verifications trust, where checkpoints go and how often.

```yaml
audit:
  key: /etc/erpoz/audit.key        # the Ed25519 signing key (PEM), or:
  # key_env: ERPOZ_AUDIT_KEY       # an environment variable holding it
  public_key: audit.pub            # the key checkpoints must be signed with (default: key's)
  checkpoints: audit/checkpoints.jsonl   # a JSON-lines file, or a directory (ends with /)
  witness: https://witness.example/erpoz   # optional: POST each checkpoint there too
  every_events: 10000              # automatic checkpoints: every N new events …
  every_seconds: 300               # … or every S seconds when there are new events
```

Relative paths are relative to the project file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..flow import LineMap
from ..store import MerkleLog, Store
from .checkpoints import AutoCheckpointer, CheckpointError, CheckpointLog, PublicKey, SigningKey

if TYPE_CHECKING:
    from ..models import ProjectConfig

_KEYS = {"key", "key_env", "public_key", "checkpoints", "witness", "every_events", "every_seconds"}


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """What ``audit:`` configures; paths are resolved. ``file`` / ``line`` say where."""

    file: str
    line: int
    key: Path | None = None
    key_env: str | None = None
    public_key: Path | None = None
    checkpoints: Path | None = None
    checkpoints_raw: str | None = None
    witness: str | None = None
    every_events: int | None = None
    every_seconds: float | None = None
    lines: dict[str, int] = field(default_factory=dict)
    """The line of each setting."""

    def _error(self, message: str, *names: str) -> ConfigError:
        line = next((self.lines[n] for n in names if n in self.lines), self.line)
        return ConfigError(message, file=self.file, line=line)

    @property
    def signs(self) -> bool:
        return self.key is not None or self.key_env is not None

    @property
    def automatic(self) -> bool:
        return self.every_events is not None or self.every_seconds is not None

    def signing_key(self) -> SigningKey:
        """The signing key; ``ConfigError`` naming the file when there is none or it is bad."""
        try:
            if self.key is not None:
                return SigningKey.load(self.key)
            if self.key_env is not None:
                return SigningKey.from_env(self.key_env)
        except CheckpointError as exc:
            raise self._error(f"audit: {exc}", "key", "key_env") from exc
        raise self._error(
            "audit: no signing key: set audit.key (a key file, outside the store) or "
            "audit.key_env (an environment variable holding it); make one with "
            "`erpoz audit keygen`"
        )

    def trusted_key(self) -> PublicKey:
        """The key checkpoints must be signed with: ``public_key``, else the signing key's."""
        try:
            if self.public_key is not None:
                return PublicKey.load(self.public_key)
        except CheckpointError as exc:
            raise self._error(f"audit: {exc}", "public_key") from exc
        if self.signs:
            return self.signing_key().public_key
        raise self._error(
            "audit: no key to trust: set audit.public_key (or audit.key), or pass --public-key"
        )

    def sink(self) -> CheckpointLog | None:
        if self.checkpoints is None:
            return None
        raw = self.checkpoints_raw or ""
        trailing = "/" if raw.endswith(("/", os.sep)) else ""
        return CheckpointLog(str(self.checkpoints) + trailing)


def audit_settings(config: ProjectConfig) -> AuditSettings | None:
    """The project's ``audit`` section, checked; ``None`` when there is none."""
    doc = config._doc
    if not isinstance(doc, LineMap) or "audit" not in doc:
        return None
    file = config.file or "erpoz.yaml"
    line = doc.key_lines["audit"]
    section = doc["audit"]
    if not isinstance(section, LineMap) or not section:
        raise ConfigError(
            "'audit' is a mapping naming at least a key, a public_key or where checkpoints "
            f"go ({', '.join(sorted(_KEYS))})",
            file=file,
            line=line,
        )
    r = _Section(section, file, config._base or Path.cwd())
    r.check_keys()
    witness = r.text("witness")
    if witness is not None and not witness.startswith(("http://", "https://")):
        raise r.error("witness", f"expected an http:// or https:// URL, got {witness!r}")
    settings = AuditSettings(
        file=file,
        line=line,
        key=r.path("key"),
        key_env=r.text("key_env"),
        public_key=r.path("public_key"),
        checkpoints=r.path("checkpoints"),
        checkpoints_raw=r.text("checkpoints"),
        witness=witness,
        every_events=r.positive("every_events", int),
        every_seconds=r.positive("every_seconds", float),
        lines=dict(section.lines),
    )
    r.check_automatic(settings)
    return settings


class _Section:
    """Reads the ``audit`` section; every mistake is a ``ConfigError`` at its line."""

    def __init__(self, section: LineMap, file: str, base: Path) -> None:
        self.section, self.file, self.base = section, file, base

    def error(self, name: str, message: str, *, key: bool = False) -> ConfigError:
        lines = self.section.key_lines if key else self.section.lines
        return ConfigError(f"audit.{name}: {message}", file=self.file, line=lines[name])

    def check_keys(self) -> None:
        section = self.section
        for name in section:
            if name not in _KEYS:
                raise ConfigError(
                    f"audit: unknown key '{name}' (expected one of {', '.join(sorted(_KEYS))})",
                    file=self.file,
                    line=section.key_lines[name],
                )
        if "key" in section and "key_env" in section:
            raise ConfigError(
                "audit: give key (a file) or key_env (an environment variable), not both",
                file=self.file,
                line=section.key_lines["key_env"],
            )

    def text(self, name: str) -> str | None:
        value = self.section.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        return value

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return None if value is None else self.base / Path(value).expanduser()

    def positive(self, name: str, kind: type) -> Any:
        value = self.section.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(name, f"expected a number above 0, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise self.error(name, f"expected a whole number, got {value!r}")
        return kind(value)

    def check_automatic(self, settings: AuditSettings) -> None:
        """Automatic checkpoints are signed and go somewhere."""
        if not settings.automatic:
            return
        where = "every_events" if "every_events" in self.section else "every_seconds"
        if not settings.signs:
            raise self.error(
                where,
                "automatic checkpoints need a signing key (audit.key or audit.key_env)",
                key=True,
            )
        if settings.checkpoints is None and settings.witness is None:
            raise self.error(
                where,
                "automatic checkpoints need somewhere to go (audit.checkpoints: a file or "
                "directory outside the store, and/or audit.witness)",
                key=True,
            )


def project_checkpointer(
    store: Store,
    config: str | os.PathLike[str] | None = None,
    *,
    on_error: Callable[[Exception], None] | None = None,
) -> AutoCheckpointer | None:
    """The automatic checkpoints ``audit.every_events`` / ``audit.every_seconds`` ask for, for
    a process that records runs into ``store``; ``None`` when there are none to make (or the
    store keeps nothing: ``memory``). ``ConfigError`` for a bad ``audit`` section."""
    from ..models import load_config

    settings = audit_settings(load_config(config))
    if settings is None or not settings.automatic:
        return None
    if not isinstance(store, MerkleLog) or store.url == "memory":
        return None
    return AutoCheckpointer(
        store,
        settings.signing_key(),
        settings.sink(),
        witness=settings.witness,
        every_events=settings.every_events,
        every_seconds=settings.every_seconds,
        on_error=on_error,
    )
