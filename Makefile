# Two commands for a newcomer: `make demo` and `make test`. Each makes its own virtual
# environment (.venv by default) and installs what it needs into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo lint bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "datafast-async needs Python 3.10 or newer (PYTHON=$(PYTHON))"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

## Run the test suite (unit and 127.0.0.1 integration tests); PYTEST_ARGS='-m "not slow"'
## leaves out the slow proofs.
PYTEST_ARGS ?=
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The main job: the demo against the built-in fake DataFast server.
demo: $(VENV)/.demo-installed
	$(BIN)/datafast-async demo

## ruff (with its ASYNC rules) and mypy --strict on the package and its tests.
lint: $(VENV)/.test-installed
	$(BIN)/ruff check datafast_async tests examples benchmarks
	$(BIN)/ruff format --check datafast_async tests examples benchmarks
	$(BIN)/mypy

## The benchmarks (about ten minutes, every core busy): prints the table of docs/performance.md,
## writes benchmarks/results/ and benchmarks/last-run.json.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks

## The benchmarks on tiny sizes, in seconds: checks that they work, not how fast (CI).
bench-quick: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf .venv .venv-* .mypy_cache .ruff_cache .pytest_cache
