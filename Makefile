# Techno — the two commands that matter: `make run` (whole stack, embedded defaults) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
PYTHON_VERSION := 3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
BUF := node_modules/.bin/buf
# checkov has a virtual environment of its own (its dependency tree cannot live with the project's: cachetools<6).
K8S_TOOLS := build/k8s-tools
CHECKOV := $(K8S_TOOLS)/bin/checkov

.PHONY: help setup obs-tools run test check lint format typecheck protos protos-check buf docs docs-check compose-check \
	dashboards dashboards-check k8s k8s-check k8s-tools bench-tools pytest bench bench-tls bench-gate bench-audit \
	bench-compare bench-stream clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)"

$(PY): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON_VERSION)
	@touch $(PY)

$(BUF): package.json package-lock.json
	@# npm ci installs exactly the committed lock and never rewrites it (it fails if package.json disagrees), so
	@# a fresh clone stays clean. The lock lists every platform's optional buf binary, as npm writes it.
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(BUF)

setup: $(PY) $(BUF) obs-tools k8s-tools bench-tools ## install the pinned Python and Node tool chains, Prometheus, Alertmanager, kubectl, checkov, wrk

# Prometheus, promtool, Alertmanager and amtool from Debian: the rule tests and the live alerting test need them
# (they fail, never skip, without them); `make run` starts Prometheus and Alertmanager when they are here.
obs-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  echo "installing prometheus and prometheus-alertmanager (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null; }

# wrk drives the benchmarks (a Python load generator would take the CPU it measures); the benchmark smoke test
# (tests/e2e/test_bench_smoke.py) fails, never skips, without it.
bench-tools:
	@command -v wrk >/dev/null || { \
	  echo "installing wrk (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

# kubectl (with its built-in kustomize v5) builds the Kubernetes overlays; the machine image ships it as the
# Debian package `kubectl`. checkov, pinned with its whole tree in infra/k8s/checkov-requirements.txt, goes into
# its own virtual environment. `make k8s-check` and tests/infra/test_k8s.py fail, never skip, without them.
k8s-tools: $(CHECKOV)
	@command -v kubectl >/dev/null || { \
	  echo "installing kubectl (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl >/dev/null; }

$(CHECKOV): infra/k8s/checkov-requirements.txt | $(UV)
	rm -rf $(K8S_TOOLS)
	$(UV) venv --quiet --python $(PYTHON_VERSION) $(K8S_TOOLS)
	$(UV) pip sync --quiet --python $(K8S_TOOLS)/bin/python infra/k8s/checkov-requirements.txt
	@touch $(CHECKOV)

run: $(PY) ## start the whole stack on 127.0.0.1 (SQLite, fake provider), plus Prometheus :9090 and Alertmanager :9093 when installed
	$(PY) -m techno_stack

test: obs-tools bench-tools check pytest ## everything CI runs: static checks, then the whole test suite

check: lint typecheck protos-check buf docs-check dashboards-check compose-check k8s-check ## static checks only

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(PY) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(PY)
	$(VENV)/bin/mypy core services tools scripts tests

protos: $(PY) ## regenerate gen/python from protos/
	$(PY) scripts/protos.py

protos-check: $(PY)
	$(PY) scripts/protos.py --check

buf: $(BUF) $(PY)
	$(PY) scripts/protodeps.py
	$(BUF) lint
	$(BUF) format --diff --exit-code protos

docs: $(PY) ## regenerate docs/configuration.md from the settings classes
	$(PY) scripts/settings_doc.py > docs/configuration.md

docs-check: $(PY)
	$(PY) scripts/settings_doc.py | diff -u docs/configuration.md - || (echo "docs/configuration.md is stale: make docs"; exit 1)

dashboards: $(PY) ## regenerate the Grafana dashboards (infra/grafana/dashboards) from scripts/dashboards.py
	$(PY) scripts/dashboards.py

dashboards-check: $(PY)
	$(PY) scripts/dashboards.py --check

compose-check: $(PY)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

k8s: $(PY) ## regenerate the generated files under infra/k8s, then build every overlay into build/k8s
	$(PY) scripts/k8s_generate.py
	@for overlay in infra/k8s/overlays/*/; do \
	  mkdir -p build/k8s && kubectl kustomize $$overlay > build/k8s/$$(basename $$overlay).yaml && echo "build/k8s/$$(basename $$overlay).yaml"; \
	done

k8s-check: $(PY) k8s-tools
	$(PY) scripts/k8s_generate.py --check
	$(PY) scripts/k8s_check.py --checkov $(CHECKOV)

pytest: $(PY)
	$(VENV)/bin/pytest

bench: $(PY) bench-tools ## requests/s and p50/p95/p99 of POST /v1/process through the whole stack
	$(PY) scripts/bench.py

bench-tls: $(PY) bench-tools ## the same bench with internal mTLS (as shipped) and plaintext, side by side: the CPU cost of mTLS
	$(PY) scripts/bench.py --compare-tls

bench-gate: $(PY) ## latency the gate adds per request (p50/p99), against calling the executor directly
	$(PY) scripts/bench_gate.py

bench-audit: $(PY) ## sustained durable audit appends/s of the memory service on PostgreSQL (group commit)
	$(PY) scripts/bench_audit.py --compare

bench-compare: $(PY) bench-tools ## the stack against a bare chain of its shape and the floor (PostgreSQL, mTLS), with provider latency: one table, #12 targets
	$(PY) scripts/bench_compare.py --provider-latency --floor $(BENCH_ARGS)

bench-stream: $(PY) ## time to first token of POST /v1/process:stream (SSE) through the whole stack, c=1 and c=64
	$(PY) scripts/bench_stream.py $(BENCH_ARGS)

clean: ## remove local state (database, logs, dev key) and caches
	rm -rf var build .pytest_cache .mypy_cache .ruff_cache
