# terrasnap — every target installs what it needs itself (venv, packages, emulators, Kubernetes binaries).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .state
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo test test-unit test-engine test-cluster lint bench cluster cluster-down cluster-bin clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip uv >/dev/null
	@# bytecode compiled once here: PYTHONDONTWRITEBYTECODE (exported above) would make every process compile it
	@VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/uv pip install -q --compile-bytecode -e '.[dev]'
	@touch $@

demo: venv
	@$(PY) tests/demo.py --state $(STATE)/demo

# Binaries (Kubernetes, helm) and the images are built or found in the cache first, so no test timeout includes a build.
test: venv cluster-bin helm-bin azurite-bin images
	@$(PY) -m pytest tests

test-unit: venv
	@$(PY) -m pytest tests/unit

test-engine: venv azurite-bin
	@$(PY) -m pytest tests/engine

lint: venv
	@$(VENV)/bin/ruff check operator tests
	@$(VENV)/bin/mypy
	@# the test control plane (cluster.py, the node agent), test support and demos: every function annotated
	@$(VENV)/bin/mypy --disallow-untyped-defs --disallow-incomplete-defs --warn-return-any \
		tests/controlplane tests/support tests/demo.py tests/demo_cluster.py

bench: venv
	@$(PY) tests/bench/bench_engine.py

.PHONY: bench-gc bench-stores
bench-gc: venv
	@$(PY) tests/bench/bench_gc.py

bench-stores: venv azurite-bin
	@$(PY) tests/bench/bench_stores.py

.PHONY: demo-cluster bench-operator
demo-cluster: venv
	@$(PY) tests/demo_cluster.py --state $(STATE)/demo-cluster

bench-operator: venv
	@$(PY) tests/bench/bench_operator.py

cluster-bin:
	@bash tests/controlplane/build.sh

# Azurite (npm), the Azure Blob emulator the azure:// tests run, cached by version like the binaries above.
.PHONY: azurite-bin
azurite-bin:
	@bash tests/support/install_azurite.sh >/dev/null

cluster: venv
	@$(PY) tests/controlplane/cluster.py up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) tests/controlplane/cluster.py down $(if $(FORCE),--force); else echo "no venv: nothing to stop"; fi

# The CRD's spec.validation block is generated from terrasnap.api.policy; the chart carries byte-equal copies.
.PHONY: crds
crds: venv
	@$(PY) charts/gen-crd-validation.py
	@bash charts/sync-crds.sh

clean:
	rm -rf $(STATE) .pytest_cache .mypy_cache .ruff_cache

# --- chart, images (tests/chart, images/) -------------------------------------------------------------------
.PHONY: images helm-bin test-chart
helm-bin:
	@bash tests/chart/build_helm.sh

test-chart: venv images
	@bash tests/chart/tools.sh hadolint >/dev/null
	@$(PY) -m pytest tests/chart

# The operator and worker images with podman from Debian's packages and the hashed PyPI locks (images/build.sh):
# localhost/terrasnap/<component>:<version>, cached by the hash of their inputs (a second run costs seconds).
# REGISTRY=ghcr.io/terrasnap also tags them for `podman push`. tests/images runs them.
.PHONY: test-images
images:
	@bash images/build.sh

test-images: venv images
	@$(PY) -m pytest tests/images
