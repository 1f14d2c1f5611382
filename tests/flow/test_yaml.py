"""YAML flow files: the same flows as the Python API; every error names the file and the line."""

import importlib
import textwrap
import uuid
from pathlib import Path

import pytest

import erpoz
from erpoz import FlowError, load_flow
from erpoz.flow._yaml import load_yaml_flow

STEPS = """
from dataclasses import dataclass


@dataclass
class Draft:
    text: str
    version: int
    valid: bool


def shout(text: str) -> str:
    return text.upper()


def count(text: str) -> int:
    return len(text)


def add(x: int, y: int = 1) -> int:
    return x + y


def numbers(n: int) -> list[int]:
    return list(range(n))


def total(xs: list[int]) -> int:
    return sum(xs)


def classify(text: str) -> str:
    return "billing" if "refund" in text else "other"


def label(text: str) -> str:
    return "label:" + text


def start(title: str) -> Draft:
    return Draft(text=title, version=0, valid=False)


def revise(draft: Draft, target: int) -> Draft:
    v = draft.version + 1
    return Draft(text=draft.text + "+", version=v, valid=v >= target)


NOT_A_FUNCTION = 3
"""


@pytest.fixture
def mod(tmp_path: Path) -> str:
    """A step module next to the flow files, under a name unique to this test."""
    name = f"yamlsteps_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(STEPS, encoding="utf-8")
    importlib.invalidate_caches()
    return name


def write(tmp_path: Path, name: str, text: str, mod: str = "") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n").replace("MOD", mod), encoding="utf-8")
    return path


def load_error(path: Path) -> FlowError:
    with pytest.raises(FlowError) as info:
        load_flow(str(path)).compile()
    return info.value


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line of ``path`` containing ``needle``."""
    for i, text in enumerate(path.read_text().splitlines(), 1):
        if needle in text:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


# --- valid flows ---------------------------------------------------------------------------


def test_inputs_defaults_and_output(tmp_path, mod):
    path = write(
        tmp_path,
        "basic.yaml",
        """
        name: basic
        description: counts and adds
        inputs:
          text: str
          extra: {type: int, default: 10}
        steps:
          - id: n
            uses: MOD:count
            with: {text: "${inputs.text}"}
          - id: plus
            uses: MOD:add
            with:
              x: ${n}
              y: ${inputs.extra}
        output: ${plus}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert flow.name == "basic"
    assert flow.description == "counts and adds"
    assert flow.source == str(path.resolve())
    assert erpoz.run(flow, text="abc").output == 13
    assert erpoz.run(flow, text="abc", extra=1).output == 4


def test_name_defaults_to_the_file_stem(tmp_path, mod):
    path = write(
        tmp_path,
        "stemmed.yaml",
        """
        steps:
          - id: n
            uses: MOD:count
            with: {text: hello}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert flow.name == "stemmed"
    assert erpoz.run(flow).output == 5


def test_typed_inputs(tmp_path, mod):
    path = write(
        tmp_path,
        "typed.yaml",
        """
        name: typed
        inputs:
          xs: list[int]
          maybe: {type: int | None, default: null}
        steps:
          - id: sum
            uses: MOD:total
            with: {xs: "${inputs.xs}"}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert flow.inputs["xs"].type == list[int]
    assert flow.inputs["maybe"].type == int | None
    assert erpoz.run(flow, xs=[1, 2, 3]).output == 6


def test_when_branches_and_first_of(tmp_path, mod):
    path = write(
        tmp_path,
        "branch.yaml",
        """
        name: branch
        inputs:
          text: str
        steps:
          - id: kind
            uses: MOD:classify
            with: {text: "${inputs.text}"}
          - id: billing
            uses: MOD:shout
            when: ${kind} == "billing"
            with: {text: "${inputs.text}"}
          - id: other
            uses: MOD:label
            when: ${kind} != "billing"
            with: {text: "${inputs.text}"}
        output: ${first_of(billing, other)}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert erpoz.run(flow, text="a refund").output == "A REFUND"
    assert erpoz.run(flow, text="hi").output == "label:hi"


def test_when_truthy_and_not(tmp_path, mod):
    path = write(
        tmp_path,
        "truthy.yaml",
        """
        name: truthy
        inputs:
          go: bool
        steps:
          - id: go_on
            uses: MOD:shout
            when: ${inputs.go}
            with: {text: "yes"}
          - id: stop
            uses: MOD:shout
            when: not ${inputs.go}
            with: {text: "no"}
        output: ${first_of(go_on, stop)}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert erpoz.run(flow, go=True).output == "YES"
    assert erpoz.run(flow, go=False).output == "NO"


def test_map_with_concurrency(tmp_path, mod):
    path = write(
        tmp_path,
        "map.yaml",
        """
        name: mapped
        inputs:
          n: int
        steps:
          - id: ns
            uses: MOD:numbers
            with: {n: "${inputs.n}"}
          - id: each
            uses: MOD:add
            map: ${ns}
            item: x
            concurrency: 2
            with: {y: 100}
          - id: sum
            uses: MOD:total
            with: {xs: "${each}"}
        output: ${each}
    """,
        mod,
    )
    flow = load_flow(str(path))
    plan = flow.compile()
    assert plan.node("each").concurrency == 2
    assert erpoz.run(flow, n=4).output == [100, 101, 102, 103]


def test_fan_in_with_a_list_of_refs(tmp_path, mod):
    path = write(
        tmp_path,
        "fanin.yaml",
        """
        name: fanin
        inputs:
          text: str
        steps:
          - id: a
            uses: MOD:count
            with: {text: "${inputs.text}"}
          - id: b
            uses: MOD:add
            with: {x: "${a}"}
          - id: sum
            uses: MOD:total
            with:
              xs: ["${a}", "${b}", 1]
    """,
        mod,
    )
    assert erpoz.run(load_flow(str(path)), text="abcd").output == 4 + 5 + 1


def test_loop_until_a_field(tmp_path, mod):
    path = write(
        tmp_path,
        "loop.yaml",
        """
        name: looped
        inputs:
          title: str
          target: int
        steps:
          - id: first
            uses: MOD:start
            with: {title: "${inputs.title}"}
          - id: fix
            uses: MOD:revise
            loop:
              state: draft
              init: ${first}
              until: valid
              max_iterations: 5
            with: {target: "${inputs.target}"}
        output: ${fix.version}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert erpoz.run(flow, title="t", target=3).output == 3
    assert erpoz.run(flow, title="t", target=50).output == 5


def test_loop_init_constant_is_a_value_of_the_state_type(tmp_path, mod):
    # A YAML file can only spell a dataclass as a mapping; compile() accepts it for the
    # Draft-typed state, so the step must receive a Draft, not the raw dict.
    path = write(
        tmp_path,
        "loopinit.yaml",
        """
        name: loopinit
        steps:
          - id: fix
            uses: MOD:revise
            loop:
              state: draft
              init: {text: d, version: 0, valid: false}
              until: valid
              max_iterations: 5
            with: {target: 2}
        output: ${fix.text}
    """,
        mod,
    )
    result = erpoz.run(load_flow(str(path)))
    assert result.error is None
    assert result.output == "d++"


def test_sub_flow_file(tmp_path, mod):
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        inputs:
          text: str
          y: {type: int, default: 1}
        steps:
          - id: n
            uses: MOD:count
            with: {text: "${inputs.text}"}
          - id: plus
            uses: MOD:add
            with: {x: "${n}", y: "${inputs.y}"}
    """,
        mod,
    )
    path = write(
        tmp_path,
        "outer.yaml",
        """
        name: outer
        inputs:
          text: str
        steps:
          - id: sub
            flow: inner.yaml
            with: {text: "${inputs.text}", y: 1000}
          - id: again
            uses: MOD:add
            with: {x: "${sub}"}
        output: ${again}
    """,
        mod,
    )
    flow = load_flow(str(path))
    assert erpoz.run(flow, text="abc").output == 1004


def test_retry_timeout_cache_options(tmp_path, mod):
    path = write(
        tmp_path,
        "opts.yaml",
        """
        name: opts
        steps:
          - id: n
            uses: MOD:count
            retry: {attempts: 3, backoff: 0}
            timeout: 5
            cache: true
            with: {text: abc}
    """,
        mod,
    )
    node = load_flow(str(path)).compile().node("n")
    assert node.retry.attempts == 3
    assert node.timeout == 5
    assert node.cache is True


def test_same_flow_as_the_python_api(tmp_path, mod, monkeypatch):
    path = write(
        tmp_path,
        "same.yaml",
        """
        name: same
        inputs:
          text: str
        steps:
          - id: count
            uses: MOD:count
            with: {text: "${inputs.text}"}
    """,
        mod,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(mod)
    py = erpoz.Flow("same", inputs={"text": str})
    py.add(module.count, text=py.input("text"))
    assert load_flow(str(path)).compile().fingerprint == py.compile().fingerprint


# --- errors: file and line -----------------------------------------------------------------


STEP = "steps:\n  - id: a\n    uses: os:getcwd\n"


@pytest.mark.parametrize(
    ("tail", "line", "said"),
    [
        # a number or a boolean where text is wanted: YAML typed it, quoting fixes it
        ("steps:\n  - id: 1\n    uses: os:getcwd\n", 3, "'id' must be a string, got 1 (YAML"),
        (STEP + "output: yes\n", 5, "'output' must be a string, got True (YAML read a true/false"),
        # a list where a reference is wanted: what the reference looks like
        (STEP + "output: [a, b]\n", 5, "'output' must be a reference like ${step}"),
    ],
)
def test_a_mistyped_value_says_how_to_write_it(tmp_path, tail, line, said):
    path = tmp_path / "typed.yaml"
    path.write_text("name: typed\n" + tail)
    err = load_error(path)
    assert (err.line, err.file) == (line, str(path))
    assert said in err.message, err.message


def test_malformed_yaml_points_at_the_syntax_error(tmp_path):
    path = write(
        tmp_path,
        "bad.yaml",
        """
        name: bad
        steps:
          - id: a
             uses: x:y
    """,
    )
    err = load_error(path)
    assert err.file == str(path)
    assert err.line == 4
    assert "malformed YAML" in err.message
    assert str(err).startswith(f"{path}:4: ")


def test_unknown_top_level_key(tmp_path, mod):
    path = write(
        tmp_path,
        "top.yaml",
        """
        name: top
        stepz:
          - id: a
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
    """,
        mod,
    )
    err = load_error(path)
    assert err.file == str(path)
    assert err.line == 2  # the line of the key, not of its (block) value below it
    assert "unknown key 'stepz'" in err.message
    assert "steps" in err.message


def test_unknown_step_key(tmp_path, mod):
    path = write(
        tmp_path,
        "stepkey.yaml",
        """
        name: stepkey
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
            retries: 3
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 6, "a")
    assert "unknown key 'retries'" in err.message


def test_unknown_module_in_uses(tmp_path):
    path = write(
        tmp_path,
        "nomod.yaml",
        """
        name: nomod
        steps:
          - id: a
            uses: no_such_module_xyz:count
            with: {text: x}
    """,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 4, "a")
    assert "no_such_module_xyz" in err.message


def test_unknown_function_in_uses(tmp_path, mod):
    path = write(
        tmp_path,
        "nofn.yaml",
        """
        name: nofn
        steps:
          - id: a
            with: {text: x}
            uses: MOD:nope
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 5, "a")
    assert "'nope'" in err.message


def test_uses_that_is_not_a_function(tmp_path, mod):
    path = write(
        tmp_path,
        "notfn.yaml",
        """
        name: notfn
        steps:
          - id: a
            uses: MOD:NOT_A_FUNCTION
    """,
        mod,
    )
    err = load_error(path)
    assert (err.line, err.step) == (4, "a")
    assert "not a function" in err.message


def test_ref_to_unknown_step_carries_the_steps_line(tmp_path, mod):
    path = write(
        tmp_path,
        "ghost.yaml",
        """
        name: ghost
        inputs:
          text: str
        steps:
          - id: a
            uses: MOD:count
            with: {text: "${inputs.text}"}
          - id: b
            uses: MOD:add
            with: {x: "${ghost}"}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), line_of(path, "id: b"), "b")
    assert "unknown step 'ghost'" in err.message
    assert str(err).startswith(f"{path}:{err.line}: step 'b': ")


def test_ref_to_unknown_input_carries_the_steps_line(tmp_path, mod):
    path = write(
        tmp_path,
        "noinput.yaml",
        """
        name: noinput
        inputs:
          text: str
        steps:
          - id: a
            uses: MOD:count
            with: {text: "${inputs.txt}"}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.line, err.step) == (line_of(path, "id: a"), "a")
    assert "unknown flow input 'txt'" in err.message


def test_type_mismatch_carries_the_steps_line(tmp_path, mod):
    path = write(
        tmp_path,
        "types.yaml",
        """
        name: types
        inputs:
          text: str
        steps:
          - id: a
            uses: MOD:shout
            with: {text: "${inputs.text}"}

          - id: b
            uses: MOD:add
            with: {x: "${a}"}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), line_of(path, "id: b"), "b")
    assert "expects int" in err.message


def test_cycle_between_two_steps(tmp_path, mod):
    path = write(
        tmp_path,
        "cycle.yaml",
        """
        name: cycle
        steps:
          - id: a
            uses: MOD:add
            with: {x: "${b}"}
          - id: b
            uses: MOD:add
            with: {x: "${a}"}
    """,
        mod,
    )
    err = load_error(path)
    assert err.file == str(path)
    assert err.line in (line_of(path, "id: a"), line_of(path, "id: b"))
    assert "cycle" in err.message
    assert "a -> b -> a" in err.message or "b -> a -> b" in err.message
    assert "loop" in err.message
    assert "max_iterations" in err.message


def test_bad_when_syntax(tmp_path, mod):
    path = write(
        tmp_path,
        "when.yaml",
        """
        name: when
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
            when: a > 3
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 6, "a")
    assert "cannot read condition" in err.message


def test_string_interpolation_is_refused(tmp_path, mod):
    path = write(
        tmp_path,
        "interp.yaml",
        """
        name: interp
        inputs:
          a: str
        steps:
          - id: s
            uses: MOD:shout
            with:
              text: "x ${inputs.a}"
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 8, "s")
    assert "no string interpolation" in err.message


def test_loop_without_max_iterations(tmp_path, mod):
    path = write(
        tmp_path,
        "unbounded.yaml",
        """
        name: unbounded
        steps:
          - id: fix
            uses: MOD:revise
            loop:
              state: draft
              init: {text: d, version: 0, valid: false}
              until: valid
            with: {target: 2}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.step) == (str(path), "fix")
    assert err.line in (5, 6)  # 'loop:' or the first line of its mapping
    assert "max_iterations" in err.message


def test_loop_with_zero_max_iterations(tmp_path, mod):
    path = write(
        tmp_path,
        "zero.yaml",
        """
        name: zero
        steps:
          - id: fix
            uses: MOD:revise
            loop: {state: draft, init: {text: d, version: 0, valid: false}, max_iterations: 0}
            with: {target: 2}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 5, "fix")  # the line of the loop
    assert "loop: 'max_iterations' must be a whole number >= 1, got 0" in err.message


def test_duplicate_key(tmp_path, mod):
    path = write(
        tmp_path,
        "dup.yaml",
        """
        name: dup
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
            uses: MOD:shout
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line) == (str(path), 6)
    assert "duplicate key 'uses'" in err.message


def test_duplicate_step_id(tmp_path, mod):
    path = write(
        tmp_path,
        "dupid.yaml",
        """
        name: dupid
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
          - id: a
            uses: MOD:count
            with: {text: y}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line, err.step) == (str(path), 6, "a")


def test_unbound_input_carries_the_steps_line(tmp_path, mod):
    path = write(
        tmp_path,
        "unbound.yaml",
        """
        name: unbound
        steps:
          - id: n
            uses: MOD:count
          - id: plus
            uses: MOD:add
            with: {x: "${n}"}
          - id: sum
            uses: MOD:total
            with: {xs: ["${n}", "${plus}"]}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.line, err.step) == (3, "n")
    assert "'text'" in err.message


def test_uses_and_flow_together_are_refused(tmp_path, mod):
    path = write(
        tmp_path,
        "both.yaml",
        """
        name: both
        steps:
          - id: a
            uses: MOD:count
            flow: other.yaml
    """,
        mod,
    )
    err = load_error(path)
    assert (err.line, err.step) == (3, "a")


def test_error_inside_a_sub_flow_names_the_sub_flow_file(tmp_path, mod):
    inner = write(
        tmp_path,
        "inner_bad.yaml",
        """
        name: inner
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
            colour: red
    """,
        mod,
    )
    path = write(
        tmp_path,
        "outer_bad.yaml",
        """
        name: outer
        steps:
          - id: sub
            flow: inner_bad.yaml
    """,
        mod,
    )
    err = load_error(path)
    assert Path(err.file).resolve() == inner.resolve()
    assert err.line == 6


def test_sub_flows_that_include_each_other_are_refused(tmp_path, mod):
    write(
        tmp_path,
        "ping.yaml",
        """
        name: ping
        steps:
          - id: p
            flow: pong.yaml
    """,
    )
    path = write(
        tmp_path,
        "pong.yaml",
        """
        name: pong
        steps:
          - id: q
            flow: ping.yaml
    """,
    )
    err = load_error(path)
    assert "include each other" in str(err)


def test_missing_file(tmp_path):
    err = load_error(tmp_path / "nowhere.yaml")
    assert err.file == str(tmp_path / "nowhere.yaml")
    assert "cannot read" in err.message


def test_bad_input_type(tmp_path, mod):
    path = write(
        tmp_path,
        "badtype.yaml",
        """
        name: badtype
        inputs:
          text: str
          n: integer_please
        steps:
          - id: a
            uses: MOD:count
            with: {text: "${inputs.text}"}
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line) == (str(path), 4)
    assert "input 'n'" in err.message


def test_steps_must_be_a_non_empty_list(tmp_path):
    path = write(
        tmp_path,
        "nosteps.yaml",
        """
        name: nosteps
        steps: []
    """,
    )
    err = load_error(path)
    assert (err.file, err.line) == (str(path), 2)


def test_output_must_be_a_reference(tmp_path, mod):
    path = write(
        tmp_path,
        "out.yaml",
        """
        name: out
        steps:
          - id: a
            uses: MOD:count
            with: {text: x}
        output: a
    """,
        mod,
    )
    err = load_error(path)
    assert (err.file, err.line) == (str(path), 6)


def test_load_yaml_flow_accepts_a_path(tmp_path, mod):
    path = write(
        tmp_path,
        "p.yaml",
        """
        steps:
          - id: a
            uses: MOD:count
            with: {text: xyz}
    """,
        mod,
    )
    assert erpoz.run(load_yaml_flow(path)).output == 3
