"""Airflow's tests run in their own venv (``make test-airflow``): Airflow reads its settings
when it is imported, so they are set here, before any test module imports it, to a throw-away
AIRFLOW_HOME with a SQLite metadata database. Without Airflow the tests are skipped, unless
``ERPOZ_TEST_AIRFLOW=required`` (the CI stage), where that is a failure."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

HAVE_AIRFLOW = importlib.util.find_spec("airflow") is not None

if HAVE_AIRFLOW:
    HOME = Path(tempfile.mkdtemp(prefix="erpoz-airflow-"))
    (HOME / "dags").mkdir()
    os.environ.update(
        AIRFLOW_HOME=str(HOME),
        AIRFLOW__CORE__DAGS_FOLDER=str(HOME / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{HOME}/airflow.db",
    )
