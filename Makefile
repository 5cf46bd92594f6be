# userpulse — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-unit faults test-integration lint typecheck check stack-up stack-down stack-status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ with userpulse and its test tools (idempotent)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "userpulse needs Python 3.11+; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install ## stack up, start a worker, publish sample events, show triggers and profiles
	$(BIN)/userpulse demo

test: install ## the whole suite: unit, integration and end-to-end (starts its own Kafka and Redis)
	$(BIN)/python -m pytest

faults: install ## the fault suite at full size (kills, outages, restores), printing the verifier's tables
	FAULTS=full $(BIN)/python -m pytest tests/faults --timeout 1800

test-unit: install ## the pure, fast tests only
	$(BIN)/python -m pytest tests/unit

lint: install ## ruff lint and format check
	$(BIN)/ruff check streams agents tests deploy benchmarks
	$(BIN)/ruff format --check streams agents tests deploy benchmarks

typecheck: install ## mypy --strict on streams/ and agents/
	$(BIN)/mypy

check: lint typecheck test ## everything CI runs

stack-up: install ## start the local Kafka + Redis (prints export lines)
	$(BIN)/userpulse stack up

stack-down: install ## stop everything the local stack (and demo) started
	$(BIN)/userpulse stack down

stack-status: install
	$(BIN)/userpulse stack status

clean: ## remove the venv and local state (stops the stack first)
	-test -x $(BIN)/userpulse && $(BIN)/userpulse stack down
	rm -rf $(VENV) .userpulse .pytest_cache .mypy_cache .ruff_cache *.egg-info

.PHONY: bench
bench: install ## benchmarks (full size, ~1 h 40 min on a quiet machine): BENCH_ARGS=--quick for a smoke run
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
