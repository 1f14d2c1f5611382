"""Guard registry: the built-ins resolve through the ``erpoz.guards`` entry points, ad-hoc
guards through a ``module:attr`` path, and every mistake is a ConfigError with file, line
and the kinds that exist."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from erpoz.errors import ConfigError
from erpoz.guards import (
    Finding,
    GroundednessGuard,
    InjectionClassifier,
    InjectionDetector,
    LanguageGuard,
    LengthGuard,
    PIIDetector,
    SchemaGuard,
    ToxicityGuard,
    build_guard,
    known_guards,
)
from erpoz.guards._registry import GROUP, _entry_points

BUILT_IN = (
    "grounded",
    "injection",
    "injection_model",
    "language",
    "length",
    "pii",
    "schema",
    "toxicity",
)


class ShoutGuard:
    """An ad-hoc guard: flags text written in capitals."""

    def __init__(self, *, min_letters: int = 5, name: str = "shout") -> None:
        self.name = name
        self.min_letters = min_letters

    def check(self, text: str) -> tuple[Finding, ...]:
        letters = [c for c in text if c.isalpha()]
        if len(letters) >= self.min_letters and all(c.isupper() for c in letters):
            return (Finding(self.name, "shouting", 0, len(text), text, 1.0),)
        return ()


class Answer(BaseModel):
    text: str


def not_a_guard(**params: Any) -> object:
    return object()


def test_the_built_ins_are_entry_points() -> None:
    eps = _entry_points()
    assert set(BUILT_IN) <= set(known_guards()) and known_guards() == sorted(known_guards())
    classes = {
        "grounded": GroundednessGuard,
        "injection": InjectionDetector,
        "injection_model": InjectionClassifier,
        "language": LanguageGuard,
        "length": LengthGuard,
        "pii": PIIDetector,
        "schema": SchemaGuard,
        "toxicity": ToxicityGuard,
    }
    for kind, cls in classes.items():
        assert eps[kind].group == GROUP
        assert eps[kind].load() is cls


@pytest.mark.parametrize(
    ("kind", "params", "cls"),
    [
        ("pii", {"kinds": ["email"], "min_score": 0.7}, PIIDetector),
        ("injection", {"threshold": 0.6}, InjectionDetector),
        ("injection_model", {"head": "prompt"}, InjectionClassifier),
        ("toxicity", {"threshold": 0.9}, ToxicityGuard),
        ("language", {"allowed": ["en", "de"], "min_chars": 30}, LanguageGuard),
        ("length", {"max_chars": 2000, "max_tokens": 400}, LengthGuard),
        ("grounded", {"threshold": 0.6}, GroundednessGuard),
        ("schema", {"schema": f"{__name__}:Answer"}, SchemaGuard),
        ("schema", {"schema": {"type": "object", "required": ["text"]}}, SchemaGuard),
    ],
)
def test_built_ins_are_made_from_yaml_params(kind: str, params: dict[str, Any], cls: type) -> None:
    if kind == "toxicity":
        pytest.importorskip("profanity_check", reason="needs erpoz[local]")
    if kind == "language":
        pytest.importorskip("lingua", reason="needs erpoz[local]")
    guard = build_guard(kind, params)
    assert type(guard) is cls
    assert guard.name == kind


def test_the_schema_params_work() -> None:
    by_path = build_guard("schema", {"schema": f"{__name__}:Answer"})
    assert by_path.check('{"text": "hi"}') == ()
    assert by_path.check('{"txt": "hi"}')[0].detail.startswith("text: Field required")
    inline = build_guard("schema", {"schema": {"type": "object", "required": ["text"]}})
    assert inline.check("{}")[0].detail == "(root): 'text' is a required property"


def test_a_module_attr_path_names_an_ad_hoc_guard() -> None:
    guard = build_guard(f"{__name__}:ShoutGuard", {"min_letters": 3})
    assert isinstance(guard, ShoutGuard) and guard.min_letters == 3
    assert [f.kind for f in guard.check("STOP IT NOW")] == ["shouting"]
    assert guard.check("Stop it now") == ()


def expect(kind: str, params: Any, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_guard(kind, params, file="erpoz.yaml", line=12)
    message = str(info.value)
    assert message.startswith("erpoz.yaml:12: ")
    assert (info.value.file, info.value.line) == ("erpoz.yaml", 12)
    for fragment in fragments:
        assert fragment in message, message
    return info.value


KNOWN = "known guard kinds: " + ", ".join(sorted(BUILT_IN))


def test_an_unknown_kind() -> None:
    expect("profanity", {}, "unknown guard 'profanity'", KNOWN, "'module:attr' path")


def test_wrong_params() -> None:
    expect("toxicity", {"treshold": 0.5}, "guard 'toxicity': wrong params", "treshold", KNOWN)
    expect("length", {"max_chars": "many"}, "max_chars must be a whole number", KNOWN)
    expect("length", {}, "it takes: max_chars, min_chars, max_tokens, tokenizer, name")
    expect("injection", {"threshold": 2}, "threshold must be in (0, 1]")
    expect("injection", ["threshold"], "params must be a mapping")


def test_a_bad_value_is_a_config_error_too() -> None:
    pytest.importorskip("lingua", reason="needs erpoz[local]")
    expect("language", {"allowed": ["en", "xx"]}, "unknown language code 'xx'")
    expect("schema", {"schema": "nowhere_xyz:Model"}, "cannot import schema 'nowhere_xyz:Model'")


def test_bad_module_paths() -> None:
    expect("nowhere_xyz:Guard", {}, "cannot import guard 'nowhere_xyz:Guard'", KNOWN)
    expect(f"{__name__}:Missing", {}, "no 'Missing' in it", KNOWN)


def test_a_factory_must_make_a_guard() -> None:
    expect(f"{__name__}:not_a_guard", {}, "returned object, which has no 'name'", KNOWN)
    expect(f"{__name__}:BUILT_IN", {}, "is not a class or factory function", KNOWN)
