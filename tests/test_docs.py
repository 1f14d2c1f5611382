"""The documentation's examples run and say what they print; the CLI it documents exists."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from erpoz.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONCEPTS = ROOT / "docs" / "concepts.md"
MODELS = ROOT / "docs" / "models.md"
GOVERNANCE = ROOT / "docs" / "governance.md"
CLI_DOC = ROOT / "docs" / "cli.md"

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"(?:^|[\s$/])erpoz[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?", re.M)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def run_printing(code: str, filename: str, namespace: dict[str, object] | None = None) -> str:
    """Execute ``code`` in a fresh namespace (or the one given) and return what it printed."""
    ns: dict[str, object] = namespace if namespace is not None else {"__name__": "readme_example"}
    buf = io.StringIO()
    # dont_inherit: the example must not pick up this module's `from __future__ import annotations`
    with contextlib.redirect_stdout(buf):
        exec(compile(code, filename, "exec", dont_inherit=True), ns)
    return buf.getvalue()


def test_readme_quick_start_prints_what_the_readme_shows() -> None:
    blocks = fenced_blocks(README.read_text(encoding="utf-8"))
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    code = blocks[index][1]
    assert index + 1 < len(blocks) and blocks[index + 1][0] == "text", (
        "the README's first ```python block must be followed by a ```text block of its output"
    )
    assert "store=" not in code, "the quick start must run on the default memory store"
    printed = run_printing(code, "README.md (quick start)")
    assert printed.strip() == blocks[index + 1][1].strip()


def test_concepts_examples_run() -> None:
    """docs/concepts.md says its Python blocks run as written, in order, in one session."""
    blocks = fenced_blocks(CONCEPTS.read_text(encoding="utf-8"))
    python = [body for lang, body in blocks if lang == "python"]
    assert python
    namespace: dict[str, object] = {"__name__": "docs_concepts"}
    for i, block in enumerate(python, start=1):
        run_printing(block, f"docs/concepts.md (python block {i})", namespace)


def test_durable_examples_run_and_print_what_the_page_shows() -> None:
    """docs/durable.md: its Python block runs and prints the text block after it."""
    page = ROOT / "docs" / "durable.md"
    blocks = fenced_blocks(page.read_text(encoding="utf-8"))
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    printed = run_printing(blocks[index][1], "docs/durable.md (python block 1)")
    assert blocks[index + 1][0] == "text"
    assert printed.strip() == blocks[index + 1][1].strip()


def test_governance_examples_run() -> None:
    """docs/governance.md's Python blocks run as written, in order, in one session."""
    blocks = fenced_blocks(GOVERNANCE.read_text(encoding="utf-8"))
    python = [body for lang, body in blocks if lang == "python"]
    assert len(python) >= 2
    namespace: dict[str, object] = {"__name__": "docs_governance"}
    for i, block in enumerate(python, start=1):
        run_printing(block, f"docs/governance.md (python block {i})", namespace)


def test_models_examples_run() -> None:
    """docs/models.md says the same of its Python blocks: in order, in one session, offline."""
    pytest.importorskip("numpy", reason="the semantic router and the reader need erpoz[local]")
    from erpoz.models import _guard

    blocks = fenced_blocks(MODELS.read_text(encoding="utf-8"))
    python = [body for lang, body in blocks if lang == "python"]
    assert python
    namespace: dict[str, object] = {"__name__": "docs_models"}
    blocked = _guard._blocked  # the page calls block_real_providers(); leave it as it was
    try:
        for i, block in enumerate(python, start=1):
            run_printing(block, f"docs/models.md (python block {i})", namespace)
    finally:
        _guard.block_real_providers(blocked)


def documented_commands(path: Path, *, inline: bool = True) -> set[tuple[str, ...]]:
    """Every ``erpoz SUBCOMMAND`` (``erpoz GROUP SUBCOMMAND`` for the groups ``runs``,
    ``models``, ``stats``) named in code in a Markdown file: in fenced blocks other than Python
    and JSON, and with ``inline`` in `inline code` too."""
    text = path.read_text(encoding="utf-8")
    code = [body for lang, body in fenced_blocks(text) if lang not in ("python", "json")]
    if inline:
        code += _INLINE.findall(_FENCE.sub("", text))
    groups = command_groups()
    found: set[tuple[str, ...]] = set()
    for snippet in code:
        for m in _COMMAND.finditer(snippet):
            first, second = m.group(1), m.group(2)
            if first in groups and second:
                found.add((first, second))
            elif first not in groups:
                found.add((first,))
    return found


def command_groups() -> set[str]:
    """The commands that have subcommands (``runs``, ``models``, ``stats``)."""
    group = typer.main.get_command(app)
    return {
        name
        for name, cmd in getattr(group, "commands", {}).items()
        if getattr(cmd, "commands", None)
    }


def existing_commands() -> set[tuple[str, ...]]:
    group = typer.main.get_command(app)
    out: set[tuple[str, ...]] = set()
    for name, cmd in getattr(group, "commands", {}).items():
        sub = getattr(cmd, "commands", None)
        if sub:
            out.update((name, s) for s in sub)
        else:
            out.add((name,))
    return out


# The README's prose also names commands of later releases (`erpoz audit verify`); its code
# blocks must only show commands that exist.
@pytest.mark.parametrize(
    ("doc", "inline"), [(CLI_DOC, True), (README, False)], ids=["cli", "readme"]
)
def test_documented_commands_exist(doc: Path, inline: bool) -> None:
    commands = documented_commands(doc, inline=inline)
    assert commands, f"no erpoz commands found in {doc.name}"
    runner = CliRunner()
    for command in sorted(commands):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (
            f"{doc.name} names `erpoz {' '.join(command)}`, but `--help` exits "
            f"{result.exit_code}: {result.output}"
        )


def test_cli_doc_covers_every_command() -> None:
    missing = existing_commands() - documented_commands(CLI_DOC)
    assert not missing, f"docs/cli.md does not describe: {sorted(missing)}"


def test_scale_out_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/scale-out.md's Python example, on a SQLite file instead of the PostgreSQL it
    names (the example's code is otherwise run as written)."""
    text = (ROOT / "docs" / "scale-out.md").read_text(encoding="utf-8")
    [code] = [body for lang, body in fenced_blocks(text) if lang == "python" and "submit" in body]
    url = "postgresql://erpoz@db.internal:5432/erpoz"
    assert url in code and "examples/triage.yaml" in code  # a file the repository ships
    code = code.replace(url, str(tmp_path / "runs.db"))
    monkeypatch.chdir(ROOT)
    assert run_printing(code, "docs/scale-out.md").strip() == "succeeded 1"


def test_tools_examples_run_and_print_what_the_page_shows() -> None:
    """docs/tools.md's Python blocks run in order, in one session, and print the text block
    after each; its project file is the one examples/ ships."""
    blocks = fenced_blocks((ROOT / "docs" / "tools.md").read_text(encoding="utf-8"))
    namespace: dict[str, object] = {"__name__": "docs_tools"}
    ran = 0
    for i, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        printed = run_printing(body, f"docs/tools.md (python block {i})", namespace)
        ran += 1
        if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
            assert printed.strip() == blocks[i + 1][1].strip(), f"python block {i}"
    assert ran >= 4
    [project] = [body for lang, body in blocks if lang == "yaml"]
    assert project == (ROOT / "examples" / "tools.yaml").read_text(encoding="utf-8")


def test_memory_examples_run() -> None:
    """docs/memory.md's Python blocks run as written, in order, in one session (offline:
    MiniLM ships in a package); the search finds what the page says."""
    pytest.importorskip("sentence_transformers", reason="the memory needs erpoz[local]")
    blocks = fenced_blocks((ROOT / "docs" / "memory.md").read_text(encoding="utf-8"))
    python = [body for lang, body in blocks if lang == "python"]
    namespace: dict[str, object] = {"__name__": "docs_memory"}
    printed = [
        run_printing(block, f"docs/memory.md (python block {i})", namespace)
        for i, block in enumerate(python, start=1)
    ]
    assert printed[1].strip() == "kettle-manual.md#7"
    assert printed[2].strip() == "['user', 'assistant']"
