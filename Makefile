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
	@echo "make lint   ruff"
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

lint: $(VENV)/.installed-test
	$(BIN)/ruff check edge dramatiq_actors simnode tests bench

bench: $(VENV)/.installed-test
	$(BIN)/python bench/proxy.py

clean:
	rm -rf $(VENV) .portal .pytest_cache
