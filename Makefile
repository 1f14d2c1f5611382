# The README's two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo triage test test-airflow test-kfp venv dev lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,local,server,postgres]'

demo: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[local]'
	$(BIN)/erpoz demo

triage: venv
	cd examples && ../$(BIN)/erpoz run triage.yaml -i ticket="My invoice INV-1042 was charged twice, please refund" --store ../.erpoz/triage.db
	$(BIN)/erpoz runs ls --store .erpoz/triage.db --limit 5

lint: dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

# Two workers (pytest-xdist), each taking whole files, so that a file's module fixtures (a
# model, a server, a Ray cluster) are made once: 2,300 tests in ~5 min instead of ~8 on 2 cores.
# PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# Airflow and kfp pin much of what they need (kfp: protobuf 6, older requests), so each has a venv
# of its own with erpoz installed editable; `make test` never touches them. Versions tested:
AIRFLOW_VERSION ?= 3.3.2
KFP_VERSION ?= 2.17.3

.venv-airflow/bin/python:
	$(PY) -m venv .venv-airflow
	.venv-airflow/bin/python -m pip install -q --upgrade pip
	.venv-airflow/bin/python -m pip install -q 'apache-airflow==$(AIRFLOW_VERSION)' pytest
	.venv-airflow/bin/python -m pip install -q -e '.[airflow]'

test-airflow: .venv-airflow/bin/python
	ERPOZ_TEST_AIRFLOW=required .venv-airflow/bin/python -m pytest -q -p no:cacheprovider tests/integrations/airflow

.venv-kfp/bin/python:
	$(PY) -m venv .venv-kfp
	.venv-kfp/bin/python -m pip install -q --upgrade pip
	.venv-kfp/bin/python -m pip install -q 'kfp==$(KFP_VERSION)' pytest
	.venv-kfp/bin/python -m pip install -q -e '.[kfp]'

test-kfp: .venv-kfp/bin/python
	ERPOZ_TEST_KFP=required .venv-kfp/bin/python -m pytest -q -p no:cacheprovider tests/integrations/kubeflow

bench: dev
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-airflow .venv-kfp .erpoz .mypy_cache .ruff_cache .pytest_cache
