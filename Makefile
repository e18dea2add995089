# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test install install-test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

## Start maintlink on its embedded default (SQLite in ./data, sandbox system ready).
run: install
	$(BIN)/maintlink serve --port $(PORT) --data-dir ./data

## Install test dependencies and run the whole suite (SQLite and PostgreSQL).
test: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -n 2 -p xdist

lint: install-test
	$(BIN)/ruff check src tests bench

bench: install-test
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) data .pytest_cache
