PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# mcp-cli, for its end-to-end test, in a venv of its own: it pulls ~90 packages, among
# them PyPI's `asyncio` package and google-genai's tenacity<9.2 (LangChain has 9.2).
MCP_CLI_VENV := .venv-mcp-cli
MCP_CLI := mcp-cli==0.20.1 mcp==2.3.0

.PHONY: install test serve demo test-model bench clean

install: $(BIN)/mlxserve $(MCP_CLI_VENV)/bin/mcp-cli

$(BIN)/mlxserve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	@touch $@

$(MCP_CLI_VENV)/bin/mcp-cli: Makefile
	$(PYTHON) -m venv $(MCP_CLI_VENV)
	$(MCP_CLI_VENV)/bin/pip install $(MCP_CLI)
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
	rm -rf $(VENV) $(MCP_CLI_VENV) build dist *.egg-info .pytest_cache
