# callboard: every target sets up what it needs (virtualenv, dependencies, servers).
# `make demo` is the main job, `make test` runs every tier (lint, unit, integration, e2e).

# The first interpreter that really runs and is 3.11+ (pyenv shims may exist without one).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install lock lint test unit integration e2e chaos fast bench demo k8s-tools redis-server clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

# uv installs exactly what uv.lock pins (a fresh machine gets what CI got) and is itself one
# of the locked dev dependencies; pip only bootstraps it, at the locked version.
UV         := $(BIN)/uv
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"/\1/p;}' uv.lock)
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

# The venv gets no pip of its own (ensurepip takes longer than the whole locked install): uv is
# put into it by the interpreter's own pip (`pip --python`), or by ensurepip where there is none.
$(UV):
	@test -n "$(PYTHON)" || { echo "[install] need Python 3.11+ (python3.11, python3.12 or python3)" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "[install] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv --without-pip $(VENV); }
	@echo "[install] bootstrapping uv $(UV_VERSION)"
	@if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
		$(PYTHON) -m pip --python $(BIN)/python install -q "uv==$(UV_VERSION)"; \
	else \
		$(BIN)/python -m ensurepip -q && $(BIN)/python -m pip install -q "uv==$(UV_VERSION)"; \
	fi

$(STAMP): pyproject.toml uv.lock | $(UV)
	@echo "[install] installing callboard and its dev dependencies, as locked in uv.lock"
	@$(UV) sync -q --locked --compile-bytecode --extra dev --python $(BIN)/python
	@touch $@

install: $(STAMP)  ## Create the virtualenv and install callboard with every extra, as uv.lock pins them

lock: | $(UV)  ## Re-resolve uv.lock after editing pyproject.toml (LOCK_ARGS=--upgrade: newest versions)
	$(UV) lock $(LOCK_ARGS)

redis-server:  ## Make sure a real redis-server is available (installs it if needed)
	@tests/support/ensure-redis.sh

lint: install  ## ruff (lint + format check), mypy (strict), import-linter (layers)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install redis-server  ## Every tier: lint, unit, integration, chaos, e2e (kwok), e2e-real (real pods); times each
	@t0=$$(date +%s); $(MAKE) --no-print-directory lint && echo "[time] lint: $$(( $$(date +%s) - t0 )) s"
	$(BIN)/pytest tests -m "not e2e_real"
	@t0=$$(date +%s); $(MAKE) --no-print-directory e2e-real && echo "[time] e2e-real (set-up included): $$(( $$(date +%s) - t0 )) s"

fast: install redis-server  ## Unit and integration tiers only (the inner loop)
	$(BIN)/pytest tests -m "not e2e"

unit: install  ## Unit tier only
	$(BIN)/pytest tests/unit

integration: install redis-server  ## Integration tier only (real redis-server)
	$(BIN)/pytest tests/integration

e2e: install redis-server  ## e2e tier only (real kube-apiserver, built on first use)
	$(BIN)/pytest tests/e2e -m e2e

chaos: install redis-server  ## Fault-injection tier only (real Toxiproxy, built on first use, and redis-server)
	$(BIN)/pytest tests/chaos -m chaos

k8s-tools:  ## Build kube-apiserver, etcd, controller-manager, scheduler, kwok, kubectl, helm (cached)
	tests/k8s/build-tools.sh

bench: install redis-server  ## Benchmarks: print tables, never pass/fail
	$(BIN)/python -m bench

demo: install  ## The main job: a narrated 3-node demo (Redis if available, else in-memory)
	$(BIN)/callboard demo

clean:  ## Remove the virtualenv and caches (keeps the built Kubernetes tools)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# ---- Helm chart, manifests, image and a kind cluster (see charts/callboard) ----

CALLBOARD_VERSION := $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' charts/callboard/Chart.yaml)
IMAGE        ?= callboard:$(CALLBOARD_VERSION)
KIND_CLUSTER ?= callboard
.PHONY: manifests image kind-up e2e-real

manifests:  ## Regenerate manifests/ from the Helm chart (charts/render-manifests.sh)
	@tests/k8s/build-tools.sh helm >/dev/null
	charts/render-manifests.sh

image:  ## Build the callboard image (operator/Dockerfile) with Docker, Podman or Buildah, tagged $(IMAGE)
	IMAGE=$(IMAGE) operator/build-image.sh

e2e-real: install  ## Real pods: a real node (kubelet, containerd) or $$KUBECONFIG's cluster; helm install + tests
	$(BIN)/pytest tests/e2e_real -m e2e_real

kind-up: image  ## Create a kind cluster (if missing) and load the image; then helm install
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name $(KIND_CLUSTER)
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	@echo "next: helm install cb charts/callboard -n callboard --create-namespace --kube-context kind-$(KIND_CLUSTER)"
