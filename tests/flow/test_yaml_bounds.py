"""Every YAML erpoz reads is bounded: size, nesting depth, and what aliases expand to. Past a
bound it is a clear error with file and line — not a process that grows past gigabytes
("billion laughs") or dies of RecursionError. Ordinary anchors and aliases still work."""

from __future__ import annotations

from pathlib import Path

import pytest

from erpoz.errors import ConfigError, FlowError
from erpoz.flow._load import load_flow
from erpoz.flow._yaml import MAX_YAML_CHARS, MAX_YAML_DEPTH
from erpoz.models._config import load_config, parse_config
from erpoz.policy import parse_policy


def laughs(levels: int, width: int = 10) -> str:
    """An alias bomb: ``width ** levels`` values once expanded, a few hundred bytes written."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_its_line_before_anything_is_built() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "models: {}\nbomb:\n" + "".join("  " + ln + "\n" for ln in laughs(9).splitlines())
        )
    assert "aliases expand the YAML by more than 100,000 values" in caught.value.message
    assert caught.value.file == "erpoz.yaml" and caught.value.line is not None


def test_expansion_is_counted_without_expanding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "name: bomb\ninputs:\n  x: {type: Any}\n"
        "steps:\n  - {id: s, uses: builtins:len}\n"
        "x:\n" + "".join("  " + ln + "\n" for ln in laughs(40, 2).splitlines())
    )  # 2 ** 40 values once expanded: counted in a moment, never built
    with pytest.raises(FlowError, match="aliases expand the YAML") as caught:
        load_flow(str(bomb))
    assert caught.value.file == str(bomb)


def test_aliases_within_the_bound_work() -> None:
    config = parse_config(
        "models:\n  a: &paid {provider: test, price: {input: 1, output: 2}}\n  b: *paid\n"
        "routers:\n  r: {type: fallback, models: &both [a, b]}\n"
        "  s: {type: cheapest, models: *both}\n",
        extra_providers={"test": lambda spec: None},
    )
    assert config.models["a"].price == config.models["b"].price
    assert config.routers["s"].members == ["a", "b"]


def test_a_recursive_alias_is_an_error() -> None:
    with pytest.raises(ConfigError, match="refers to the value that contains it"):
        parse_policy("rules: &r [*r]\n")


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_nesting_past_the_bound_is_an_error_not_a_recursion_error(opening: str) -> None:
    text = "rules: " + opening * 10_000
    with pytest.raises(ConfigError, match=f"nested more than {MAX_YAML_DEPTH} levels deep") as e:
        parse_policy(text, file="p.yaml")
    assert (e.value.file, e.value.line) == ("p.yaml", 1)


def test_aliases_that_stack_depth_are_counted_too() -> None:
    deep = "[" * 60 + "x" + "]" * 60
    text = f"a: &a {deep}\nb: &b [{'[' * 50}*a{']' * 50}]\n"  # 60 + 51 levels once expanded
    with pytest.raises(ConfigError, match="aliases make the YAML more than 100 levels deep"):
        parse_config(text)


def test_a_file_past_the_size_bound_is_an_error(tmp_path: Path) -> None:
    big = tmp_path / "erpoz.yaml"
    big.write_text("# " + "x" * MAX_YAML_CHARS + "\nmodels: {}\n")
    with pytest.raises(ConfigError, match="characters long, more than") as caught:
        load_config(big)
    assert caught.value.file == str(big)


def test_a_file_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_bytes(b"name: ok\n# caf\xe9\nsteps: []\n")
    with pytest.raises(FlowError) as caught:
        load_flow(str(path))
    assert caught.value.file == str(path)
    assert "not UTF-8 text (byte 0xe9 on line 2)" in caught.value.message
