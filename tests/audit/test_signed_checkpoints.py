"""Signed checkpoints: keys, the signed text, where they are kept (a file, a directory, an HTTP
witness: a real local server), automatic checkpoints while runs are recorded, and the
``audit`` section of erpoz.yaml."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.witness import Witness
from erpoz import Engine, Flow, step
from erpoz.audit import verify
from erpoz.audit.checkpoints import (
    AutoCheckpointer,
    Checkpoint,
    CheckpointError,
    CheckpointLog,
    PublicKey,
    SigningKey,
    generate_key,
    read_checkpoints,
    send_to_witness,
    sign_checkpoint,
)
from erpoz.audit.settings import audit_settings, project_checkpointer
from erpoz.errors import ConfigError
from erpoz.models._config import parse_config
from erpoz.store import open_store


@step
def double(x: int) -> int:
    return 2 * x


FLOW = Flow("double", inputs={"x": int})
FLOW.output(FLOW.add(double, x=FLOW.input("x")))


def test_a_checkpoint_signs_origin_size_root_and_time(tmp_path: Path) -> None:
    key = generate_key()

    async def main() -> Checkpoint:
        store = open_store(tmp_path / "runs.db")
        try:
            await Engine(store).run(FLOW, {"x": 1})
            return await sign_checkpoint(store, key)
        finally:
            await store.close()

    cp = asyncio.run(main())
    assert cp.size == 4 and cp.key_id == key.key_id and len(cp.signature) == 64
    assert cp.signed_by(key.public_key)
    text = Checkpoint.message(cp.origin, cp.size, cp.root, cp.timestamp_ms).decode()
    assert text.splitlines() == [
        "erpoz-checkpoint/1",
        cp.origin,
        "4",
        cp.root.hex(),
        str(cp.timestamp_ms),
    ]
    again = Checkpoint.from_json(json.loads(json.dumps(cp.to_json())), "here")
    assert again == cp and again.time.endswith("Z")
    for field, value in (("size", 6), ("root", "00" * 32), ("timestamp_ms", cp.timestamp_ms + 1)):
        altered = Checkpoint.from_json({**cp.to_json(), field: value}, "here")
        assert not altered.signed_by(key.public_key), field
    assert not cp.signed_by(generate_key().public_key)


def test_keys_round_trip_through_pem_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    (tmp_path / "k.key").write_bytes(key.pem())
    (tmp_path / "k.pub").write_bytes(key.public_key.pem())
    assert SigningKey.load(tmp_path / "k.key").key_id == key.key_id
    assert PublicKey.load(tmp_path / "k.pub").raw == key.public_key.raw
    assert PublicKey.load(tmp_path / "k.key").key_id == key.key_id  # its public half
    monkeypatch.setenv("AUDIT_KEY", key.pem().decode())
    assert SigningKey.from_env("AUDIT_KEY").key_id == key.key_id
    monkeypatch.delenv("AUDIT_KEY")
    with pytest.raises(CheckpointError, match="AUDIT_KEY is not set"):
        SigningKey.from_env("AUDIT_KEY")
    (tmp_path / "bad.pub").write_text("hello")
    with pytest.raises(CheckpointError, match=r"bad\.pub: not a PEM public key"):
        PublicKey.load(tmp_path / "bad.pub")
    with pytest.raises(CheckpointError, match="cannot read the signing key"):
        SigningKey.load(tmp_path / "missing.key")


def _checkpoints(tmp_path: Path, n: int) -> list[Checkpoint]:
    key = generate_key()

    async def main() -> list[Checkpoint]:
        store = open_store(tmp_path / "runs.db")
        out = []
        try:
            for i in range(n):
                await Engine(store).run(FLOW, {"x": i})
                out.append(await sign_checkpoint(store, key))
        finally:
            await store.close()
        return out

    return asyncio.run(main())


def test_a_sink_appends_lines_or_writes_one_file_each(tmp_path: Path) -> None:
    cps = _checkpoints(tmp_path, 3)
    lines = CheckpointLog(tmp_path / "out" / "cps.jsonl")
    folder = CheckpointLog(str(tmp_path / "cps") + "/")
    for cp in cps:
        lines.append(cp)
        folder.append(cp)
    assert len((tmp_path / "out" / "cps.jsonl").read_text().splitlines()) == 3
    assert len(list((tmp_path / "cps").glob("checkpoint-*.json"))) == 3
    assert read_checkpoints(tmp_path / "out" / "cps.jsonl") == cps
    assert read_checkpoints(tmp_path / "cps") == cps
    (tmp_path / "one.json").write_text(json.dumps(cps[1].to_json(), indent=2))
    assert read_checkpoints(tmp_path / "one.json") == [cps[1]]


def test_a_damaged_checkpoint_file_is_named_with_its_line(tmp_path: Path) -> None:
    cps = _checkpoints(tmp_path, 1)
    good = json.dumps(cps[0].to_json())
    bad = tmp_path / "cps.jsonl"
    bad.write_text(f"{good}\nnot json\n")
    with pytest.raises(CheckpointError, match=r"cps.jsonl, line 2: not JSON"):
        read_checkpoints(bad)
    bad.write_text(json.dumps({**cps[0].to_json(), "size": "many"}) + "\n")
    with pytest.raises(CheckpointError, match="line 1: size and timestamp_ms are whole numbers"):
        read_checkpoints(bad)
    bad.write_text(json.dumps({"format": "something else"}) + "\n")
    with pytest.raises(CheckpointError, match="not an erpoz checkpoint"):
        read_checkpoints(bad)
    with pytest.raises(CheckpointError, match="no checkpoint file or directory"):
        read_checkpoints(tmp_path / "nothing-here")


# --- an HTTP witness: a real server on loopback ------------------------------------------------
@pytest.fixture
def witness() -> Iterator[Witness]:
    w = Witness()
    yield w
    w.close()


def test_a_witness_keeps_what_is_posted_and_a_refusal_is_an_error(
    tmp_path: Path, witness: Witness
) -> None:
    (cp,) = _checkpoints(tmp_path, 1)
    asyncio.run(send_to_witness(witness.url, cp))
    assert witness.received == [cp.to_json()]
    witness.status = 507
    with pytest.raises(CheckpointError, match="refused the checkpoint: HTTP 507"):
        asyncio.run(send_to_witness(witness.url, cp))
    with pytest.raises(CheckpointError, match="cannot be reached"):
        asyncio.run(send_to_witness("http://127.0.0.1:9/nothing", cp, timeout=2))


def test_automatic_checkpoints_every_n_events_and_one_at_the_end(
    tmp_path: Path, witness: Witness
) -> None:
    key = generate_key()
    sink = CheckpointLog(tmp_path / "cps.jsonl")

    async def main() -> tuple[AutoCheckpointer, int]:
        store = open_store(tmp_path / "runs.db")
        try:
            engine = Engine(store)
            auto = AutoCheckpointer(
                store, key, sink, witness=witness.url, every_events=20, poll_s=0.01
            )
            async with auto:
                for i in range(12):  # 4 events a run
                    await engine.run(FLOW, {"x": i})
                    await asyncio.sleep(0.03)  # the checkpointer looks every 10 ms
            size = (await store.tree_head()).size
            report = await verify(store, checkpoints=auto.written, public_key=key.public_key)
            assert report.ok and all(c.ok for c in report.checkpoints)
            return auto, size
        finally:
            await store.close()

    auto, size = asyncio.run(main())
    sizes = [cp.size for cp in auto.written]
    assert sizes[-1] == size == 48, "the last one covers everything"
    assert len(sizes) >= 3 and sizes == sorted(set(sizes))
    steps = [b - a for a, b in zip([0, *sizes[:-2]], sizes[:-1], strict=True)]
    assert all(n >= 20 for n in steps), f"one every 20 events or more: {sizes}"
    assert read_checkpoints(tmp_path / "cps.jsonl") == auto.written
    assert [Checkpoint.from_json(d, "w") for d in witness.received] == auto.written


def test_a_checkpoint_every_s_seconds_only_when_there_are_new_events(tmp_path: Path) -> None:
    key = generate_key()

    async def main() -> list[int]:
        store = open_store(tmp_path / "runs.db")
        try:
            auto = AutoCheckpointer(
                store, key, CheckpointLog(tmp_path / "c.jsonl"), every_seconds=0.05
            )
            async with auto:
                await Engine(store).run(FLOW, {"x": 1})
                await asyncio.sleep(0.3)  # several periods, one with new events
            return [cp.size for cp in auto.written]
        finally:
            await store.close()

    assert asyncio.run(main()) == [4]


# --- erpoz.yaml ---------------------------------------------------------------------------------
def _settings(text: str, base: Path) -> Any:
    return audit_settings(parse_config(text, file="erpoz.yaml", base=base))


def test_the_audit_section_resolves_paths_next_to_the_project_file(tmp_path: Path) -> None:
    s = _settings(
        "audit:\n  key: keys/a.key\n  checkpoints: cps/\n  every_events: 100\n"
        "  every_seconds: 60\n  witness: http://127.0.0.1:1/w\n",
        tmp_path,
    )
    assert s.key == tmp_path / "keys" / "a.key" and s.sink().is_dir
    assert (s.every_events, s.every_seconds, s.witness) == (100, 60.0, "http://127.0.0.1:1/w")
    assert _settings("models: {}\n", tmp_path) is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("audit: {}\n", 1, "'audit' is a mapping naming at least"),
        ("audit:\n  key: a.key\n  keyfile: b\n", 3, "audit: unknown key 'keyfile'"),
        ("audit:\n  key: a.key\n  key_env: K\n", 3, r"key \(a file\) or key_env"),
        ("audit:\n  checkpoints: c/\n  every_events: 10\n", 3, "need a signing key"),
        ("audit:\n  key: a.key\n  every_seconds: 5\n", 3, "need somewhere to go"),
        ("audit:\n  key: a.key\n  every_events: 0\n", 3, "expected a number above 0"),
        ("audit:\n  key: a.key\n  every_events: 2.5\n", 3, "expected a whole number"),
        ("audit:\n  witness: ftp://x\n", 2, "expected an http:// or https:// URL"),
        ("audit:\n  key: 12\n", 2, "audit.key: expected a non-empty string"),
    ],
)
def test_a_wrong_audit_section_names_its_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _settings(text, tmp_path)
    assert caught.value.line == line and caught.value.file == "erpoz.yaml"


def test_a_missing_key_file_is_a_config_error_naming_the_project_file(tmp_path: Path) -> None:
    s = _settings("audit:\n  key: nowhere.key\n", tmp_path)
    with pytest.raises(ConfigError, match="cannot read the signing key") as caught:
        s.signing_key()
    assert caught.value.file == "erpoz.yaml" and caught.value.line == 2  # the key's line


def test_the_project_checkpointer_is_made_only_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    (tmp_path / "a.key").write_bytes(key.pem())
    store = open_store(tmp_path / "runs.db")
    try:
        (tmp_path / "erpoz.yaml").write_text("audit:\n  key: a.key\n")
        assert project_checkpointer(store, tmp_path / "erpoz.yaml") is None  # not automatic
        (tmp_path / "erpoz.yaml").write_text(
            "audit:\n  key_env: THE_KEY\n  checkpoints: c.jsonl\n  every_events: 3\n"
        )
        monkeypatch.setenv("THE_KEY", key.pem().decode())
        auto = project_checkpointer(store, tmp_path / "erpoz.yaml")
        assert auto is not None and auto.key.key_id == key.key_id and auto.every_events == 3
        assert project_checkpointer(open_store("memory"), tmp_path / "erpoz.yaml") is None
    finally:
        asyncio.run(store.close())
    assert os.stat(tmp_path / "a.key").st_size > 0
