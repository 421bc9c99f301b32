# Shipyard: the two commands a fresh machine needs are `make pipeline` and `make test`.
# Each creates .venv and installs the locked dependencies first (skipped when up to date).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock-cpu.txt
# Pretrained weights and benchmark data from registry packages, hash-pinned, installed --no-deps
ASSETS := requirements/assets.txt
# TORCH=system keeps a torch already in the venv (GPU machines); default installs the CPU build.
TORCH ?= cpu
STAMP := $(VENV)/.shipyard-installed-$(TORCH)

# Offline by construction: nothing below may fetch models or data sets from a hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
# uv, unlike pip, installs no bytecode. With PYTHONDONTWRITEBYTECODE set in the caller's
# environment (as on this project's machines) nothing would ever write it either, and every
# process (pyflyte, each torchrun worker, each test subprocess) would compile flytekit, torch
# and transformers from source again: about 9 s more per `import workflows.pipeline` on
# 2 cores. Let the first import write it, into the venv and __pycache__ (git-ignored).
# Compiling all of site-packages at install instead (`uv --compile-bytecode`) costs about
# 170 CPU-seconds here, more than what the pipeline ever imports.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install pipeline pipeline-tiny test test-fast lint typecheck bench package lock clean checkov checkov-lock browser

install: $(STAMP)

# uv installs from the hashed lock (--require-hashes: nothing unlisted installs, no index can
# substitute a package) and shows its progress. uv reads no pip configuration, so the
# machine's pip find-links (where a CPU torch wheel may live) are handed over explicitly.
FIND_LINKS ?= $(or $(UV_FIND_LINKS),$(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(BIN)/uv pip install --python $(BIN)/python $(foreach f,$(FIND_LINKS),--find-links $(f))

$(STAMP): $(LOCK) $(ASSETS) requirements/bootstrap.txt pyproject.toml
	@echo "shipyard: installing the locked dependencies into $(VENV) (uv, hashes required)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check -q --require-hashes -r requirements/bootstrap.txt
	@if [ "$(TORCH)" = system ]; then \
	  awk '/^torch==/{skip=1; next} skip && /^[a-zA-Z]/{skip=0} !skip' $(LOCK) > $(VENV)/lock-no-torch.txt && \
	  $(UV_INSTALL) --require-hashes -r $(VENV)/lock-no-torch.txt; \
	else \
	  $(UV_INSTALL) --require-hashes -r $(LOCK); \
	fi
	@$(UV_INSTALL) --no-deps --require-hashes -r $(ASSETS)
	@$(UV_INSTALL) --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.shipyard-installed-*
	@touch $@
	@echo "shipyard: dependencies installed in $(VENV)"

# The main job: fine-tune the packaged SmolLM2-135M-Instruct (preset smol) with embedded
# defaults (local Flyte, sqlite MLflow under ~/.shipyard, local processes), evaluate it against
# its base, register it and canary it against the base on vLLM. `make pipeline PRESET=tiny`
# (or `make pipeline-tiny`) runs the 2 M-parameter from-scratch model the tests use.
# Extra args: make pipeline ARGS='...'.
PRESET ?= smol
pipeline: install
	$(BIN)/pyflyte run workflows/pipeline.py shipyard_pipeline --preset $(PRESET) $(ARGS)

pipeline-tiny:
	$(MAKE) --no-print-directory pipeline PRESET=tiny

# The test suite CI runs: every tier but `gpu` (which skips without a CUDA device anyway).
test: install browser
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory checkov
	$(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/pytest -m "not gpu" $(ARGS)

# Headless chromium for tests/reports/test_browser.py (renders every report page). Installed
# with apt-get only when missing and only as root; otherwise says how (the test then skips).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "shipyard: installing chromium (apt-get) for the report browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "shipyard: chromium not found; the report browser test will skip. Install it with" \
	       "'sudo apt-get install chromium' (Debian/Ubuntu)."; \
	fi

test-fast: install
	$(BIN)/pytest -m "unit" $(ARGS)

bench: install
	$(BIN)/python -m bench.train_step $(ARGS)

# Compile check for `pyflyte run --remote`: serialize every task and workflow.
package: install
	$(BIN)/pyflyte --pkgs workflows package --image $${IMAGE:-ghcr.io/shipyard/shipyard:dev} -f -o /tmp/shipyard-flyte-package.tgz

# Regenerate the hashed lock from what the venv holds now (add a package with
# `$(BIN)/uv pip install --python $(BIN)/python NAME`, then `make lock`).
lock:
	$(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v -e '^shipyard' -e '^uv==' > $(VENV)/freeze.txt
	{ grep '^#' $(LOCK); $(UV_INSTALL:install=compile) --generate-hashes --no-header \
	    --python-platform x86_64-manylinux_2_28 $(VENV)/freeze.txt; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

# IaC scan (checkov, PyPI) of what is actually deployed: every kustomize overlay rendered with
# kubectl, the task image's Dockerfile and the GitHub Actions workflows. Zero failed checks;
# every suppression is justified where it is made (a `checkov.io/skipN` annotation in the
# manifests, `# checkov:skip=ID: reason` in the Dockerfile and workflows). checkov lives in its
# own venv (its pins conflict with the project lock), installed from a hashed requirements file.
CHECKOV_VERSION ?= 3.3.30
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.shipyard-installed
CHECKOV_LOCK := requirements/checkov.txt
K8S_OVERLAYS := $(wildcard infra/k8s/overlays/*)

$(CHECKOV_STAMP): $(CHECKOV_LOCK) | $(STAMP)
	@echo "shipyard: installing checkov into $(CHECKOV_VENV) (uv, hashes required)"
	@rm -rf $(CHECKOV_VENV)
	@$(BIN)/uv venv --quiet --python $(BIN)/python $(CHECKOV_VENV)
	@$(BIN)/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes -r $(CHECKOV_LOCK)
	@touch $@

# One checkov run (its start-up dominates) over a temp tree: the rendered overlays, the
# Dockerfile and the workflows at their repository paths (the workflow scanner only reads
# files under .github/workflows/).
checkov: $(CHECKOV_STAMP)
	@set -euo pipefail; out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	mkdir -p "$$out/rendered" "$$out/infra/image" "$$out/.github"; \
	for overlay in $(K8S_OVERLAYS); do \
	  $(BIN)/kubectl kustomize "$$overlay" > "$$out/rendered/$$(basename $$overlay).yaml"; \
	done; \
	cp infra/image/Dockerfile "$$out/infra/image/"; cp -r .github/workflows "$$out/.github/"; \
	rc=0; BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --skip-download \
	  --download-external-modules false --framework kubernetes dockerfile github_actions \
	  -d "$$out" -o json --output-file-path "$$out/report" > /dev/null || rc=$$?; \
	$(BIN)/python infra/scan/checkov_report.py "$$out/report/results_json.json" "$$out"; \
	exit $$rc

checkov-lock:
	{ grep '^#' $(CHECKOV_LOCK); echo "checkov==$(CHECKOV_VERSION)" | $(BIN)/uv pip compile - \
	    --generate-hashes --no-header --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28; } > $(CHECKOV_LOCK).new
	mv $(CHECKOV_LOCK).new $(CHECKOV_LOCK)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
