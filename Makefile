# ppl: `make run` runs the quickstart example, `make test` the test suite.
# Both create the virtualenv .venv first when it is missing, and reinstall
# the package when pyproject.toml changes; otherwise they start at once.

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The interpreter that creates the venv: python3.11, else python3 (>= 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

.PHONY: venv run test bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if [ -z "$(PYTHON)" ]; then echo "error: no python3.11 or python3 on PATH" >&2; exit 1; fi; \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	    { echo "error: ppl needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1) (set PYTHON=...)" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $(STAMP)

run: venv
	$(BIN)/python examples/quickstart.py

# Two workers (the CI machine has two cores; most of the suite is XLA
# compilation, one core each); a file's tests stay in one worker.
test: venv
	$(BIN)/python -m pytest tests -n 2 --dist loadfile

bench: venv
	$(BIN)/python -m pip install -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run
