"""``erpoz`` and durable waits: a run that sleeps exits 3 with its wake time and goes on with
``runs resume --wait`` / ``runs wake``; ``runs send`` and ``runs event``; ``--run-id`` starts
are idempotent; ``runs replay`` / ``runs fork`` change inputs."""

from __future__ import annotations

from pathlib import Path

from ._helpers import Cli

WAITS = Path(__file__).resolve().parents[1] / "engine" / "wait_flows.py"

HELLO = """\
from erpoz import Flow, step


@step
def greet(name: str) -> str:
    return f"Hello, {name}!"


@step
def repeat(text: str, times: int) -> str:
    return " ".join([text] * times)


flow = Flow("hello", inputs={"name": str, "times": int})
flow.output(flow.add(repeat, text=flow.add(greet, name=flow.input("name")),
                     times=flow.input("times")))
"""


def test_a_sleeping_run_exits_3_and_goes_on_when_due(cli: Cli) -> None:
    cli.env["ERPOZ_TEST_NAP_S"] = "0.5"
    res = cli.ok("run", f"{WAITS}:napper", "-i", "x=1", "--hold", "0", "--json", code=3).json()
    assert res["status"] == "waiting" and res["wake_at"] is not None
    assert res["waiting_steps"] == ["nap"]
    text = cli.ok("run", f"{WAITS}:napper", "-i", "x=2", "--hold", "0", code=3).text
    assert "sleeps until" in text and "no process holds it" in text and "--wait" in text
    shown = cli.ok("runs", "show", res["run_id"]).text
    assert "nap sleeps until" in shown and "--approve" not in shown
    done = cli.ok("runs", "resume", res["run_id"], "--wait", "--json").json()
    assert (done["status"], done["output"]) == ("succeeded", 2)
    woken = cli.ok("runs", "wake", "--json").json()  # the other one, once due
    while not woken:
        woken = cli.ok("runs", "wake", "--json").json()
    assert [(w["status"], w["output"]) for w in woken] == [("succeeded", 3)]
    assert cli.ok("runs", "wake").text == "no sleeping run is due"


def test_messages_and_events_from_the_command_line(cli: Cli) -> None:
    res = cli.ok(
        "run", f"{WAITS}:replier", "-i", "ticket=T1", "--run-id", "t-1", "--json", code=3
    ).json()
    assert res["run_id"] == "t-1" and res["status"] == "waiting"
    unset = cli.ok("runs", "event", "t-1", "answered", "--json", code=3).json()
    assert unset == {"run_id": "t-1", "key": "answered", "value": None}
    sent = cli.ok("runs", "send", "t-1", "reply", '{"ok": true}', "--json").json()
    assert sent["topic"] == "reply" and sent["message_id"] >= 1
    assert cli.show("t-1")["wake_on"] == "msg:reply"
    done = cli.ok("runs", "resume", "t-1", "--json").json()
    assert done["output"] == "T1: {'ok': True}"
    got = cli.ok("runs", "event", "t-1", "answered", "--json").json()
    assert got["value"] == {"ticket": "T1", "reply": {"ok": True}}

    # the same start again reports that run; other inputs are refused
    again = cli.ok("run", f"{WAITS}:replier", "-i", "ticket=T1", "--run-id", "t-1", "--json")
    assert again.json()["output"] == "T1: {'ok': True}"
    other = cli("run", f"{WAITS}:replier", "-i", "ticket=T2", "--run-id", "t-1")
    assert other.code == 5 and "exists already with other inputs" in other.text
    late = cli("runs", "send", "t-1", "reply", "hello")
    assert late.code == 5 and "already succeeded" in late.text
    bad = cli("runs", "send", "nope", "reply", "1")
    assert bad.code == 5 and "no run 'nope'" in bad.text


def test_fork_changes_inputs_and_reruns_only_what_reads_them(cli: Cli) -> None:
    (cli.tmp_path / "hello.py").write_text(HELLO)
    flow = str(cli.tmp_path / "hello.py") + ":flow"
    first = cli.ok("run", flow, "-i", "name=Ada", "-i", "times=1", "--json").json()
    forked = cli.ok("runs", "fork", first["run_id"], "-i", "times=2", "--json").json()
    assert forked["output"] == "Hello, Ada! Hello, Ada!"
    info = cli.show(forked["run_id"])
    assert info["parent_run_id"] == first["run_id"] and info["replay_from"] == "repeat"
    assert info["inputs"] == {"name": "Ada", "times": 2}
    events = cli.events(forked["run_id"])
    assert {e["step"] for e in events if e["kind"] == "step_started"} == {"repeat"}
    replayed = cli.ok(
        "runs", "replay", first["run_id"], "--from", "greet", "-i", "name=Bob", "--json"
    ).json()
    assert replayed["output"] == "Hello, Bob!"
    nothing = cli("runs", "fork", first["run_id"], "-i", "times=1")
    assert nothing.code == 5 and "needs a step to run again" in nothing.text
    neither = cli("runs", "fork", first["run_id"])
    assert neither.code == 2 and "--from STEP" in neither.text


NAP_THEN_ASK = """\
from erpoz import Context, Flow, step


@step
async def nap(q: str, ctx: Context) -> str:
    await ctx.sleep(0.2)
    return q


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("default", q)).text


flow = Flow("nap-then-ask", inputs={"q": str})
flow.output(flow.add(ask, q=flow.add(nap, q=flow.input("q"))))
"""


def test_runs_wake_gives_the_woken_steps_the_projects_models(cli: Cli) -> None:
    # runs wake executes the rest of the run here: its steps need the services `erpoz run` gives
    (cli.tmp_path / "ask.py").write_text(NAP_THEN_ASK)
    flow = str(cli.tmp_path / "ask.py") + ":flow"
    res = cli.ok("run", flow, "-i", "q=hello", "--hold", "0", "--json", code=3).json()
    assert res["status"] == "waiting"
    woken = cli.ok("runs", "wake", "--json").json()
    while not woken:
        woken = cli.ok("runs", "wake", "--json").json()
    assert [w["status"] for w in woken] == ["succeeded"], woken
    assert isinstance(woken[0]["output"], str) and woken[0]["output"]
