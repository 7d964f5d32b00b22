# Inference Portal — two commands: `make dev` and `make test`.
#
# Everything is installed into .venv by these targets; nothing needs to be set up
# by hand beyond Python 3.11+ (on Debian/Ubuntu the python3-venv package is
# installed for you when you are root or have sudo).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: dev test lint bench clean help

help:
	@echo "make dev    run the portal on embedded defaults (SQLite, embedded Redis, simulated GPUs)"
	@echo "make test   install test dependencies and run the whole suite"
	@echo "make lint   ruff, the import contracts (lint-imports) and mypy"
	@echo "make bench  run the benchmarks (figures in bench/README.md)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { scripts/ensure-system-packages venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-dev

dev: $(VENV)/.installed-dev
	$(BIN)/portal dev

test: $(VENV)/.installed-test
	@scripts/ensure-system-packages test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every linter runs even when one fails, so one run lists everything; the target
# fails if any did. Import contracts and mypy's settings are in pyproject.toml.
lint: $(VENV)/.installed-test
	@status=0; \
	echo "ruff check"; $(BIN)/ruff check edge dramatiq_actors simnode tests bench || status=1; \
	echo "lint-imports"; $(BIN)/lint-imports || status=1; \
	echo "mypy"; $(BIN)/mypy || status=1; \
	exit $$status

bench: $(VENV)/.installed-test
	$(BIN)/python bench/proxy.py

clean:
	rm -rf $(VENV) .portal .pytest_cache
