"""Bad input never gets a traceback: every command that takes a file or an option value is fed
malformed ones — not UTF-8, 10,000 nested brackets, a YAML alias bomb ("billion laughs"),
binary garbage, a folder, a missing file, values out of range — and answers with exit 2 and one
line that names the file or the option.

In process (typer's runner: an exception that escapes the command is a test failure, not a
message), plus the real command for the cases the issue reported, whose stderr must be one line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz.cli import app

from ._helpers import ERPOZ, REPO, TRIAGE, cli_env

BOMB = """\
name: bomb
inputs:
  x:
    type: Any
    default: &l9 [&l8 [&l7 [&l6 [&l5 [&l4 [&l3 [&l2 [&l1 [&l0 [lol, lol, lol, lol, lol, lol,
      lol, lol, lol], *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0], *l1, *l1, *l1, *l1, *l1, *l1, *l1,
      *l1], *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2], *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3], *l4,
      *l4, *l4, *l4, *l4, *l4, *l4, *l4], *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5], *l6, *l6, *l6,
      *l6, *l6, *l6, *l6, *l6], *l7, *l7, *l7, *l7, *l7, *l7, *l7, *l7], *l8, *l8, *l8, *l8, *l8,
      *l8, *l8, *l8]
steps:
  - id: s
    uses: anything_steps:show
    with: {x: "${inputs.x}"}
"""

ANY_FLOW = """\
name: anything
inputs: {x: Any}
steps:
  - id: s
    uses: anything_steps:show
    with: {x: "${inputs.x}"}
"""
ANY_STEPS = """\
from typing import Any


def show(x: Any) -> str:
    return repr(x)
"""


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of malformed files, named by what is wrong with them."""
    d = tmp_path_factory.mktemp("bad")
    (d / "latin1.yaml").write_bytes("name: caf\xe9\nsteps: []\n".encode("latin-1"))
    (d / "latin1.json").write_bytes('{"ticket": "caf\xe9"}'.encode("latin-1"))
    (d / "latin1.keys").write_bytes("k-caf\xe9-0123456789abcd=acme\n".encode("latin-1"))
    (d / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    (d / "deep.yaml").write_text("name: deep\nsteps: " + "[" * 10_000 + "\n")
    (d / "bomb.yaml").write_text(BOMB)
    (d / "garbage.yaml").write_bytes(bytes(range(256)) * 8)
    (d / "folder.yaml").mkdir()
    (d / "anything.yaml").write_text(ANY_FLOW)
    (d / "anything_steps.py").write_text(ANY_STEPS)
    (d / "list.json").write_text("[1, 2]")
    return d


# (arguments, what the one-line error must mention); {d} is the folder of bad files
CASES: list[tuple[str, str]] = [
    # flow files, for every command that loads one
    *[
        (f"{cmd} {{d}}/{name}", name)
        for cmd in ("validate", "run", "submit")
        for name in (
            "latin1.yaml",
            "deep.yaml",
            "bomb.yaml",
            "garbage.yaml",
            "folder.yaml",
            "missing.yaml",
        )
    ],
    ("runs replay RUN --from s --flow {d}/bomb.yaml", "bomb.yaml"),
    ("runs resume RUN --flow {d}/deep.yaml", "deep.yaml"),
    ("audit lineage RUN s --flow {d}/latin1.yaml", "latin1.yaml"),
    ("serve {d}/bomb.yaml", "bomb.yaml"),
    # JSON inputs and edited outputs
    *[
        (f"{cmd} {{d}}/anything.yaml --input-json {{d}}/{name}", f"--input-json {{d}}/{name}")
        for cmd in ("run", "submit")
        for name in ("latin1.json", "deep.json", "garbage.yaml", "folder.yaml", "list.json")
    ],
    ("run {d}/anything.yaml -i x=" + "[" * 10_000, "-i x"),
    ("submit {d}/anything.yaml -i x=" + "[" * 10_000, "-i x"),
    ("run {d}/anything.yaml -i x=" + "[" * 150 + "]" * 150, "-i x"),
    ("runs resume RUN --edit {d}/deep.json", "--edit {d}/deep.json"),
    ("runs resume RUN --edit {d}/latin1.json", "--edit {d}/latin1.json"),
    ("review edit RUN --file {d}/deep.json", "--file {d}/deep.json"),
    ("review edit RUN --file {d}/folder.yaml", "--file {d}/folder.yaml"),
    # project files (erpoz.yaml), policies, keys
    *[
        (f"{cmd} --config {{d}}/{name}", name)
        for cmd in ("models ls", "models ping default", "stats budget", "serve")
        for name in ("latin1.yaml", "deep.yaml", "bomb.yaml", "garbage.yaml", "missing.yaml")
    ],
    ("worker --store {d}/w.db --burst --config {d}/bomb.yaml", "bomb.yaml"),
    *[
        (f"policy check {{d}}/{name}", name)
        for name in (
            "latin1.yaml",
            "deep.yaml",
            "bomb.yaml",
            "garbage.yaml",
            "folder.yaml",
            "missing.yaml",
        )
    ],
    ("serve --keys {d}/latin1.keys", "latin1.keys"),
    ("serve --keys {d}/missing.keys", "missing.keys"),
    # option values
    ("run {d}/anything.yaml -i x=1 --durability bogus", "--durability 'bogus'"),
    ("run {d}/anything.yaml -i x=1 --store bogus://x", "--store 'bogus://x'"),
    ("run {d}/anything.yaml -i x=1 --executor bogus", "unknown executor 'bogus'"),
    ("run {d}/anything.yaml -i x=1 --tag novalue", "--tag 'novalue'"),
    ("run {d}/anything.yaml -i novalue", "-i 'novalue'"),
    ("serve --durability bogus", "--durability 'bogus'"),
    ("serve --store bogus://x", "--store 'bogus://x'"),
    ("serve --log-level bogus", "--log-level 'bogus'"),
    ("serve --port 70000", "--port"),
    ("serve --max-body 1", "--max-body"),
    ("worker --durability bogus", "--durability 'bogus'"),
    ("worker --store memory", "not 'memory'"),
    ("worker -n 0", "--concurrency"),
    ("runs ls --status bogus", "--status 'bogus'"),
    ("runs ls --limit 0", "--limit"),
    ("runs ls --store bogus://x", "--store 'bogus://x'"),
    ("runs resume RUN --approve --reject", "--approve, --reject"),
    ("stats models --since bogus", "--since 'bogus'"),
    ("stats quality --by bogus", "--by 'bogus'"),
    ("stats quality --window 0", "--window"),
    ("stats quality --threshold 7", "--threshold"),
    ("audit export --format bogus", "--format 'bogus'"),
    ("audit export --since bogus", "--since 'bogus'"),
    ("audit export --output {d}/folder.yaml", "--output {d}/folder.yaml"),
    ("audit verify", "give a RUN or --all"),
    ("search x --mode bogus", "--mode"),
    ("search x --top 0", "--top"),
    ("policy check {d}/missing.yaml --at bogus", "--at 'bogus'"),
    ("policy check {d}/missing.yaml --score 7", "--score"),
    ("models ping default --timeout 0", "--timeout"),
    ("models ping default --max-tokens 0", "--max-tokens"),
    ("trace RUN --otlp bogus", "--otlp 'bogus'"),
    ("eval routing --router bogus", "bogus"),
    ("eval routing --data {d}/latin1.yaml", "latin1.yaml"),
    ("migrate {d}/a.db {d}/b.db --batch 0", "--batch"),
    ("ingest --max-mb -1 {d}/latin1.yaml", "--max-mb"),
]


@pytest.mark.parametrize(("args", "named"), CASES, ids=[c[0][:60] for c in CASES])
def test_malformed_files_and_options_exit_2_naming_them(
    bad: Path, tmp_path: Path, args: str, named: str
) -> None:
    argv = args.format(d=bad).split(" ")
    result = CliRunner().invoke(
        app,
        argv,
        env={
            "COLUMNS": "10000",
            "NO_COLOR": "1",
            "ERPOZ_STORE": str(tmp_path / "runs.db"),
            "ERPOZ_CONFIG": "",
            "ERPOZ_MEMORY": str(tmp_path / "memory.db"),
        },
    )
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not escaped, f"{args[:80]}: {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == 2, f"{args[:80]} -> exit {result.exit_code}: {result.output}"
    assert named.format(d=bad) in " ".join(result.output.split()), result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "named"),
    [
        ("validate {d}/bomb.yaml", "bomb.yaml:5: aliases expand the YAML"),
        ("run {d}/latin1.yaml", "latin1.yaml: the flow file is not UTF-8 text"),
        ("models ls --config {d}/latin1.yaml", "the project file is not UTF-8 text"),
        ("run {d}/anything.yaml -i x=" + "[" * 10_000, "nested more than 100 levels deep"),
        (f"run {TRIAGE} -i ticket=x --durability bogus", "--durability 'bogus'"),
    ],
    ids=["alias-bomb", "latin1-flow", "latin1-project", "deep-input", "durability"],
)
def test_the_command_says_it_on_one_line_of_stderr(
    bad: Path, tmp_path: Path, args: str, named: str
) -> None:
    proc = subprocess.run(
        [str(ERPOZ), *args.format(d=bad).split(" ")],
        cwd=REPO,
        env=cli_env(tmp_path, COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
