# k8s-on-k8s developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: test setup lint typecheck unit bench clean

## test: everything CI checks, on a fresh machine: set-up, lint, type check, unit tests
test: lint typecheck unit

## setup: a virtualenv with the pinned Python dependencies
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy components __main__.py tests benchmarks

unit: setup
	$(PYTHON) -m pytest tests/unit -q

## bench: program evaluation for 1, 10 and 50 control planes under the mock runtime
bench: setup
	$(PYTHON) -m benchmarks.evaluate 1 10 50

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
