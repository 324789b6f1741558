# purpose-guard: `make run` starts the example service on the shipped policy,
# `make test` runs the whole suite. Both set up everything they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench deps services clean

$(BIN)/guard: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(BIN)/guard

deps: $(BIN)/guard

services:
	@scripts/install-services

run: deps
	$(BIN)/python -m examples.customers

test: deps services
	$(BIN)/pytest

lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps services
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/sidecar.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
