"""Every ``erpoz`` command the README and docs/ show runs as written.

Two levels:

- every command shown in a console block (``$ erpoz …`` lines, and the ``erpoz …`` lines of
  blocks that list commands without a prompt) parses (the command and its options exist and
  take the values given), and every file it reads is one the repository ships, or one an
  earlier command of the same page wrote;
- the ``$`` sessions of a page are run in order, in this process, in a fresh copy of the
  repository's ``examples/`` (and with nothing of the caller's ``ERPOZ_*`` environment), and
  each command must exit as its shown output says (0; ``error:`` → not 0; a failed run → 1; a
  waiting run → 3; failed files → 1). A run id a command prints stands, in the commands after
  it, for the id the real run got; the few ids no command on the page makes are made first as
  :data:`SETUP` says. :data:`SKIP` names, with the reason, the few commands that need what this
  machine's tests do not have (a PostgreSQL host named ``db``, a long-running server).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from erpoz.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _ships(relative: str) -> bool:
    """Whether the repository ships ``relative`` (a tracked file, or a folder holding some):
    what a fresh clone has, not what earlier runs left in this working tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", relative],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is there
        return (ROOT / relative).exists()
    return bool(out.strip())


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
RUN_ID = re.compile(r"\br1[0-9a-f]{10,18}\b")
SHELLS = ("console", "sh", "bash", "shell")
#: words that stand for a value of the reader's own in reference listings
PLACEHOLDERS = frozenset({"RUN", "FILE", "STEP", "PATH", "NAME", "QUERY", "FLOW", "URL"})

#: (page, command as written) -> why it is not run here (it is still parsed and its files
#: checked)
SKIP: dict[tuple[str, str], str] = {
    ("cli.md", "erpoz serve examples/triage.yaml"): "a server that runs until stopped "
    "(tests/server/test_listen.py starts it)",
    ("cli.md", "erpoz runs resume r1a21220b9d018487d10"): "resumes a run whose process was "
    "killed (tests/cli/test_crash.py kills and resumes such runs)",
    ("cli.md", "erpoz trace r1a212d22828807bef0e --otlp http://localhost:4318"): "exports to "
    "a collector on localhost:4318 (tests/observe/test_tracing.py exports to a local one)",
    ("cli.md", "erpoz models ping gpt-mini"): "the stub server and erpoz.yaml the page "
    "describes above it (tests/cli/test_models_cli.py pings such models)",
    ("cli.md", "erpoz models ping vllm"): "the erpoz.yaml the page describes above it",
    ("cli.md", "erpoz audit verify --all"): "the second of two: after someone deleted an "
    "event (tests/audit/test_verify.py tampers with stores)",
    ("cli.md", "erpoz audit verify --all --checkpoint audit/checkpoints.jsonl"): "the "
    "project's audit key and checkpoints (tests/cli/test_audit_cli.py runs keygen, checkpoint, "
    "verify --checkpoint, prove and check as a user does)",
    ("governance.md", "erpoz audit keygen -o /etc/erpoz/audit.key"): "writes the machine's "
    "/etc (tests/cli/test_audit_cli.py makes keys in a temporary folder)",
    ("cli.md", "erpoz audit checkpoint"): "the audit section of erpoz.yaml and its key "
    "(tests/cli/test_audit_cli.py)",
    ("cli.md", "erpoz audit check r1a250472ed3ff43c202.proof.json --public-key audit.pub"): "a "
    "bundle an auditor received (tests/cli/test_audit_cli.py proves and checks one)",
    ("cli.md", "erpoz audit lineage r1a212aa2b6e answer"): "a run of a flow of the tests "
    "(tests/cli/test_lineage_cli.py)",
    (
        "cli.md",
        "erpoz submit examples/triage.yaml -i ticket=refund INV-1042 --store "
        "postgresql://erpoz@db/erpoz",
    ): "a PostgreSQL server named db",
    ("cli.md", "erpoz worker --store postgresql://erpoz@db/erpoz -q default -n 16"): "a "
    "PostgreSQL server named db, and a worker runs until stopped",
    ("cli.md", "erpoz migrate .erpoz/erpoz.db postgresql://erpoz@db.internal:5432/erpoz"): "a "
    "PostgreSQL server named db.internal (tests/cli/test_migrate_cli.py migrates into one)",
    ("cli.md", "erpoz review approve r1a242d4ea6d7 --store .erpoz/erpoz.db"): "part of the "
    "migration to db.internal above",
    ("cli.md", "erpoz migrate tampered.db new.db"): "a store someone tampered with "
    "(tests/cli/test_migrate_cli.py makes one)",
    ("scale-out.md", "erpoz migrate .erpoz/erpoz.db $ERPOZ_STORE"): "a PostgreSQL server "
    "named db.internal",
    ("scale-out.md", "erpoz worker -q default -n 16"): "a worker on that PostgreSQL server",
    ("scale-out.md", "erpoz submit examples/triage.yaml -i ticket=refund INV-1042"): "that "
    "PostgreSQL server (tests/engine/test_workers_postgres.py runs workers on a local one)",
    ("scale-out.md", "erpoz runs show r1a2430dc6bb26d1a2f0"): "a run on that server",
    (
        "scale-out.md",
        "erpoz worker --store $ERPOZ_STORE -q default -q gpu -n 16 --config erpoz.yaml",
    ): "a worker on that PostgreSQL server",
    (
        "scale-out.md",
        "erpoz migrate .erpoz/erpoz.db postgresql://erpoz@db.internal:5432/erpoz --dry-run",
    ): "a PostgreSQL server named db.internal",
    (
        "scale-out.md",
        "erpoz migrate .erpoz/erpoz.db postgresql://erpoz@db.internal:5432/erpoz",
    ): "a PostgreSQL server named db.internal",
}

#: page -> run id shown but made by no command on the page -> the commands that make one like
#: it (``{}`` is the id of the run the first command made)
SETUP: dict[str, dict[str, list[list[str]]]] = {
    "cli.md": {
        "r1a21221c1cb": [["run", "examples/triage.yaml", "-i", "ticket=URGENT: INV-3", "--json"]],
        "r1a212aa3c73c": [
            ["run", "examples/triage.yaml", "-i", "ticket=URGENT: INV-4 twice", "--json"],
            ["runs", "resume", "{}", "--approve", "--reviewer", "alice"],
        ],
    },
}

#: files a page names that are not in the repository, and why that is right
ELSEWHERE = {
    "../shared/data/routellm-gsm8k": "a public data set kept outside the repository",
    "erpoz.yaml": "the reader's own project file (the pages show its content)",
    ".erpoz/erpoz.db": "the project's default store, which the reader's own runs make",
    "tampered.db": "the reader's store that someone tampered with (what the example is about)",
    "r1a250472ed3ff43c202.proof.json": "a proof bundle an auditor received (audit prove -o)",
}


@dataclass
class Command:
    page: str
    line: int
    text: str  # as written, after the prompt
    argv: list[str]  # the words after `erpoz`
    env: dict[str, str] = field(default_factory=dict)
    session: bool = False  # a `$` line: run in order
    shown: list[str] = field(default_factory=list)  # the output the page shows

    @property
    def key(self) -> tuple[str, str]:
        return (self.page, " ".join(["erpoz", *self.argv]))

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def _unquote_ansi_c(line: str) -> str:
    """``$'a\\nb'`` (bash's ANSI-C quoting) as an ordinary quoted word."""

    def repl(m: re.Match[str]) -> str:
        return shlex.quote(m.group(1).encode().decode("unicode_escape"))

    return re.sub(r"\$'((?:[^'\\]|\\.)*)'", repl, line)


def _words(line: str) -> tuple[dict[str, str], list[str]] | None:
    """The environment assignments and the words of a shell line (``None``: not erpoz)."""
    words = shlex.split(_unquote_ansi_c(line), comments=True)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words and words[-1] == "&":
        words.pop()
    return (env, words) if words else None


def _joined(lines: list[str]) -> list[str]:
    """Lines continued with a trailing backslash joined, as the shell reads them (the joined
    line keeps the first one's place; the lines it took in become empty)."""
    out: list[str] = []
    into: int | None = None  # the line a continuation goes on
    for line in lines:
        if into is not None:
            out[into] = out[into][:-1] + line.lstrip()
            out.append("")
        else:
            out.append(line)
            into = len(out) - 1
        if not out[into].endswith("\\"):
            into = None
    return out


def commands(page: Path) -> list[Command | tuple[str, list[str], int]]:
    """The page's shell lines in order: erpoz commands, and ``(kind, words, line)`` for the
    other lines of a session (``echo … > FILE``, ``export``, ``pip``)."""
    text = page.read_text(encoding="utf-8")
    out: list[Command | tuple[str, list[str], int]] = []
    for m in FENCE.finditer(text):
        if m.group(1) not in SHELLS:
            continue
        start = text[: m.start()].count("\n") + 2
        lines = _joined(m.group(2).splitlines())
        session = any(line.startswith("$ ") for line in lines)
        current: Command | None = None
        for i, line in enumerate(lines):
            if session and not line.startswith("$ "):
                if current is not None:
                    current.shown.append(line)
                continue
            raw = line[2:] if session else line
            if not session and not re.match(r"^([A-Z_]+=\S+ )*erpoz ", raw):
                continue
            parsed = _words(raw)
            current = None
            if parsed is None:
                continue
            env, words = parsed
            if words[0] == "erpoz":
                current = Command(
                    page.name, start + i, raw.split("  #")[0].strip(), words[1:], env, session
                )
                out.append(current)
            elif session:
                out.append((words[0], words, start + i))
    return out


def parse(argv: list[str]) -> dict[str, object]:
    """The parameters the command line gives (raises the CLI's usage error when it does not
    parse), without running anything."""
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("erpoz", list(argv))
    while hasattr(cmd, "resolve_command"):
        name, sub, rest = cmd.resolve_command(
            ctx, [*getattr(ctx, "_protected_args", []), *ctx.args]
        )
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return dict(ctx.params)


_FILE = re.compile(r"\.(ya?ml|py|json|jsonl|db|pdf|md|html|txt|png)$")
_INPUT_OPTIONS = (
    "--edit",
    "--input-json",
    "-c",
    "--config",
    "--keys",
    "--flow",
    "-f",
    "--file",
    "--image",
)


def read_files(c: Command) -> list[str]:
    """The files a command reads (they must exist)."""
    words, found = c.argv, []
    positional = [
        w
        for i, w in enumerate(words)
        if not w.startswith("-") and (i == 0 or not words[i - 1].startswith("-"))
    ]
    if words[:1] == ["migrate"]:
        positional = positional[1:2]  # the source; the destination is written
    for w in positional:
        ref = w.rsplit(":", 1)[0] if ".py:" in w else w
        if "://" in w or w in PLACEHOLDERS or "$" in w:
            continue
        if _FILE.search(ref) or ("/" in ref and c.argv[0] == "ingest"):
            found.append(ref)
    for i, w in enumerate(words[:-1]):
        if w in _INPUT_OPTIONS and words[i + 1] not in PLACEHOLDERS:
            value = words[i + 1]
            if "://" not in value:
                found.append(value.rsplit(":", 1)[0] if ".py:" in value else value)
    return found


def written_files(c: Command | tuple[str, list[str], int]) -> list[str]:
    if isinstance(c, tuple):
        words = c[1]
        return [words[words.index(">") + 1]] if ">" in words else []
    words = c.argv
    out = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-o", "--output", "--out")]
    if words[:1] == ["migrate"] and len(words) > 2:
        out.append(words[2])
    return out


# --- level 1: everything parses and reads only what ships -------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_documented_commands_parse_and_read_files_that_ship(page: Path) -> None:
    problems = []
    made: set[str] = set()
    for c in commands(page):
        made.update(written_files(c))
        if isinstance(c, tuple):
            continue
        try:
            parse(c.argv)
        except Exception as exc:  # the CLI's usage error
            problems.append(f"{c}: does not parse: {exc}")
        for f in read_files(c):
            if f in made or f in ELSEWHERE or _ships(f):
                continue
            problems.append(f"{c}: reads {f}, which the repository does not ship")
    assert not problems, "\n".join(problems)


def test_skip_and_setup_entries_name_documented_commands() -> None:
    shown = {c.key for p in PAGES for c in commands(p) if isinstance(c, Command)}
    stale = [k for k in SKIP if k not in shown]
    assert not stale, f"SKIP names commands no page shows any more: {stale}"


# --- level 2: the sessions run --------------------------------------------------------------
def _expected(shown: list[str]) -> int | None:
    """The exit code a command's shown output implies (``None``: any but 0)."""
    first = next((line for line in shown if line.strip()), "")
    if first.startswith("error:"):
        return None
    text = "\n".join(shown)
    if re.search(r"^run \S+ failed", text, re.M) or re.search(r"\b[1-9]\d* failed\b", text):
        return 1
    if '"status": "failed"' in text:
        return 1
    if re.search(r"^FAILED", text, re.M):
        return 1
    if re.search(r"^run \S+ waiting", text, re.M) or '"status": "waiting"' in text:
        return 3
    return 0


class Session:
    """One page's commands, run in order in a workspace of their own."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.ids: dict[str, str] = {}
        self.env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ERPOZ_")}
        self.env.update(
            COLUMNS="200", NO_COLOR="1", OPENAI_BASE_URL=None, ERPOZ_BLOCK_REAL_MODELS="network"
        )

    def real(self, word: str) -> str:
        def swap(m: re.Match[str]) -> str:
            doc = m.group(0)
            if doc in self.ids:
                return self.ids[doc]
            for known, real in self.ids.items():
                if known.startswith(doc) or doc.startswith(known):
                    return real[: len(doc)] if len(doc) < len(real) else real
            raise LookupError(doc)

        return RUN_ID.sub(swap, word)

    def invoke(self, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        try:
            with contextlib.chdir(self.workspace):
                res = CliRunner().invoke(app, argv, env={**self.env, **env})
        finally:
            sys.dont_write_bytecode = bytecode
        text = res.stdout + res.stderr
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            text += "".join(traceback.format_exception(*res.exc_info))  # type: ignore[misc]
        return res.exit_code, text

    def learn(self, shown: list[str], printed: str) -> None:
        doc = list(dict.fromkeys(RUN_ID.findall("\n".join(shown))))
        real = list(dict.fromkeys(RUN_ID.findall(printed)))
        if len(doc) == len(real):
            for d, r in zip(doc, real, strict=True):
                self.ids.setdefault(d, r)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


SESSIONS = [p for p in PAGES if any(isinstance(c, Command) and c.session for c in commands(p))]


@pytest.mark.parametrize("page", SESSIONS, ids=lambda p: p.name)
def test_documented_sessions_run_as_written(page: Path, workspace: Path) -> None:
    session = Session(workspace)
    for doc_id, steps in SETUP.get(page.name, {}).items():
        made = ""
        for argv in steps:
            code, printed = session.invoke([a.replace("{}", made) for a in argv], {})
            assert code in (0, 3), f"setup of {doc_id} for {page.name}: {argv}: {printed}"
            made = made or RUN_ID.findall(printed)[0]
        session.ids[doc_id] = made
    problems = []
    for c in commands(page):
        if isinstance(c, tuple):
            kind, words, _line = c
            if kind == "echo" and ">" in words:
                target = workspace / words[words.index(">") + 1]
                target.write_text(" ".join(words[1 : words.index(">")]) + "\n")
            elif kind == "export":
                name, _, value = words[1].partition("=")
                session.env[name] = value
            continue
        if not c.session or c.key in SKIP:
            continue
        outside = [f for f in written_files(c) if Path(f).is_absolute()]
        if outside:  # a test never writes to the machine's own folders (/etc …)
            problems.append(f"{c}: writes {outside[0]}, outside the session (add to SKIP)")
            continue
        try:
            argv = [session.real(w) for w in c.argv]
        except LookupError as exc:
            problems.append(f"{c}: run id {exc} is made by no command above it (add to SETUP)")
            continue
        code, printed = session.invoke(argv, c.env)
        want = _expected(c.shown)
        if "Traceback (most recent call last)" in printed or (
            code == 0 if want is None else code != want
        ):
            problems.append(
                f"{c}: exit {code}, the page implies {'not 0' if want is None else want}\n"
                + printed[-1500:]
            )
        session.learn(c.shown, printed)
    assert not problems, "\n\n".join(problems)
