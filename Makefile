# The README's two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo triage test venv dev lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,local,server,postgres]'

demo: $(BIN)/python
	$(BIN)/pip install -q -e '.[local]'
	$(BIN)/erpoz demo

triage: venv
	cd examples && ../$(BIN)/erpoz run triage.yaml -i ticket="My invoice INV-1042 was charged twice, please refund" --store ../.erpoz/triage.db
	$(BIN)/erpoz runs ls --store .erpoz/triage.db --limit 5

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: dev
	$(BIN)/pip install -q -r bench/requirements.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .erpoz .mypy_cache .ruff_cache .pytest_cache
