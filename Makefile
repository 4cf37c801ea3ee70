# k8s-on-k8s developer commands. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python

K8S_VERSION ?= v1.37.2
# The other releases the e2e runs tenants at (tests/e2e/test_releases.py): their control plane,
# node binaries and paired etcd only.
E2E_RELEASES ?= v1.36.1 v1.36.3
# Built binaries and images live outside the work tree, one directory per version.
K8S_ON_K8S_CACHE ?= /var/cache/k8s-on-k8s
export K8S_ON_K8S_CACHE
CACHE := $(K8S_ON_K8S_CACHE)/$(K8S_VERSION)
# What the rig (tests/e2e/infra) runs with.
RIG_ENV := RIG_PYTHON=$(abspath $(PYTHON)) RIG_BIN_DIR=$(CACHE)/bin RIG_IMAGES_DIR=$(CACHE)/images

.PHONY: test setup lint typecheck unit e2e e2e-deps binaries release-binaries engine images up down bench bench-memory clean

## test: everything CI checks, on a fresh machine: set-up, lint, type check, unit and e2e tests
test: lint typecheck unit e2e

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

## unit: tests/unit and the e2e suite's pure modules (pyproject.toml's testpaths); no rig needed
unit: setup
	$(PYTHON) -m pytest -q

## e2e: a real infrastructure cluster from Kubernetes binaries, the program deployed onto it
e2e: setup e2e-deps binaries release-binaries engine images
	$(RIG_ENV) hack/e2e.sh $(abspath $(PYTHON)) -m pytest tests/e2e -x -v -s -p no:cacheprovider

e2e-deps:
	hack/install-e2e-deps.sh

binaries:
	hack/build-binaries.sh $(K8S_VERSION)

release-binaries:
	for version in $(E2E_RELEASES); do hack/build-binaries.sh $$version; done

engine:
	hack/build-engine.sh

images: setup
	$(PYTHON) -m tests.e2e.images.build --bin-dir $(CACHE)/bin --out-dir $(CACHE)/images

## up: try it: the local rig from the real binaries, then the real `pulumi up` of this project
up: setup e2e-deps binaries engine images
	$(RIG_ENV) hack/infra.sh up
	$(RIG_ENV) hack/e2e.sh $(abspath $(PYTHON)) -m tests.e2e.local up

## down: `pulumi destroy` of the stack `make up` made, then the rig stops; nothing stays running
down: setup
	if [[ -e /run/netns/$${RIG_NETNS:-k8sonk8s-rig} ]]; then \
	  $(RIG_ENV) hack/e2e.sh $(abspath $(PYTHON)) -m tests.e2e.local down; fi
	$(RIG_ENV) hack/infra.sh down

## bench: program evaluation for 1, 10 and 50 control planes under the mock runtime
bench: setup
	$(PYTHON) -m benchmarks.evaluate 1 10 50

## bench-memory: the working set of the tenant `make up` left running, beside the rig's own
bench-memory: setup
	$(RIG_ENV) hack/e2e.sh $(abspath $(PYTHON)) -m benchmarks.tenant_memory

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
