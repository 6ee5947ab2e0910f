# snlm: the two commands a person needs are `make demo` and `make test`; everything else is their plumbing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test lint typecheck pytest lab demo bench system-deps clean

# Create the environment from the lock file (hashes checked), once per change of the lock or pyproject.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "snlm needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian packages the tests need (Samba AD DC for the directory tests), installed only when we can.
system-deps:
	@sh scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps
	$(BIN)/pytest

## The whole test suite: lint, format, the import contracts (lint-imports), types, then every test.
test: lint typecheck pytest

## Start a lab of simulated Hyper-V hosts from the default topology (Ctrl-C stops it).
lab: $(STAMP)
	$(BIN)/python -m lab --inventory-out .snlm/lab/inventory.yaml

## The end-to-end demo: Temporal dev server (UI on 127.0.0.1:8233), a lab, a worker and a watched campaign.
demo: $(STAMP) system-deps
	$(BIN)/python -m starter.demo

## Print the measured figures of every benchmark (lab, directory, one move, many moves); at the end, which could
## not run and why. `.venv/bin/python -m benchmarks --quick` for the shorter runs.
bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .snlm
