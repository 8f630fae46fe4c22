# Two entry points for a fresh machine: `make repro` (install + run the pipeline on the embedded
# digits dataset) and `make test` (install + run the whole test suite). Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages (dvc), Ray jobs and tools the tests start run `python`, `dvc`, ... from PATH: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: install repro test test-quick lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# torch first and alone: pins the CPU wheel before anything could pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not heavy" -x

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache

# A multi-node Ray cluster on this machine, all on 127.0.0.1 (head + 2 workers; docs/cluster.md, "On one
# machine"). Prints the address and token as JSON; Ctrl-C stops it and only it.
.PHONY: cluster
cluster: $(STAMP)
	$(BIN)/python infra/ray/local_cluster.py
