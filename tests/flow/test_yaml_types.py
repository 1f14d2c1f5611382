"""Types as written in flow files, and messages that speak YAML to YAML users."""

import typing
from pathlib import Path

import pytest

from erpoz import FlowError, load_flow
from erpoz.flow._yaml import parse_type


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list[str] | None", typing.Optional[list[str]]),  # noqa: UP045
        ("tuple[int, ...]", tuple[int, ...]),
        ("dict[str, list[int]]", dict[str, list[int]]),
        ("int | str", typing.Union[int, str]),  # noqa: UP007
        ('Literal["a", "b"]', typing.Literal["a", "b"]),
    ],
)
def test_type_syntax(text: str, expected: object) -> None:
    assert parse_type(text) == expected


def test_several_final_steps_in_yaml_say_to_add_output(tmp_path: Path) -> None:
    (tmp_path / "ytsteps.py").write_text("def one(x: int) -> int:\n    return x\n")
    (tmp_path / "f.yaml").write_text(
        "name: f\ninputs: {x: int}\nsteps:\n"
        "  - {id: a, uses: 'ytsteps:one', with: {x: '${inputs.x}'}}\n"
        "  - {id: b, uses: 'ytsteps:one', with: {x: '${inputs.x}'}}\n"
    )
    with pytest.raises(FlowError, match=r"add 'output: \$\{step\}'") as err:
        load_flow(str(tmp_path / "f.yaml")).compile()
    assert err.value.file is not None


def test_missing_attribute_of_a_python_flow_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "pf.py").write_text("x = 1\n")
    with pytest.raises(FlowError, match="has no attribute 'flow'"):
        load_flow(f"{tmp_path / 'pf.py'}:flow")


def test_a_step_returning_bytes_runs_and_resumes(tmp_path: Path) -> None:
    """docs/yaml.md lists ``bytes``: binary data (not UTF-8) is recorded as base64 and read
    back as the same bytes, by the next step and by a run that resumes."""
    import asyncio

    from erpoz import Engine, open_store

    (tmp_path / "binsteps.py").write_text(
        "def raw(n: int) -> bytes:\n    return bytes(range(n))[::-1]\n\n"
        "def size(data: bytes) -> int:\n    return len(data) + data[0]\n\n"
        "def pause(data: bytes) -> bytes:\n"
        "    from erpoz import ReviewRequired\n"
        "    raise ReviewRequired('look at it', output=data)\n"
    )
    (tmp_path / "bin.yaml").write_text(
        "name: bin\ninputs: {n: int}\nsteps:\n"
        "  - {id: raw, uses: 'binsteps:raw', with: {n: '${inputs.n}'}}\n"
        "  - {id: pause, uses: 'binsteps:pause', with: {data: '${raw}'}}\n"
        "  - {id: size, uses: 'binsteps:size', with: {data: '${pause}'}}\n"
        "output: ${size}\n"
    )
    plan = load_flow(str(tmp_path / "bin.yaml")).compile()

    async def main() -> tuple[str, object, str | None]:
        from erpoz.engine import Decision

        store = open_store(tmp_path / "runs.db")
        try:
            first = await Engine(store).run(plan, {"n": 256})
            assert first.status == "waiting", first.error
            done = await Engine(store).resume(first.run_id, plan, decision=Decision("approve"))
            raw = [e for e in await store.events(first.run_id) if e.step == "raw"]
            payload = next(e.payload for e in raw if e.kind == "step_succeeded")
            return done.status, done.output, payload
        finally:
            await store.close()

    status, output, payload = asyncio.run(main())
    assert status == "succeeded" and output == 256 + 255
    assert payload is not None and payload.startswith('"') and "\\u" not in payload  # base64
