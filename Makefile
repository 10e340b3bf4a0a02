# The README's two commands: `make demo` and `make test`. Each creates .venv if missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean bench device-prep

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python setup.cfg setup.py constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,dist,export]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/evoprune demo --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info runs .pytest_cache

# What benchmarks/device_baseline.sh needs on a GPU machine that has torch but not our other dependencies
SHARED_DATA ?= $(or $(EVOPRUNE_SHARED_DATA),../shared/datasets)
device-prep: $(STAMP)
	mkdir -p .whl .data
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -c constraints.txt -d .whl 'deap>=1.4' torch-pruning
	cp $(SHARED_DATA)/cifar10-jpeg.tar.gz .data/
