# Shipyard: the two commands a fresh machine needs are `make pipeline` and `make test`.
# Each creates .venv and installs the locked dependencies first (skipped when up to date).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock-cpu.txt
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

.PHONY: install pipeline test test-fast lint typecheck bench package lock clean

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$(TORCH)" = system ]; then \
	  grep -v '^torch==' $(LOCK) > $(VENV)/lock-no-torch.txt && \
	  $(BIN)/pip install --disable-pip-version-check -q -r $(VENV)/lock-no-torch.txt; \
	else \
	  $(BIN)/pip install --disable-pip-version-check -q -r $(LOCK); \
	fi
	@$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.shipyard-installed-*
	@touch $@
	@echo "shipyard: dependencies installed in $(VENV)"

# The main job: the pipeline on the tiny preset with embedded defaults (local Flyte,
# sqlite MLflow under ~/.shipyard, local processes). Extra args: make pipeline ARGS='...'.
pipeline: install
	$(BIN)/pyflyte run workflows/pipeline.py shipyard_pipeline --preset tiny $(ARGS)

# The test suite CI runs: every tier but `gpu` (which skips without a CUDA device anyway).
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/pytest -m "not gpu" $(ARGS)

test-fast: install
	$(BIN)/pytest -m "unit" $(ARGS)

bench: install
	$(BIN)/python -m bench.train_step $(ARGS)

# Compile check for `pyflyte run --remote`: serialize every task and workflow.
package: install
	$(BIN)/pyflyte --pkgs workflows package --image $${IMAGE:-ghcr.io/shipyard/shipyard:dev} -f -o /tmp/shipyard-flyte-package.tgz

lock:
	{ grep '^#' $(LOCK); $(BIN)/pip freeze --exclude-editable | grep -v '^shipyard'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
