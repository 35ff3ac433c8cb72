PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test serve demo test-model bench clean

install: $(BIN)/mlxserve

$(BIN)/mlxserve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	@touch $@

test: install
	$(BIN)/pytest

serve: install
	$(BIN)/mlxserve serve

demo: install
	$(BIN)/mlxserve demo

test-model: install
	$(BIN)/python scripts/make_test_model.py --out mlxserve/demo_model

bench: install
	$(BIN)/python scripts/bench.py --model mlxserve/demo_model --prompt-tokens 0 --max-tokens 200 --out bench.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
