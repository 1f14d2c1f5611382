"""An erpoz flow compiled into a Kubeflow pipeline (kfp 2.x): checked by kfp's compiler and run
with kfp's local runner (SubprocessRunner: each task a real subprocess, no cluster, no docker)
against a shared SQLite store, so the run is recorded, resumable and auditable."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

if os.environ.get("ERPOZ_TEST_KFP") == "required":
    import kfp  # noqa: F401  (missing here is a failure of the kfp stage, not a skip)
else:
    pytest.importorskip("kfp", reason="kfp runs in its own venv: make test-kfp")

from kfp import local

from erpoz import Decision, Engine
from erpoz.audit import verify
from erpoz.flow._load import load_flow
from erpoz.integrations.kubeflow import compile_flow, flow_pipeline, run_component
from erpoz.store import open_store

FLOWS = Path(__file__).resolve().parents[1] / "mcp_flows.py"


def flow(name: str) -> str:
    return f"{FLOWS}:{name}"


@pytest.fixture(autouse=True)
def local_runner(tmp_path: Path) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))


async def stored(store: Path, run_id: str) -> tuple[Any, list[Any]]:
    st = open_store(str(store))
    try:
        return await st.get_run(run_id), await st.events(run_id)
    finally:
        await st.close()


def test_the_compiled_pipeline_has_the_flows_inputs_as_typed_parameters(tmp_path: Path) -> None:
    path = compile_flow(flow("quoting"), tmp_path / "quote.yaml", store="/data/erpoz.db")
    spec = yaml.safe_load(path.read_text())
    assert spec["pipelineInfo"]["name"] == "erpoz-quote"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["order"]["parameterType"] == "STRUCT"
    assert params["discount"]["parameterType"] == "NUMBER_DOUBLE"
    assert params["discount"]["defaultValue"] == 0.0
    assert params["erpoz_store"]["defaultValue"] == "/data/erpoz.db"
    (component,) = spec["components"].values()
    assert set(component["outputDefinitions"]["parameters"]) == {"run_id", "output"}


def test_a_local_pipeline_run_records_an_audited_erpoz_run(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    pipeline = flow_pipeline(flow("quoting"), store=str(store))
    task = pipeline(order={"item": "pen", "quantity": 2}, discount=0.5)
    assert task.output == '{"item": "pen", "total": 12.5}'

    async def check() -> tuple[Any, list[Any], Any]:
        st = open_store(str(store))
        try:
            (info,) = await st.list_runs(limit=5)
            return info, await st.events(info.run_id), await verify(st, info.run_id)
        finally:
            await st.close()

    info, events, verified = asyncio.run(check())
    assert info.status == "succeeded" and info.run_id.startswith("kfp")
    assert set(events[0].data["tags"]) == {"kfp_run", "kfp_task"}
    assert verified.ok


def test_a_failed_run_fails_the_task_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = flow_pipeline(flow("broken"), store=str(tmp_path / "runs.db"))
    with pytest.raises(RuntimeError):
        pipeline(text="oops")
    printed = capsys.readouterr()
    assert "at step 'explode'" in printed.out + printed.err
    assert "cannot handle 'oops'" in printed.out + printed.err


def test_a_run_waiting_for_review_fails_the_task_saying_how_to_decide_and_a_retry_takes_the_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    pipeline = flow_pipeline(flow("refunding"), store=str(store))
    with pytest.raises(RuntimeError):
        pipeline(amount=250.0)
    printed = capsys.readouterr()
    assert (
        "is waiting for a person's review" in printed.out and "erpoz review approve" in printed.out
    )

    async def approve() -> dict[str, str]:
        st = open_store(str(store))
        try:
            (info,) = await st.list_runs(status="waiting", limit=1)
            await Engine(st).resume(
                info.run_id, load_flow(flow("refunding")), decision=Decision("approve")
            )
            return dict((await st.events(info.run_id))[0].data["tags"])
        finally:
            await st.close()

    tags = asyncio.run(approve())
    # KFP retrying the task: the same run, now decided; nothing runs again
    result = run_component(
        flow("refunding"),
        str(store),
        {"amount": 250.0},
        kfp_run=tags["kfp_run"],
        kfp_task=tags["kfp_task"],
    )
    assert result.output == '"refund 250.0"'
    info, events = asyncio.run(stored(store, result.run_id))
    assert info.status == "succeeded"
    assert [e.kind for e in events].count("step_succeeded") == 1


def test_with_review_wait_the_task_waits_for_the_decision(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    pipeline = flow_pipeline(flow("refunding"), store=str(store), review_wait_s=120)

    def reviewer() -> None:
        async def go() -> None:
            st = open_store(str(store))
            try:
                while not (runs := await st.list_runs(status="waiting", limit=1)):
                    await asyncio.sleep(0.05)
                await Engine(st).resume(
                    runs[0].run_id, load_flow(flow("refunding")), decision=Decision("approve")
                )
            finally:
                await st.close()

        asyncio.run(go())

    thread = threading.Thread(target=reviewer)
    thread.start()
    task = pipeline(amount=300.0)
    thread.join(60)
    assert task.output == '"refund 300.0"'
