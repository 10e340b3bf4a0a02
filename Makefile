# The README's two commands: `make demo` and `make test`. Each creates .venv if missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean bench

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
