"""ErpozFlowOperator in a real Airflow 3 (``dag.test()`` on its SQLite metadata database):
inputs from the DAG run's params, output and run id in XCom, a failed run failing the task
with the step's name, and a run waiting for review deferring the task (its worker slot given
back) until a reviewer, in another process, decides."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if os.environ.get("ERPOZ_TEST_AIRFLOW") == "required":
    import airflow  # noqa: F401  (missing here is a failure of the Airflow stage, not a skip)
else:
    pytest.importorskip("airflow", reason="Airflow runs in its own venv: make test-airflow")

from erpoz.store import open_store

from .conftest import HOME

FLOWS = Path(__file__).resolve().parents[1] / "mcp_flows.py"
ERPOZ = [sys.executable, "-c", "from erpoz.cli import main; main()"]


@pytest.fixture(scope="module", autouse=True)
def metadata_db() -> None:
    """A fresh Airflow metadata database (SQLite) for this module."""
    from airflow.utils import db

    db.resetdb()


def dag_file(dag_id: str, body: str) -> ModuleType:
    """Write a DAG file into the DAGs folder (dag.test() runs DAGs it has parsed) and import
    it."""
    path = HOME / "dags" / f"{dag_id}.py"
    path.write_text(body, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(dag_id, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def operator_dag(dag_id: str, flow: str, store: Path, params: str = "{}", extra: str = "") -> Any:
    return dag_file(
        dag_id,
        "from airflow.sdk import DAG\n"
        "from erpoz.integrations.airflow import ErpozFlowOperator\n"
        f"with DAG({dag_id!r}, schedule=None, params={params}) as dag:\n"
        f"    run = ErpozFlowOperator(task_id='flow', flow={f'{FLOWS}:{flow}'!r},\n"
        f"                            store={str(store)!r}, poll_interval=0.1{extra})\n",
    ).dag


def task_instance(dag_run: Any) -> Any:
    (ti,) = dag_run.get_task_instances()
    return ti


def test_a_flow_runs_as_a_task_with_params_in_and_output_in_xcom(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    dag = operator_dag(
        "erpoz_quote",
        "quoting",
        store,
        params="{'order': {'item': 'pen', 'quantity': 2}, 'unrelated': 1}",
        extra=", inputs={'discount': '{{ params.order.quantity / 10 }}'}",
    )
    dag_run = dag.test()
    ti = task_instance(dag_run)
    assert dag_run.state == "success" and ti.state == "success"
    assert ti.xcom_pull(task_ids="flow") == {"item": "pen", "total": 20.0}
    run_id = ti.xcom_pull(task_ids="flow", key="erpoz_run_id")

    async def recorded() -> Any:
        st = open_store(str(store))
        info = await st.get_run(run_id)
        events = await st.events(run_id)
        await st.close()
        return info, events

    info, events = asyncio.run(recorded())
    assert info.status == "succeeded" and info.flow == "quote"
    tags = events[0].data["tags"]
    assert tags["airflow_dag"] == "erpoz_quote" and tags["airflow_task"] == "flow"


def test_a_failed_run_fails_the_task_naming_the_step(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = operator_dag("erpoz_broken", "broken", tmp_path / "runs.db", params="{'text': 'oops'}")
    dag_run = dag.test()
    assert dag_run.state == "failed" and task_instance(dag_run).state == "failed"
    logged = capfd.readouterr()
    assert "failed at step 'explode'" in logged.out + logged.err
    assert "cannot handle 'oops'" in logged.out + logged.err


def review_in_another_process(
    store: Path, dag_id: str, decision: str, seen: dict[str, Any]
) -> None:
    """A reviewer: waits until the erpoz run waits for review *and* the Airflow task is
    deferred (both read from their databases), then decides with the erpoz CLI."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    async def waiting_run() -> str:
        st = open_store(str(store))
        try:
            while True:
                runs = await st.list_runs(status="waiting", limit=1)
                if runs:
                    return runs[0].run_id
                await asyncio.sleep(0.05)
        finally:
            await st.close()

    run_id = asyncio.run(waiting_run())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with create_session() as session:
            tis = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id="flow").all()
            # deferred now, or deferred and queued to resume in execute_complete (dag.test
            # runs the trigger in process and may move the task on before this looks)
            if any(ti.state == "deferred" or ti.next_method == "execute_complete" for ti in tis):
                seen["task_state_while_waiting"] = "deferred"
                break
        time.sleep(0.05)
    # decide even when no deferral was seen, so that the task ends and the test fails on it
    done = subprocess.run(
        [*ERPOZ, "review", decision, run_id, "--store", str(store), "--reviewer", "ana"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen["review"] = (done.returncode, done.stdout + done.stderr)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_run_waiting_for_review_defers_the_task_until_a_reviewer_decides(
    tmp_path: Path, decision: str, capfd: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.db"
    dag_id = f"erpoz_refund_{decision}"
    dag = operator_dag(dag_id, "refunding", store, params="{'amount': 250}")
    seen: dict[str, Any] = {}
    reviewer = threading.Thread(
        target=review_in_another_process, args=(store, dag_id, decision, seen)
    )
    reviewer.start()
    dag_run = dag.test()
    reviewer.join(120)
    ti = task_instance(dag_run)
    assert seen.get("task_state_while_waiting") == "deferred", seen
    if decision == "approve":
        assert seen["review"][0] == 0, seen
        assert dag_run.state == "success" and ti.state == "success"
        assert ti.xcom_pull(task_ids="flow") == "refund 250.0"
    else:
        assert dag_run.state == "failed" and ti.state == "failed"
        logged = capfd.readouterr()
        assert "rejected" in logged.out + logged.err


def test_a_task_run_again_takes_its_runs_recorded_output_instead_of_running_it_again(
    tmp_path: Path,
) -> None:
    """The same task instance (same DAG run, cleared and run again): one erpoz run."""
    from datetime import UTC, datetime

    store = tmp_path / "runs.db"
    dag = operator_dag("erpoz_quote_again", "quoting", store, params="{'order': {'item': 'cap'}}")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    first = dag.test(run_after=when, logical_date=when)
    second = dag.test(run_after=when, logical_date=when)
    assert first.run_id == second.run_id
    assert task_instance(second).xcom_pull(task_ids="flow") == {"item": "cap", "total": 12.5}

    async def runs() -> list[Any]:
        st = open_store(str(store))
        try:
            return await st.list_runs(limit=10)
        finally:
            await st.close()

    (only,) = asyncio.run(runs())
    assert only.status == "succeeded"
