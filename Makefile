# The README's commands. Each one sets up what it needs first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint serve migrate clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . 2>&1 | grep -vE "^\s*$$|!!|\*\*\*|editable|Please be careful|name as your package|WheelFile" || true
	$(BIN)/python -c "import batchrouter"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' 2>&1 | grep -vE "^\s*$$|!!|\*\*\*|editable|Please be careful|name as your package|WheelFile" || true
	$(BIN)/python -c "import batchrouter, pytest, playwright"
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	@bash scripts/run.sh

# Production (docs/operations.md): migrations are their own deploy step; serve never migrates.
migrate: $(VENV)/.installed
	$(BIN)/flask --app app db upgrade

serve: $(VENV)/.installed
	@bash scripts/serve.sh

test: $(VENV)/.installed-test
	@bash scripts/test.sh

bench: $(VENV)/.installed-test
	@bash scripts/bench.sh

lint: $(VENV)/.installed-test
	$(BIN)/pip install -q ruff && $(BIN)/ruff check batchrouter jobs tests bench

clean:
	rm -rf $(VENV) instance/*.db instance/redis*
