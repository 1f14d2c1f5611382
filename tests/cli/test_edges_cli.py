"""Edges a newcomer meets on the command line: ``runs diff``, ``runs replay --config``, bytes
outputs, tables at 80 columns, who is recorded as the reviewer, ``--json`` everywhere, and a
guard's review shown with what would be sent."""

from __future__ import annotations

import getpass
import textwrap
from pathlib import Path

import typer

from erpoz.cli import app

from ._helpers import TICKET, TRIAGE, URGENT, Cli

BYTES_FLOW = """
from erpoz import Flow, step


@step
def raw(n: int) -> bytes:
    return bytes(range(n))[::-1]


flow = Flow("raw", inputs={"n": int})
flow.output(flow.add(raw, n=flow.input("n")))
"""

ASKING_FLOW = """
from erpoz import Context, Flow, step


@step
async def ask(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("helper", question)).text


flow = Flow("asking", inputs={"question": str})
flow.output(flow.add(ask, question=flow.input("question")))
"""

HELPER = "models:\n  helper: {provider: extractive, params: {without_passages: explain}}\n"

REVIEW_FLOW = """
from erpoz import Flow, ReviewRequired, step


@step
def propose(amount: int) -> str:
    raise ReviewRequired("look", output=f"refund {amount}")


flow = Flow("proposal", inputs={"amount": int})
flow.output(flow.add(propose, amount=flow.input("amount")))
"""

CARD_FLOW = """
from erpoz import Context, Flow, step


@step
async def ask(question: str, ctx: Context) -> str:
    return (await ctx.models.chat("default", question)).text


flow = Flow("card", inputs={"question": str})
flow.output(flow.add(ask, question=flow.input("question")))
"""

CARD_PROJECT = """
guards:
  checks:
    pii: {at: [model_input]}
policy:
  rules:
    - {name: cards need a look, data: pii.credit_card, action: review}
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _run(cli: Cli, *args: str | Path, code: int = 0) -> str:
    return str(cli.ok("run", *args, "--json", code=code).json()["run_id"])


def test_runs_diff_of_a_run_and_its_replay_and_of_two_different_runs(cli: Cli) -> None:
    a = _run(cli, TRIAGE, "-i", f"ticket={TICKET}")
    replay = cli.ok("runs", "replay", a, "--from", "draft", "--json").json()["run_id"]
    same = cli.ok("runs", "diff", a, replay, "--json").json()
    assert same["same"] is True and same["inputs"] == [] and same["output"]["same"] is True
    assert same["b"]["parent_run_id"] == a and same["b"]["replay_from"] == "draft"
    steps = {s["step"]: s for s in same["steps"]}
    assert steps["classify"]["b"]["copied"] is True and steps["draft"]["b"]["copied"] is False
    assert all(s["same_output"] for s in same["steps"])
    text = cli.ok("runs", "diff", a[:12], replay).text
    assert "B replays A from step draft" in text and "same: inputs, steps" in text
    b = _run(cli, TRIAGE, "-i", f"ticket={URGENT}", code=3)  # waits for review
    other = cli.ok("runs", "diff", a, b, "--json").json()
    assert other["same"] is False
    assert other["inputs"] == [{"name": "ticket", "a": TICKET, "b": URGENT}]
    assert other["b"]["status"] == "waiting" and other["output"]["b"] is None
    reply = next(s for s in other["steps"] if s["step"] == "reply")
    assert (reply["a"]["status"], reply["b"]["status"]) == ("succeeded", "waiting")
    assert set(other["cost_usd"]) == {"a", "b", "delta"}
    text = cli.ok("runs", "diff", a, b).text
    assert 'ticket: "I was charged twice' in text and "differs" in text
    missing = cli("runs", "diff", a, "r0000000000nothere")
    assert missing.code == 5 and "no run 'r0000000000nothere'" in missing.text


def test_runs_replay_takes_the_project_file_from_config(cli: Cli, tmp_path: Path) -> None:
    flow = f"{_write(tmp_path / 'asking.py', ASKING_FLOW)}:flow"
    config = _write(tmp_path / "helper.yaml", HELPER)
    first = cli.ok("run", flow, "-i", "question=hi", "--json", "-t", "x=1", code=1).json()
    assert "helper" in (first["error"] or "")  # no such model without the project file
    replayed = cli.ok(
        "runs", "replay", first["run_id"], "--from", "ask", "--config", config, "--json"
    ).json()
    assert replayed["status"] == "succeeded" and "offline reader" in replayed["output"]


def test_a_step_returning_binary_bytes_runs_and_prints_base64(cli: Cli, tmp_path: Path) -> None:
    import base64

    flow = f"{_write(tmp_path / 'rawflow.py', BYTES_FLOW)}:flow"
    done = cli.ok("run", flow, "-i", "n=256", "--json").json()
    assert done["status"] == "succeeded"
    assert base64.urlsafe_b64decode(done["output"]) == bytes(range(256))[::-1]
    assert cli.show(done["run_id"])["output"] == done["output"]


def test_run_ids_and_costs_are_whole_at_80_columns(cli: Cli) -> None:
    ids = [_run(cli, TRIAGE, "-i", f"ticket={TICKET}") for _ in range(2)]
    cli.env["COLUMNS"] = "80"
    listed = cli.ok("runs", "ls").stdout
    assert all(len(line) <= 80 for line in listed.splitlines()), listed
    for run_id in ids:
        assert run_id in listed, listed
    flow = Path(cli.tmp_path / "asking.py")
    _write(flow, ASKING_FLOW)
    cli.env["ERPOZ_CONFIG"] = str(_write(cli.tmp_path / "helper.yaml", HELPER))
    _run(cli, f"{flow}:flow", "-i", "question=hi")
    stats = cli.ok("stats", "models").stdout
    assert all(len(line) <= 80 for line in stats.splitlines()), stats
    row = next(line for line in stats.splitlines() if line.startswith("helper"))
    assert "0.000000" in row.split() and row.split()[-1] != "…", row  # cost and p95 whole


def test_the_reviewer_is_the_option_the_environment_the_project_or_the_os_user(
    cli: Cli, tmp_path: Path
) -> None:
    flow = f"{_write(tmp_path / 'proposal.py', REVIEW_FLOW)}:flow"
    for var in ("USER", "LOGNAME", "LNAME", "USERNAME"):  # as under cron or in a container
        cli.env.pop(var, None)
    decided = []
    for extra, env in (
        (["--reviewer", "olga"], {}),
        ([], {"ERPOZ_REVIEWER": "eve"}),
        ([], {"ERPOZ_CONFIG": str(_write(tmp_path / "p.yaml", "reviewer: pat\n"))}),
        ([], {}),
    ):
        run_id = _run(cli, flow, "-i", "amount=5", code=3)
        for key in ("ERPOZ_REVIEWER", "ERPOZ_CONFIG"):
            cli.env.pop(key, None)
        cli.env.update(env)
        cli.ok("review", "approve", run_id, *extra, "--json")
        resolved = [e for e in cli.events(run_id) if e["kind"] == "review_resolved"]
        decided.append(resolved[0]["data"]["reviewer"])
    assert decided[:3] == ["olga", "eve", "pat"]
    assert decided[3] == getpass.getuser() and decided[3] != "unknown"  # from the OS


def test_a_guard_review_shows_what_would_be_sent_masked(cli: Cli, tmp_path: Path) -> None:
    flow = f"{_write(tmp_path / 'card.py', CARD_FLOW)}:flow"
    cli.env["ERPOZ_CONFIG"] = str(_write(tmp_path / "card.yaml", CARD_PROJECT))
    question = "Charge card 4111 1111 1111 1111 for the order"
    run_id = _run(cli, flow, "-i", f"question={question}", code=3)
    shown = cli.ok("review", "show", run_id).text
    assert "would be sent" in shown and "Charge card [CREDIT_CARD] for the order" in shown
    assert "4111" not in shown


def test_every_command_takes_json() -> None:
    """The README says every command takes --json for machine-readable output."""
    missing = []

    def walk(cmd: object, prefix: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*prefix, name])
            return
        opts = {o for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
        if "--json" not in opts:
            missing.append(" ".join(prefix))

    walk(typer.main.get_command(app), [])
    assert missing == []


def test_audit_export_json_summary(cli: Cli, tmp_path: Path) -> None:
    _run(cli, TRIAGE, "-i", f"ticket={TICKET}")
    target = tmp_path / "audit.jsonl"
    summary = cli.ok("audit", "export", "--since", "1h", "-o", target, "--json").json()
    lines = target.read_text().splitlines()
    assert summary["records"] == len(lines) > 0 and summary["output"] == str(target)


def test_models_ping_default_answers_offline_without_a_project(cli: Cli) -> None:
    """The README's `erpoz models ping default`, in a checkout without erpoz.yaml and without
    OPENAI_BASE_URL: the offline default answers what it can do (no passages, no error)."""
    cli.env.pop("OPENAI_BASE_URL", None)
    res = cli.ok("models", "ping", "default", "--json", store=False)
    data = res.json()
    assert data["ok"] is True and data["answered_by"] == "reader"
    assert "offline reader" in data["reply"] and "OPENAI_BASE_URL" in data["reply"]
