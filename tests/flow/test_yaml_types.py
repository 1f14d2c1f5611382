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
