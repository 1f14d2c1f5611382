"""Airflow (3.x): run an erpoz flow as a task (the ``airflow`` extra).

:class:`ErpozFlowOperator` runs a flow with the task's inputs (``inputs``, templated, over the
DAG run's ``params`` that name flow inputs) and returns its output, so the output is the task's
XCom ``return_value``; the run id is pushed as XCom ``erpoz_run_id``. A run that fails fails
the task with a message naming the step. A run that waits for a person's review *defers*: the
task gives its worker slot back and :class:`ErpozRunTrigger`, on Airflow's triggerer, watches
the run in the erpoz store; when a reviewer has decided (``erpoz review approve RUN``, which
carries the run on) and the run has ended, the task resumes and finishes with the run's
outcome.

Each task instance has one erpoz run, whose id comes from the DAG, the Airflow run, the task
and the map index: a retried task (the worker died) resumes that run where its log stands
instead of starting over, and a task that finds its run already succeeded returns its output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent
from pydantic import TypeAdapter

from ..engine import Engine, RunResult
from ..errors import ErpozError, FlowError
from ..flow import Flow, Plan
from ..store import TERMINAL, open_store

__all__ = ["ErpozFlowOperator", "ErpozRunTrigger", "erpoz_run_id"]

_ANY = TypeAdapter(Any)
_POLL_S = 5.0


def erpoz_run_id(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The erpoz run of one Airflow task instance (the same for every try of it)."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()
    return f"af{digest[:22]}"


class ErpozFlowOperator(BaseOperator):  # type: ignore[misc]
    """Run an erpoz flow in an Airflow task.

    ``flow``: a flow file (``.yaml``), ``module:attr`` or ``file.py:attr`` (loaded on the
    worker), or a :class:`~erpoz.Flow`. ``store``: the erpoz run store every worker and the
    triggerer can reach (a SQLite path on a shared disk, or ``postgresql://…``); ``config``:
    the project file (``erpoz.yaml``) whose models, tools, guards and policy the run uses.
    ``inputs`` (templated) are the flow's inputs; DAG run ``params`` named like a flow input
    fill the others. ``review_timeout`` bounds how long a run may wait for a reviewer (the
    task then fails); ``poll_interval`` is how often the trigger looks at the store.
    """

    template_fields: Sequence[str] = ("inputs",)
    ui_color = "#e8f1ff"

    def __init__(
        self,
        *,
        flow: str | Flow,
        store: str,
        inputs: Mapping[str, Any] | None = None,
        config: str | None = None,
        tags: Mapping[str, str] | None = None,
        poll_interval: float = _POLL_S,
        review_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow = flow
        self.store = store
        self.inputs = dict(inputs or {})
        self.config = config
        self.tags = dict(tags or {})
        self.poll_interval = poll_interval
        self.review_timeout = review_timeout

    # --- running --------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        plan = self._plan()
        inputs = self._inputs(plan, context)
        ti = context["ti"]
        rid = erpoz_run_id(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        tags = {
            "airflow_dag": ti.dag_id,
            "airflow_run": ti.run_id,
            "airflow_task": ti.task_id,
            **self.tags,
        }
        result = asyncio.run(self._run(plan, inputs, rid, tags, getattr(ti, "try_number", 1)))
        ti.xcom_push(key="erpoz_run_id", value=result.run_id)
        return self._finish(result.run_id, result.status, result)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> Any:
        """Called when :class:`ErpozRunTrigger` fires: the run has ended."""
        status = str(event.get("status"))
        result = RunResult(
            run_id=str(event["run_id"]),
            status=status,
            output=event.get("output"),
            error=event.get("error"),
            failed_step=event.get("failed_step"),
        )
        return self._finish(result.run_id, status, result)

    async def _run(
        self,
        plan: Plan,
        inputs: Mapping[str, Any],
        rid: str,
        tags: Mapping[str, str],
        try_number: int,
    ) -> RunResult:
        from ..project import project_services

        st = open_store(self.store)
        try:
            engine = Engine(st, services=await project_services(st, self.config))
            info = await st.get_run(rid)
            if info is not None and info.status in ("failed", "cancelled"):
                rid = f"{rid}.{try_number}"  # a retry of a failed task: a run of its own
                info = await st.get_run(rid)
            if info is None:
                return await engine.run(plan, inputs, run_id=rid, tags=tags)
            if info.status == "succeeded":
                output = json.loads(info.output) if info.output is not None else None
                return RunResult(rid, "succeeded", output=output)
            if info.status == "waiting":
                return RunResult(rid, "waiting")
            # a try that died while the run was going on: go on from where its log stands
            return await engine.resume(rid, plan, requeue=False)
        except FlowError as exc:
            raise AirflowFailException(f"erpoz flow '{plan.name}': {exc}") from exc
        except ErpozError as exc:
            raise AirflowException(f"erpoz run {rid} of flow '{plan.name}': {exc}") from exc
        finally:
            await st.close()

    def _finish(self, run_id: str, status: str, result: RunResult) -> Any:
        if status == "succeeded":
            return _ANY.dump_python(result.output, mode="json")
        if status == "waiting" or status in ("running", "queued"):
            self.log.info(
                "erpoz run %s waits for review; the task defers until a reviewer decides "
                "(erpoz review ls; erpoz review approve %s)",
                run_id,
                run_id,
            )
            self.defer(
                trigger=ErpozRunTrigger(
                    run_id=run_id, store=self.store, poll_interval=self.poll_interval
                ),
                method_name="execute_complete",
                timeout=self.review_timeout,
            )
        where = f" at step '{result.failed_step}'" if result.failed_step else ""
        message = f"erpoz run {run_id} {status}{where}: {result.error}"
        if result.error and "rejected" in result.error:
            raise AirflowFailException(message)  # a person said no: trying again will not help
        raise AirflowException(message)

    # --- inputs ---------------------------------------------------------------------------
    def _plan(self) -> Plan:
        if isinstance(self.flow, Flow):
            return self.flow.compile()
        from ..flow import load_flow

        try:
            return load_flow(self.flow).compile()
        except FlowError as exc:
            raise AirflowFailException(f"erpoz flow {self.flow!r}: {exc}") from exc

    def _inputs(self, plan: Plan, context: Any) -> dict[str, Any]:
        params = context.get("params") or {}
        names = {i.name for i in plan.inputs}
        values = {k: v for k, v in dict(params).items() if k in names}
        values.update(self.inputs)
        return values


class ErpozRunTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires when the erpoz run ``run_id`` has ended (succeeded, failed or cancelled): a
    deferred :class:`ErpozFlowOperator` waits on it instead of on a worker."""

    def __init__(self, run_id: str, store: str, poll_interval: float = _POLL_S) -> None:
        super().__init__()
        self.run_id = run_id
        self.store = store
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"run_id": self.run_id, "store": self.store, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        st = open_store(self.store)
        try:
            while True:
                info = await st.get_run(self.run_id)
                if info is None:
                    yield TriggerEvent(
                        {"run_id": self.run_id, "status": "failed", "error": "no such run"}
                    )
                    return
                if info.status in TERMINAL:
                    event: dict[str, Any] = {"run_id": info.run_id, "status": info.status}
                    if info.status == "succeeded":
                        event["output"] = json.loads(info.output) if info.output else None
                    else:
                        event["error"] = info.error
                        event["failed_step"] = await _failed_step(st, info.run_id)
                    yield TriggerEvent(event)
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await st.close()


async def _failed_step(st: Any, run_id: str) -> str | None:
    for e in reversed(await st.events(run_id)):
        if e.kind == "run_failed":
            step = e.data.get("step")
            return str(step) if step is not None else None
    return None
