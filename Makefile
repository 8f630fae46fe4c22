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
# `make test`: the fast cases' report, shown after the heavy ones'
FAST_LOG := $(VENV)/fast-tests.log
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

# The heavy cases (each starts Ray clusters or runs DVC pipelines) one after another, and meanwhile the fast
# ones, niced so they take only the CPU the heavy ones leave idle, spread over the cores by pytest-xdist;
# their report follows. (xdist's own grouping, --dist loadgroup, does not group under pytest 9.)
test: $(STAMP)
	@nice -n 10 $(BIN)/python -m pytest -q -m "not heavy" -n auto > $(FAST_LOG) 2>&1 & fast=$$!; \
	$(BIN)/python -m pytest -q -m heavy; heavy=$$?; \
	wait $$fast; fast=$$?; cat $(FAST_LOG); rm -f $(FAST_LOG); \
	test $$heavy -eq 0 && test $$fast -eq 0

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

# One prepared GPU check (bench/gpu_check.py): the GPU rows of bench/RESULTS.md (train step and inference with AMP,
# ResANN-56/110 images/s, reader vs training), the train stage on digits through a worker fault and its resume,
# and the serving bench, as one table, in under 8 minutes on one GPU. DEVICE=cpu runs it at tiny sizes.
.PHONY: gpu-check
DEVICE ?= cuda
gpu-check: $(STAMP)
	DEVICE=$(DEVICE) $(BIN)/python -m bench.gpu_check

# A multi-node Ray cluster on this machine, all on 127.0.0.1 (head + 2 workers; docs/cluster.md, "On one
# machine"). Prints the address and token as JSON; Ctrl-C stops it and only it.
.PHONY: cluster
cluster: $(STAMP)
	$(BIN)/python infra/ray/local_cluster.py
