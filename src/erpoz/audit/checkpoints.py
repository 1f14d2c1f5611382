"""Signed checkpoints of the log's Merkle tree, kept outside the database.

A checkpoint says "on this date, log ``origin`` held ``size`` events whose Merkle root is
``root``", signed with an Ed25519 key that lives outside the store (a file, or an environment
variable). Whoever keeps a copy can later prove that the store still extends it (``erpoz audit
verify --checkpoint``): nothing before it was changed, re-chained, removed, reordered or rolled
back, even by someone who can write to the database, as long as they cannot sign.

The signed text is five lines::

    erpoz-checkpoint/1
    <origin>
    <size>
    <root, hex>
    <time, milliseconds since 1970 UTC>

Checkpoints go to a *sink* (:class:`CheckpointLog`): a JSON-lines file written by appending, or
a directory with one file per checkpoint; and optionally to an HTTP *witness* that keeps its own
copy (:func:`send_to_witness`: a POST of the checkpoint's JSON).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ErpozError
from ..store import MerkleLog, Store

__all__ = [
    "FORMAT",
    "AutoCheckpointer",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLog",
    "PublicKey",
    "SigningKey",
    "generate_key",
    "read_checkpoints",
    "send_to_witness",
    "sign_checkpoint",
    "write_checkpoint",
]

FORMAT = "erpoz-checkpoint/1"
_PREFIX = "erpoz-checkpoint/1"


class CheckpointError(ErpozError):
    """A checkpoint, a key or a sink cannot be read, written or used; says which and where."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a dependency of erpoz
        raise CheckpointError(
            f"signed checkpoints need the 'cryptography' package ({exc}): pip install cryptography"
        ) from exc
    return ed25519


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


class PublicKey:
    """An Ed25519 public key: what verifies checkpoints. ``key_id`` names it (16 hex digits
    of the SHA-256 of its 32 bytes)."""

    def __init__(self, raw: bytes) -> None:
        ed25519 = _crypto()
        if len(raw) != 32:
            raise CheckpointError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        self.raw = raw
        self.key_id = _key_id(raw)

    @classmethod
    def from_pem(cls, pem: bytes, where: str) -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        ed25519 = _crypto()
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}: not a PEM public key ({exc})") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise CheckpointError(f"{where}: not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(raw)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKey:
        """A public key file (PEM, as ``erpoz audit keygen`` writes it); a private key file
        works too (its public half is taken)."""
        where = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read the public key {where}: {exc.strerror}") from exc
        if b"PRIVATE KEY" in data:
            return SigningKey.from_pem(data, where).public_key
        return cls.from_pem(data, where)

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def verifies(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key: what signs checkpoints. Keep it away from the database: whoever
    holds it can sign a checkpoint of a rewritten log."""

    def __init__(self, key: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(raw)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @classmethod
    def from_pem(cls, pem: bytes, where: str) -> SigningKey:
        from cryptography.hazmat.primitives import serialization

        ed25519 = _crypto()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{where}: not an unencrypted PEM private key ({exc}); make one with "
                "`erpoz audit keygen`"
            ) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise CheckpointError(f"{where}: not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        where = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read the signing key {where}: {exc.strerror}") from exc
        return cls.from_pem(data, where)

    @classmethod
    def from_env(cls, name: str) -> SigningKey:
        """The key in environment variable ``name``: its PEM text."""
        value = os.environ.get(name)
        if not value:
            raise CheckpointError(
                f"environment variable {name} is not set: it should hold the signing key (the "
                "PEM text `erpoz audit keygen` writes)"
            )
        return cls.from_pem(value.encode(), f"${name}")

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message))


def generate_key() -> SigningKey:
    """A new random Ed25519 key."""
    return SigningKey(_crypto().Ed25519PrivateKey.generate())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of the tree's size and root at a time."""

    origin: str
    size: int
    root: bytes
    timestamp_ms: int
    key_id: str
    signature: bytes

    @staticmethod
    def message(origin: str, size: int, root: bytes, timestamp_ms: int) -> bytes:
        """The exact bytes that are signed."""
        return f"{_PREFIX}\n{origin}\n{size}\n{root.hex()}\n{timestamp_ms}\n".encode()

    def signed_by(self, key: PublicKey) -> bool:
        """Whether ``key`` made this signature over this origin, size, root and time."""
        msg = self.message(self.origin, self.size, self.root, self.timestamp_ms)
        return key.verifies(self.signature, msg)

    @property
    def time(self) -> str:
        """The time, UTC, ISO 8601."""
        seconds, ms = divmod(self.timestamp_ms, 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "time": self.time,
            "timestamp_ms": self.timestamp_ms,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Checkpoint:
        """A checkpoint from its JSON; ``CheckpointError`` naming ``where`` and the field."""
        if not isinstance(doc, dict):
            raise CheckpointError(f"{where}: a checkpoint is a JSON object")
        if doc.get("format") != FORMAT:
            raise CheckpointError(
                f"{where}: not an erpoz checkpoint (format {doc.get('format')!r}, expected "
                f"{FORMAT!r})"
            )
        try:
            origin, size, ms = doc["origin"], doc["size"], doc["timestamp_ms"]
            root = bytes.fromhex(doc["root"])
            key_id = doc["key_id"]
            signature = base64.b64decode(doc["signature"], validate=True)
        except KeyError as exc:
            raise CheckpointError(f"{where}: the checkpoint has no {exc.args[0]!r}") from exc
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}: a malformed root or signature ({exc})") from exc
        if not isinstance(origin, str) or not isinstance(key_id, str):
            raise CheckpointError(f"{where}: origin and key_id are strings")
        if type(size) is not int or size < 0 or type(ms) is not int:
            raise CheckpointError(f"{where}: size and timestamp_ms are whole numbers")
        if len(root) != 32:
            raise CheckpointError(f"{where}: the root is 32 bytes (64 hex digits)")
        return cls(origin, size, root, ms, key_id, signature)


async def sign_checkpoint(store: Store, key: SigningKey) -> Checkpoint:
    """Sign the store's tree as it is now."""
    if not isinstance(store, MerkleLog):
        raise CheckpointError(f"the store {store.url} keeps no Merkle tree to checkpoint")
    head = await store.tree_head()
    head.check()
    ms = int(time.time() * 1000)
    sig = key.sign(Checkpoint.message(head.origin, head.size, head.root, ms))
    return Checkpoint(head.origin, head.size, head.root, ms, key.key_id, sig)


# --- where checkpoints are kept -------------------------------------------------------------------
class CheckpointLog:
    """Checkpoints appended to a JSON-lines file, or (a path that is a directory, or ends with
    a slash) written one file each into a directory; nothing is ever rewritten."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = os.fspath(path)
        self.path = Path(raw)
        self.is_dir = self.path.is_dir() or raw.endswith(("/", os.sep))

    def append(self, cp: Checkpoint) -> Path:
        """Write ``cp`` durably (fsync); returns the file written."""
        text = json.dumps(cp.to_json(), separators=(",", ":"))
        try:
            if self.is_dir:
                self.path.mkdir(parents=True, exist_ok=True)
                target = self.path / f"checkpoint-{cp.size:012d}-{cp.timestamp_ms}.json"
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                data = (text + "\n").encode()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                target = self.path
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                data = (text + "\n").encode()  # one write(2): lines of two writers never mix
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the checkpoint to {self.path}: {exc.strerror or exc}"
            ) from exc
        return target

    def read(self) -> list[Checkpoint]:
        return read_checkpoints(self.path)


def read_checkpoints(path: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every checkpoint in a file (one JSON object, or JSON lines) or a directory of them,
    oldest first (by size, then time)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json")) + sorted(p.glob("*.jsonl"))
        found = [cp for f in files for cp in _read_file(f)]
    elif p.is_file():
        found = list(_read_file(p))
    else:
        raise CheckpointError(f"no checkpoint file or directory at {p}")
    if not found:
        raise CheckpointError(f"{p} holds no checkpoint")
    return sorted(found, key=lambda cp: (cp.size, cp.timestamp_ms))


def _read_file(path: Path) -> Iterator[Checkpoint]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read the checkpoints in {path}: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and not all(line.lstrip().startswith("{") for line in lines):
        try:  # one checkpoint, pretty-printed
            yield Checkpoint.from_json(json.loads(text), str(path))
            return
        except json.JSONDecodeError:
            pass  # JSON lines after all: say which line is wrong
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where}: not JSON ({exc.msg})") from exc
        if isinstance(doc, dict) and doc.get("record") == "checkpoint":  # an export's header
            doc = doc.get("checkpoint")
        yield Checkpoint.from_json(doc, where)


async def send_to_witness(url: str, cp: Checkpoint, *, timeout: float = 10.0) -> None:
    """POST the checkpoint's JSON to a witness that keeps it; any answer but 2xx is an error."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            reply = await client.post(url, json=cp.to_json())
    except httpx.HTTPError as exc:
        raise CheckpointError(f"the witness {url} cannot be reached: {exc}") from exc
    if not 200 <= reply.status_code < 300:
        raise CheckpointError(
            f"the witness {url} refused the checkpoint: HTTP {reply.status_code} "
            f"{reply.text[:200]!r}"
        )


# --- automatic checkpoints ------------------------------------------------------------------------
class AutoCheckpointer:
    """While a process records runs: a checkpoint every ``every_events`` new events or every
    ``every_seconds`` (when there are new events), and one when it stops. The tree's size is
    looked at every ``poll_s`` seconds (one small read).

    Use as ``async with AutoCheckpointer(store, key, sink): ...``. A checkpoint that cannot be
    written (a full disk, a witness away) is reported to ``on_error`` and tried again at the
    next turn; the runs go on.
    """

    def __init__(
        self,
        store: Store,
        key: SigningKey,
        sink: CheckpointLog | None,
        *,
        witness: str | None = None,
        every_events: int | None = None,
        every_seconds: float | None = None,
        poll_s: float = 1.0,
        on_error: Any = None,
    ) -> None:
        if sink is None and witness is None:
            raise CheckpointError("automatic checkpoints need a sink or a witness to go to")
        self.store = store
        self.key = key
        self.sink = sink
        self.witness = witness
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.poll_s = min(poll_s, every_seconds) if every_seconds else poll_s
        self.on_error = on_error
        self.written: list[Checkpoint] = []
        self._last_size = 0
        self._last_time = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching the tree (from its size now)."""
        if isinstance(self.store, MerkleLog):
            self._last_size = (await self.store.tree_head()).size
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop watching; a last checkpoint when the tree grew since the last one."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.checkpoint_if_grown()

    async def __aenter__(self) -> AutoCheckpointer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _due(self, size: int) -> bool:
        grown = size - self._last_size
        if grown <= 0:
            return False
        if self.every_events is not None and grown >= self.every_events:
            return True
        return (
            self.every_seconds is not None
            and time.monotonic() - self._last_time >= self.every_seconds
        )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                assert isinstance(self.store, MerkleLog)
                if self._due((await self.store.tree_head()).size):
                    await self.checkpoint()
            except ErpozError as exc:
                self._report(exc)

    async def checkpoint_if_grown(self) -> Checkpoint | None:
        try:
            assert isinstance(self.store, MerkleLog)
            if (await self.store.tree_head()).size > self._last_size:
                return await self.checkpoint()
        except ErpozError as exc:
            self._report(exc)
        return None

    async def checkpoint(self) -> Checkpoint:
        cp = await sign_checkpoint(self.store, self.key)
        await write_checkpoint(cp, self.sink, self.witness)
        self._last_size, self._last_time = cp.size, time.monotonic()
        self.written.append(cp)
        return cp

    def _report(self, exc: ErpozError) -> None:
        if self.on_error is not None:
            self.on_error(exc)


async def write_checkpoint(
    cp: Checkpoint, sink: CheckpointLog | None, witness: str | None
) -> Sequence[str]:
    """Keep ``cp`` in the sink, then send it to the witness; what was written, by name."""
    done = []
    if sink is not None:
        done.append(str(sink.append(cp)))
    if witness is not None:
        await send_to_witness(witness, cp)
        done.append(witness)
    return done
