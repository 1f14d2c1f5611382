"""The ``erpoz`` command end to end: help, validate, run, review, replay, cancel, events, exit
codes and error messages. Every command gets ``--store <tmp>/x.db``. Most run in this process
(Typer's runner); a few as real subprocesses, as a user runs them (``real_cli``, ``finished``):
the example's run, help and version, and what must hold across processes."""

from __future__ import annotations

import itertools
import json
import random
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ._helpers import TICKET, TRIAGE, URGENT, Cli

TRIAGE_STEPS = ["classify", "mood", "billing", "policy", "draft", "revise", "reply"]

PY_FLOW = """\
from erpoz import Flow, step


@step
def greet(name: str) -> str:
    return f"Hello, {name}!"


@step
def repeat(text: str, times: int) -> str:
    return " ".join([text] * times)


@step
def shout(text: str) -> str:
    return text.upper()


@step
def boom(text: str) -> str:
    raise ValueError("kaput: " + text)


flow = Flow("hello", inputs={"name": str, "times": int}, defaults={"times": 1})
flow.output(flow.add(shout, text=flow.add(repeat, text=flow.add(greet, name=flow.input("name")),
                                          times=flow.input("times"))))

failing = Flow("failing", inputs={"name": str})
failing.output(failing.add(boom, text=failing.add(greet, name=failing.input("name"))))



@step(cache=True)
def length(text: str) -> int:
    return len(text)


@step(cache=True)
def letters(text: str) -> int:
    return sum(1 for c in text if c.isalpha())  # a generator expression: a nested code object


@step
def pair(a: int, b: int) -> list[int]:
    return [a, b]


cached = Flow("cached", inputs={"text": str})
cached.output(cached.add(pair, a=cached.add(length, text=cached.input("text")),
                         b=cached.add(letters, text=cached.input("text"))))

not_a_flow = 42
"""


def start(cli: Cli, ticket: str = TICKET, code: int = 0) -> dict[str, Any]:
    """``erpoz run examples/triage.yaml -i ticket=... --json``; returns the JSON report."""
    data: dict[str, Any] = cli.ok(
        "run", TRIAGE, "-i", f"ticket={ticket}", "--json", code=code
    ).json()
    return data


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, dict[str, Any]]:
    """One store with one succeeded run of the example, shared by tests that only read it
    (or add runs of their own). The run is made by a real `erpoz` process."""
    where = tmp_path_factory.mktemp("finished")
    made = start(Cli(where, real=True))
    return Cli(where), made  # what the tests do next runs in this process


def waiting_run(cli: Cli) -> str:
    res = start(cli, URGENT, code=3)
    assert res["status"] == "waiting"
    assert res["waiting_steps"] == ["reply"]
    return str(res["run_id"])


# --- help -------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["run"],
    ["validate"],
    ["events"],
    ["runs"],
    ["runs", "ls"],
    ["runs", "show"],
    ["runs", "resume"],
    ["runs", "replay"],
    ["runs", "cancel"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "erpoz")
def test_help_exits_0_and_shows_an_example(cli: Cli, command: list[str]) -> None:
    res = cli.ok(*command, "--help", store=False)
    assert "Usage: erpoz" in res.text
    assert "Example" in res.stdout, f"no example in `erpoz {' '.join(command)} --help`"


@pytest.mark.slow
def test_short_help_flag_and_version(real_cli: Cli) -> None:
    assert "Usage: erpoz run" in real_cli.ok("run", "-h", store=False).text
    version = real_cli.ok("--version", store=False).stdout.strip()
    assert re.fullmatch(r"erpoz \d+\.\d+\.\d+\S*", version)


def test_unknown_command_is_a_usage_error(cli: Cli) -> None:
    res = cli("frobnicate", store=False)
    assert res.code == 2, str(res)
    assert "frobnicate" in res.text


# --- validate ---------------------------------------------------------------------------------


def test_validate_example(cli: Cli) -> None:
    res = cli.ok("validate", TRIAGE, store=False)
    assert "valid" in res.text
    assert "triage" in res.text
    data = cli.ok("validate", TRIAGE, "--json", store=False).json()
    assert data["valid"] is True
    assert data["flow"] == "triage"
    assert data["steps"] == TRIAGE_STEPS
    assert data["inputs"] == ["ticket"]
    assert re.fullmatch(r"[0-9a-f]{16}", data["fingerprint"])


@pytest.mark.slow
def test_validate_fingerprint_is_stable_across_processes(real_cli: Cli) -> None:
    """The same, unchanged flow file must have the same fingerprint in every process (it keys
    the output cache and tells `runs resume` whether the flow changed)."""
    prints = {
        real_cli.ok("validate", TRIAGE, "--json", store=False).json()["fingerprint"]
        for _ in range(2)
    }
    assert len(prints) == 1, f"fingerprint differs between processes: {sorted(prints)}"


BROKEN = {
    "unknown-key": ("name: t\nsteps:\n  - id: a\n    bogus_key: 1\n    uses: json:dumps\n", 4),
    "bad-import": (
        "name: t\ninputs:\n  x: int\nsteps:\n  - id: a\n"
        "    uses: no_such_module_xyz:fn\n    with: {x: '${inputs.x}'}\n",
        6,
    ),
    "malformed": ("name: t\nsteps:\n  - id: a\n    uses: [unclosed\n", None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_broken_yaml_exits_2_with_file_and_line(
    cli: Cli, tmp_path: Path, case: str
) -> None:
    text, line = BROKEN[case]
    path = tmp_path / f"broken_{case}.yaml"
    path.write_text(text)
    res = cli("validate", path, store=False)
    assert res.code == 2, str(res)
    assert "error" in res.stderr
    where = re.search(rf"broken_{case}\.yaml:(\d+)", res.text)
    assert where, f"no file:line in {res.text!r}"
    if line is not None:
        assert int(where.group(1)) == line
    data = cli("validate", path, "--json", store=False)
    assert data.code == 2, str(data)
    report = data.json()
    assert report["valid"] is False
    assert report["file"].endswith(path.name)
    assert report["line"] == int(where.group(1))
    assert report["error"]
    # `run` refuses the same flow with the same code, before touching the store
    assert cli("run", path).code == 2


def test_validate_missing_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    res = cli("validate", tmp_path / "nope.yaml", store=False)
    assert res.code == 2, str(res)
    assert "nope.yaml" in res.text


# --- run --------------------------------------------------------------------------------------


def test_run_example_succeeds(finished: tuple[Cli, dict[str, Any]]) -> None:
    cli, res = finished
    assert res["status"] == "succeeded"
    assert isinstance(res["output"], str)
    assert res["output"].endswith("Support")
    assert "INV-1234" in res["output"]
    assert res["error"] is None and res["failed_step"] is None and res["waiting_steps"] == []
    info = cli.show(res["run_id"])
    assert info["status"] == "succeeded"
    assert info["inputs"] == {"ticket": TICKET}
    assert info["output"] == res["output"]


def test_run_text_output_and_show_by_prefix(cli: Cli) -> None:
    res = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}")
    found = re.search(r"run (r[0-9a-f]+) succeeded", res.text)
    assert found, res.text
    assert "Support" in res.text
    run_id = found.group(1)
    assert cli.show(run_id[:12])["run_id"] == run_id  # a unique prefix works
    text = cli.ok("runs", "show", run_id[:12]).text
    assert run_id in text and "succeeded" in text and "classify" in text


def test_input_json_file(cli: Cli, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"ticket": TICKET}))
    res = cli.ok("run", TRIAGE, "--input-json", inputs, "--json").json()
    assert res["status"] == "succeeded"
    assert res["output"].endswith("Support")
    assert cli.show(res["run_id"])["inputs"] == {"ticket": TICKET}
    # -i overrides a value from the file
    res = cli.ok(
        "run", TRIAGE, "--input-json", inputs, "-i", "ticket=URGENT: now", "--json", code=3
    ).json()
    assert cli.show(res["run_id"])["inputs"] == {"ticket": "URGENT: now"}


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", None], ids=["list", "bad", "missing"])
def test_input_json_bad_file_exits_2(cli: Cli, tmp_path: Path, content: str | None) -> None:
    inputs = tmp_path / "inputs.json"
    if content is not None:
        inputs.write_text(content)
    res = cli("run", TRIAGE, "--input-json", inputs)
    assert res.code == 2, str(res)
    assert "--input-json" in res.text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-i", f"ticket={TICKET}", "-i", "colour=red"], "colour"),
        ([], "ticket"),
        (["-i", "ticket"], "key=value"),
    ],
    ids=["unknown-input", "missing-input", "no-equals"],
)
def test_bad_inputs_exit_2(cli: Cli, args: list[str], needle: str) -> None:
    res = cli("run", TRIAGE, *args)
    assert res.code == 2, str(res)
    assert needle in res.text
    assert cli.ok("runs", "ls", "--json").json() == []  # nothing was started


# --- review: wait, resume with a decision ---------------------------------------------------


def test_waiting_run_listed_shown_and_resumed_with_an_edit(cli: Cli, tmp_path: Path) -> None:
    run_id = waiting_run(cli)
    listed = cli.ok("runs", "ls", "--status", "waiting", "--json").json()
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["waiting_step"] == "reply"
    assert cli.ok("runs", "ls", "--status", "succeeded", "--json").json() == []

    info = cli.show(run_id)
    assert info["status"] == "waiting"
    steps = {s["step"]: s for s in info["steps"]}
    assert steps["reply"]["status"] == "waiting"
    assert steps["classify"]["status"] == "succeeded"

    res = cli("runs", "resume", run_id)
    assert res.code == 5, str(res)
    assert "--approve" in res.text
    assert cli.show(run_id)["status"] == "waiting"  # a refused resume changes nothing

    edit = tmp_path / "fixed.json"
    edit.write_text(json.dumps("Dear customer, we refunded INV-1234. Best regards, Support"))
    decision = ["--edit", edit, "--reviewer", "alice", "--comment", "tone"]
    done = cli.ok("runs", "resume", run_id, *decision, "--json").json()
    assert done["status"] == "succeeded"
    assert done["run_id"] == run_id
    assert done["output"] == json.loads(edit.read_text())
    info = cli.show(run_id)
    assert info["status"] == "succeeded"
    assert info["output"] == done["output"]
    resolved = [e for e in cli.events(run_id) if e["kind"] == "review_resolved"]
    assert len(resolved) == 1
    assert resolved[0]["step"] == "reply"
    assert resolved[0]["data"]["decision"] == "edit"
    assert resolved[0]["data"]["reviewer"] == "alice"
    assert resolved[0]["data"]["comment"] == "tone"
    # finished: nothing left to resume
    again = cli("runs", "resume", run_id, "--approve")
    assert again.code == 5, str(again)
    assert "already succeeded" in again.text


def test_waiting_run_text_output_then_approve(cli: Cli) -> None:
    res = cli.ok("run", TRIAGE, "-i", f"ticket={URGENT}", code=3)
    assert "waiting" in res.text
    found = re.search(r"run (r[0-9a-f]+)", res.text)
    assert found, res.text
    run_id = found.group(1)
    for flag in ("--approve", "--reject", "--edit"):
        assert f"erpoz runs resume {run_id} {flag}" in res.text
    done = cli.ok("runs", "resume", run_id, "--approve", "--json").json()
    assert done["status"] == "succeeded"
    assert done["output"].endswith("Support")  # the proposal the step made
    assert cli.show(run_id)["status"] == "succeeded"


def test_resume_reject_fails_the_run(cli: Cli) -> None:
    run_id = waiting_run(cli)
    res = cli("runs", "resume", run_id, "--reject", "--comment", "no refund", "--json")
    assert res.code == 1, str(res)
    data = res.json()
    assert data["status"] == "failed"
    assert data["failed_step"] == "reply"
    assert "rejected" in data["error"]
    info = cli.show(run_id)
    assert info["status"] == "failed"
    assert "rejected" in info["error"]


def test_resume_refuses_two_decisions_and_a_missing_edit_file(cli: Cli, tmp_path: Path) -> None:
    run_id = waiting_run(cli)
    res = cli("runs", "resume", run_id, "--approve", "--reject")
    assert res.code == 2, str(res)
    res = cli("runs", "resume", run_id, "--edit", tmp_path / "missing.json")
    assert res.code == 2, str(res)
    assert "missing.json" in res.text
    assert cli.show(run_id)["status"] == "waiting"


def test_resume_with_an_edit_of_the_wrong_type_leaves_the_run_waiting(
    cli: Cli, tmp_path: Path
) -> None:
    """A refused decision must not change the run: it still waits, and is still listed as
    waiting, so that the reviewer can try again."""
    run_id = waiting_run(cli)
    edit = tmp_path / "wrong.json"
    edit.write_text("42")  # the step returns str
    res = cli("runs", "resume", run_id, "--edit", edit)
    assert res.code == 5, str(res)
    assert "does not fit" in res.text
    info = cli.show(run_id)
    assert info["status"] == "waiting", f"refused edit changed the run: {info['status']}"
    assert info["waiting_step"] == "reply"
    listed = cli.ok("runs", "ls", "--status", "waiting", "--json").json()
    assert [r["run_id"] for r in listed] == [run_id]


def test_resume_naming_a_step_that_does_not_wait_leaves_the_run_waiting(cli: Cli) -> None:
    run_id = waiting_run(cli)
    res = cli("runs", "resume", run_id, "--approve", "--step", "draft")
    assert res.code == 5, str(res)
    assert "not waiting" in res.text
    assert cli.show(run_id)["status"] == "waiting"
    cli.ok("runs", "resume", run_id, "--approve", "--step", "reply")


def test_resume_does_not_report_an_unchanged_flow_as_changed(cli: Cli) -> None:
    run_id = waiting_run(cli)
    cli.ok("runs", "resume", run_id, "--approve")
    resumed = [e for e in cli.events(run_id) if e["kind"] == "run_resumed"]
    assert len(resumed) == 1
    assert resumed[0]["data"]["fingerprint_changed"] is False, resumed[0]["data"]


# --- replay -----------------------------------------------------------------------------------


def test_replay_from_a_step_makes_a_linked_run(finished: tuple[Cli, dict[str, Any]]) -> None:
    cli, first = finished
    res = cli.ok("runs", "replay", first["run_id"], "--from", "draft", "--json").json()
    new_id = res["run_id"]
    assert new_id != first["run_id"]
    assert res["status"] == "succeeded"
    assert res["output"] == first["output"]
    info = cli.show(new_id)
    assert info["parent_run_id"] == first["run_id"]
    assert info["replay_from"] == "draft"
    assert info["inputs"] == {"ticket": TICKET}
    events = cli.events(new_id)
    copied = {
        e["step"]
        for e in events
        if e["kind"] in ("step_succeeded", "step_skipped") and "copied_from" in e["data"]
    }
    assert {"classify", "mood", "policy"} <= copied
    assert {"draft", "revise", "reply"}.isdisjoint(copied)
    rerun = {e["step"] for e in events if e["kind"] == "step_started"}
    assert {"draft", "revise", "reply"} <= rerun
    assert "classify" not in rerun
    # the parent is untouched and the listing says what the new run is
    assert cli.show(first["run_id"])["status"] == "succeeded"
    assert "replay of" in cli.ok("runs", "ls").text


def test_replay_of_a_waiting_run_waits_again(cli: Cli) -> None:
    run_id = waiting_run(cli)
    res = cli("runs", "replay", run_id, "--from", "draft", "--json")
    assert res.code == 3, str(res)
    assert cli.show(res.json()["run_id"])["parent_run_id"] == run_id


def test_replay_from_an_unknown_step_is_refused(finished: tuple[Cli, dict[str, Any]]) -> None:
    cli, first = finished
    before = cli.ok("runs", "ls", "--json").json()
    res = cli("runs", "replay", first["run_id"], "--from", "no_such_step")
    assert res.code in (2, 5), str(res)
    assert "no_such_step" in res.text
    assert cli.ok("runs", "ls", "--json").json() == before  # no new run


# --- events -----------------------------------------------------------------------------------


def test_events_json_is_the_whole_chained_log(finished: tuple[Cli, dict[str, Any]]) -> None:
    cli, first = finished
    run_id = first["run_id"]
    events = cli.events(run_id)
    assert isinstance(events, list)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "run_started"
    assert events[-1]["kind"] == "run_succeeded"
    assert all(e["run_id"] == run_id for e in events)
    assert events[0]["prev_hash"] == "0" * 64
    for prev, cur in itertools.pairwise(events):
        assert cur["prev_hash"] == prev["hash"]
    assert cli.show(run_id)["events"] == len(events)
    succeeded = [e["step"] for e in events if e["kind"] == "step_succeeded"]
    assert len(succeeded) == len(set(succeeded))
    assert set(TRIAGE_STEPS) - {"billing"} <= set(succeeded)

    only = cli.ok("events", run_id, "--kind", "step_succeeded", "--json").json()
    assert [e["step"] for e in only] == succeeded
    table = cli.ok("events", run_id)
    assert "run_started" in table.text and "run_succeeded" in table.text


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_waiting_run(cli: Cli) -> None:
    run_id = waiting_run(cli)
    res = cli.ok("runs", "cancel", run_id, "--json").json()
    assert res == {"run_id": run_id, "cancel": "cancelled"}
    info = cli.show(run_id)
    assert info["status"] == "cancelled"
    assert cli.ok("runs", "ls", "--status", "waiting", "--json").json() == []
    assert [
        r["run_id"] for r in cli.ok("runs", "ls", "--status", "cancelled", "--json").json()
    ] == [run_id]
    assert cli.events(run_id)[-1]["kind"] == "run_cancelled"
    for args in (["runs", "cancel", run_id], ["runs", "resume", run_id, "--approve"]):
        res2 = cli(*args)
        assert res2.code == 5, str(res2)
        assert "cancelled" in res2.text


# --- unknown runs, wrong state ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "r-nope-nope"],
        ["runs", "resume", "r-nope-nope"],
        ["runs", "resume", "r-nope-nope", "--approve"],
        ["runs", "replay", "r-nope-nope", "--from", "draft"],
        ["runs", "cancel", "r-nope-nope"],
        ["events", "r-nope-nope"],
    ],
    ids=lambda a: " ".join(a[:2]) + (" " + a[-1] if a[-1].startswith("--a") else ""),
)
def test_unknown_run_exits_5(cli: Cli, args: list[str]) -> None:
    res = cli(*args)
    assert res.code == 5, str(res)
    assert "r-nope-nope" in res.text
    assert "Traceback" not in res.text


def test_resume_of_a_finished_run_exits_5_and_points_at_replay(
    finished: tuple[Cli, dict[str, Any]],
) -> None:
    cli, first = finished
    res = cli("runs", "resume", first["run_id"])
    assert res.code == 5, str(res)
    assert "replay" in res.text


# --- store errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "ls"],
        ["run", TRIAGE, "-i", f"ticket={TICKET}"],
        ["runs", "show", "r123456"],
        ["runs", "resume", "r123456", "--approve"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_corrupt_store_exits_4(cli: Cli, args: list[str]) -> None:
    junk = random.Random(7).randbytes(16384)
    cli.store.write_bytes(junk)
    res = cli(*args)
    assert res.code == 4, str(res)
    assert "corrupt" in res.text
    assert str(cli.store) in res.text or cli.store.name in res.text
    assert "Traceback" not in res.text
    assert cli.store.read_bytes() == junk  # the file is left alone


# --- Python flows: file.py:attr ---------------------------------------------------------------


@pytest.fixture
def pyflow(tmp_path: Path) -> Path:
    path = tmp_path / "hellomod.py"
    path.write_text(textwrap.dedent(PY_FLOW))
    return path


def test_run_python_flow_file(cli: Cli, pyflow: Path) -> None:
    data = cli.ok("validate", f"{pyflow}:flow", "--json", store=False).json()
    assert data["valid"] is True and data["flow"] == "hello"
    assert data["inputs"] == ["name", "times"]
    res = cli.ok("run", f"{pyflow}:flow", "-i", "name=Ada", "--json").json()
    assert res["status"] == "succeeded"
    assert res["output"] == "HELLO, ADA!"
    # values parse as JSON (times=2 is an int) except for str inputs (name=42 stays "42")
    res = cli.ok("run", f"{pyflow}:flow", "-i", "name=42", "-i", "times=2", "--json").json()
    assert res["output"] == "HELLO, 42! HELLO, 42!"
    info = cli.show(res["run_id"])
    assert info["inputs"] == {"name": "42", "times": 2}
    assert info["source"] == f"{pyflow.resolve()}:flow"


def test_python_flow_that_fails_exits_1(cli: Cli, pyflow: Path) -> None:
    res = cli("run", f"{pyflow}:failing", "-i", "name=Ada", "--json")
    assert res.code == 1, str(res)
    data = res.json()
    assert data["status"] == "failed"
    assert data["failed_step"] == "boom"
    assert "kaput: Hello, Ada!" in data["error"]
    info = cli.show(data["run_id"])
    assert info["status"] == "failed"
    boom = next(s for s in info["steps"] if s["step"] == "boom")
    assert boom["status"] == "failed"
    text = cli("run", f"{pyflow}:failing", "-i", "name=Ada")
    assert text.code == 1
    assert f"erpoz runs replay {text.text.split()[1]} --from boom" in text.text


@pytest.mark.parametrize("attr", ["nope", "not_a_flow"])
def test_python_flow_bad_attribute_exits_2(cli: Cli, pyflow: Path, attr: str) -> None:
    res = cli("run", f"{pyflow}:{attr}", "-i", "name=Ada")
    assert res.code == 2, str(res)
    expected = "has no attribute 'nope'" if attr == "nope" else "not an erpoz Flow"
    assert expected in res.text


def test_python_flow_that_does_not_import_exits_2(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "brokenmod.py"
    path.write_text("import no_such_module_xyz\n")
    res = cli("validate", f"{path}:flow", store=False)
    assert res.code == 2, str(res)
    assert "no_such_module_xyz" in res.text


def test_commands_run_from_the_repo_leave_the_default_store_alone(cli: Cli) -> None:
    start(cli)
    assert cli.store.exists()
    assert not (cli.tmp_path / "default-store-must-not-be-used.db").exists()


def test_cached_steps_hit_the_cache_in_a_later_process(cli: Cli, pyflow: Path) -> None:
    """`cache=True` keys the output cache by the step's code version; an unchanged step must
    hit it from the next `erpoz run` (a new process) on, whatever its body contains."""
    ids = []
    for _ in range(2):
        res = cli.ok("run", f"{pyflow}:cached", "-i", "text=ab c!", "--json").json()
        assert res["output"] == [5, 3]
        ids.append(res["run_id"])
    second = {e["step"]: e["data"] for e in cli.events(ids[1]) if e["kind"] == "step_succeeded"}
    assert second["length"].get("cached") is True  # a plain body: hits
    assert second["letters"].get("cached") is True, "the step with a genexpr missed the cache"


def test_runs_show_pages_the_timeline_and_streams_a_long_one(cli: Cli, tmp_path: Path) -> None:
    res = cli.ok("run", TRIAGE, "-i", f"ticket={TICKET}", "--json").json()
    run_id = res["run_id"]
    whole = cli.ok("runs", "show", run_id, "--json").json()
    total = whole["steps_total"]
    assert total == len(whole["steps"]) > 3
    page = cli.ok("runs", "show", run_id, "--json", "--limit", "2", "--offset", "1").json()
    assert page["steps"] == whole["steps"][1:3] and page["steps_total"] == total
    text = cli.ok("runs", "show", run_id, "--limit", "2", "--offset", "1").text
    assert f"rows 2–3 of {total} in the timeline; next: --offset 3" in text
    assert whole["steps"][1]["step"] in text and whole["steps"][0]["step"] + " " not in text

    # a run of more steps than a table takes: one plain line per step, in order
    import asyncio

    from erpoz.store import NewRun, open_store

    async def long_run() -> None:
        st = open_store(tmp_path / "long.db")
        w = await st.create_run(NewRun("r-long-run-01", "long", "f" * 16, "{}"), "host:1:o")
        for i in range(500):
            w.append("step_started", f"s{i}", 1)
            w.append("step_succeeded", f"s{i}", 1, {"ms": 0.5}, "1")
        w.append("run_succeeded", payload="1")
        await w.release()
        await st.close()

    asyncio.run(long_run())
    shown = cli.ok("runs", "show", "r-long-run-01", "--store", tmp_path / "long.db", store=False)
    lines = [ln.split() for ln in shown.stdout.splitlines() if ln.startswith("s")][1:]
    assert [ln[:2] for ln in lines] == [
        [f"s{i}", "succeeded"] for i in range(500)
    ]  # after the header
