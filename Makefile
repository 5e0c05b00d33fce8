# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench env-example clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## Run the whole pipeline offline on the bundled sample data and embedded defaults.
demo: $(STAMP)
	$(PY) scripts/demo.py

## Run the full test suite (real PostgreSQL, S3 endpoint and HTTP servers, all on loopback).
test: $(STAMP)
	$(PY) -m pytest

## The unit tier only (pure logic, no services): seconds, for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

env-example: $(STAMP)
	$(PY) -c "from bond_reporting.settings import env_example; print(env_example(), end='')" > .env.example

clean:
	rm -rf $(VENV) .local out .pytest_cache .ruff_cache
