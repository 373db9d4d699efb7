# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tokenstorm needs Python >= 3.11, found " + sys.version.split()[0] + "; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.runtime-installed

demo: $(VENV)/.runtime-installed
	$(BIN)/python -m tokenstorm.demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

# The whole suite, test modules in parallel (pyproject.toml: -n 4 --dist loadfile).
test: lint
	$(BIN)/python -m pytest

# Without the slow end-to-end runs (compose rig, sweeps, demo, wheel install): for quick iterations.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/mock_capacity.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
