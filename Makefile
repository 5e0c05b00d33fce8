# Two commands on a fresh machine: `make demo` and `make test`. `make help` lists the others.
# Python: pyproject.toml's requires-python (3.11), checked before .venv is made; python3.11 is
# preferred when it is on PATH. `make PYTHON=/path/to/python3.11 ...` picks another one.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
# The stamp names the Python version that made .venv: another version makes .venv anew.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
STAMP := $(VENV)/.installed-$(PYTHON_VERSION)
LOCK := requirements.lock
# The Prefect notification block the alerts send through (TYPE/NAME), and the Secret block to check.
ALERT_BLOCK ?=
SECRETS_BLOCK ?=
# Another image for `make deploy` (a rollback: atddocker/atd-bond-reporting:<git sha>).
IMAGE ?=

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast lint check-config deploy alerts lock lock-check bench env-example clean

$(STAMP): requirements.txt requirements-dev.txt $(LOCK) pyproject.toml
	@$(PYTHON) scripts/check_python.py
	@if [ -d $(VENV) ] && ! ls $(VENV)/.installed-$(PYTHON_VERSION) >/dev/null 2>&1 \
		&& [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$(PYTHON_VERSION)" ]; then \
		echo "make: $(VENV) was made by another Python; making it anew with $(PYTHON) ($(PYTHON_VERSION))"; \
		rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	# Every transitive version as in the image: the lock, without its hashes (hashes in a constraints
	# file would demand them for the dev-only packages too), constrains the dev install.
	sed -e '/--hash=/d' -e 's/ *\\$$//' $(LOCK) > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c $(VENV)/constraints.txt
	rm -f $(VENV)/.installed*
	touch $(STAMP)

help: ## List the targets
	@echo "make TARGET   (first time: .venv is made with Python $(PYTHON_VERSION) from $(PYTHON))"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Scripts by hand: .venv/bin/python SCRIPT --help (or activate: . .venv/bin/activate). Docs: docs/"

demo: $(STAMP) ## Run the whole pipeline offline (Prefect flow, sample data, embedded PostgreSQL)
	$(PY) scripts/demo.py

test: $(STAMP) ## Run the full test suite (real PostgreSQL, S3 endpoint and HTTP servers on loopback)
	$(PY) -m pytest

test-fast: $(STAMP) ## Run the unit tier only (pure logic, no services): for the edit-test loop
	$(PY) -m pytest tests/unit -q

lint: $(STAMP) ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check-config: $(STAMP) ## Check the settings (env + .env, or SECRETS_BLOCK=NAME) and every service, one line each
	$(PY) -m bond_reporting.check_config $(if $(SECRETS_BLOCK),--secrets-block $(SECRETS_BLOCK))

deploy: $(STAMP) ## prefect deploy --all to PREFECT_API_URL, creating the work pool if missing (IMAGE=...: rollback)
	$(PY) -m bond_reporting.deployment deploy $(if $(IMAGE),--image "$(IMAGE)")

alerts: $(STAMP) ## Create/update the failure and 26-hour staleness alerts (ALERT_BLOCK=TYPE/NAME)
	@test -n "$(ALERT_BLOCK)" || { echo "make alerts: set ALERT_BLOCK=TYPE/NAME, the Prefect notification block (e.g. slack-webhook/bond-reporting-alerts)" >&2; exit 2; }
	$(PY) -m bond_reporting.deployment alerts --block "$(ALERT_BLOCK)"

# lock and lock-check use the venv's uv as it is: requirements.txt may have changed beyond the old lock.
lock: ## Re-lock requirements.txt into requirements.lock (every package, hashes; keeps current pins)
	@test -x $(VENV)/bin/uv || $(MAKE) $(STAMP)
	$(VENV)/bin/uv pip compile requirements.txt --quiet --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o $(LOCK)

lock-check: ## Fail if requirements.lock is not what `make lock` makes from requirements.txt
	@test -x $(VENV)/bin/uv || $(MAKE) $(STAMP)
	@cp $(LOCK) $(VENV)/lock-check.txt
	@$(VENV)/bin/uv pip compile requirements.txt --quiet --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o $(VENV)/lock-check.txt
	@diff -u $(LOCK) $(VENV)/lock-check.txt && echo "lock-check: $(LOCK) is current" \
		|| { echo "lock-check: $(LOCK) is out of date: run make lock" >&2; exit 1; }

bench: $(STAMP) ## Run every benchmark (figures and ratio to a same-run baseline)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

env-example: $(STAMP) ## Regenerate .env.example from bond_reporting/settings.py
	$(PY) -c "from bond_reporting.settings import env_example; print(env_example(), end='')" > .env.example

clean: ## Remove .venv, local state (.local) and outputs (out)
	rm -rf $(VENV) .local out .pytest_cache .ruff_cache
