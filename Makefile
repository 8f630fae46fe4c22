# Two entry points for a fresh machine: `make repro` (install + run the pipeline on the embedded
# digits dataset) and `make test` (install + run the whole test suite). Both build .venv from nothing.
PYTHON ?= python3
# Where pip gets torch (the only package whose build differs per machine). Empty: pip's own indexes, i.e.
# PyPI, whose Linux torch wheels are CUDA builds (several GB), or whatever the machine's pip config adds.
# CPU-only: make clean; make TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ...
# Another CUDA: make clean; make TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 ...
TORCH_INDEX_URL ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages (dvc), Ray jobs and tools the tests start run `python`, `dvc`, ... from PATH: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: install repro test test-quick lint clean experiments results

# torch first and alone, from TORCH_INDEX_URL when set: that index's build (2.13.0+cpu) sorts above PyPI's
# 2.13.0 and satisfies the same public pin in constraints.txt, so the second step keeps it.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -c constraints.txt torch $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

# pytest-xdist: the heavy cases one after another on one worker (tests/conftest.py groups them: each starts
# Ray clusters or runs DVC pipelines), the fast ones on the other cores meanwhile.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not heavy" -n auto -x

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache

# The papers' tables on Fashion-MNIST (docs/results.md): queue and run the DVC experiments, then rebuild the tables.
experiments: $(STAMP)
	$(BIN)/python -m experiments.run --size cpu

results: $(STAMP)
	$(BIN)/python -m experiments.results --size cpu

# Mutation testing of the core (docs/mutation.md): periodic, not part of CI. MUTANTS narrows the run to one
# module's mutants, e.g. make mutation MUTANTS='anytime.weighting*'; results stay in mutants/ between runs.
.PHONY: mutation
MUTANTS ?=
mutation: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[mutation]"
	nice $(BIN)/mutmut run $(if $(MUTANTS),"$(MUTANTS)")
	$(BIN)/mutmut results

# A multi-node Ray cluster on this machine, all on 127.0.0.1 (head + 2 workers; docs/cluster.md, "On one
# machine"). Prints the address and token as JSON; Ctrl-C stops it and only it.
.PHONY: cluster
cluster: $(STAMP)
	$(BIN)/python infra/ray/local_cluster.py
