# The README's commands. Each one sets up what it needs first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint venv install install-test serve clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

install: venv
	$(BIN)/pip install -q -e .

install-test: venv
	$(BIN)/pip install -q -e '.[test]'

run: install
	@bash scripts/run.sh

test: install-test
	@bash scripts/test.sh

bench: install-test
	@bash scripts/bench.sh

lint: install-test
	$(BIN)/pip install -q ruff && $(BIN)/ruff check batchrouter jobs tests

clean:
	rm -rf $(VENV) instance/*.db instance/redis
