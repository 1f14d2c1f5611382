"""docs/integrations/airflow.md: its DAG file runs as written (paths pointed here) in a real
Airflow, and the output reaches XCom."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

if os.environ.get("ERPOZ_TEST_AIRFLOW") == "required":
    import airflow  # noqa: F401
else:
    pytest.importorskip("airflow", reason="Airflow runs in its own venv: make test-airflow")

from test_docs import fenced_blocks

from .conftest import HOME
from .test_airflow import metadata_db  # noqa: F401  (the module's fresh metadata database)

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "integrations" / "airflow.md"


def test_the_dag_file_of_the_page_runs(tmp_path: Path) -> None:
    (code,) = [b for lang, b in fenced_blocks(PAGE.read_text(encoding="utf-8")) if lang == "python"]
    assert "/opt/erpoz/examples/triage.yaml" in code and "/srv/erpoz/erpoz.db" in code
    code = code.replace("/opt/erpoz/examples/triage.yaml", str(ROOT / "examples" / "triage.yaml"))
    code = code.replace("/srv/erpoz/erpoz.db", str(tmp_path / "erpoz.db"))
    path = HOME / "dags" / "erpoz_triage.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("erpoz_triage_dag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as Airflow parses it (__name__ is not __main__)
    dag_run = module.dag.test()
    (ti,) = dag_run.get_task_instances()
    assert dag_run.state == "success"
    reply = ti.xcom_pull(task_ids="triage")
    assert isinstance(reply, str) and "INV-1234" in reply
