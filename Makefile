# Two commands for a fresh clone: `make demo` and `make test`. Each creates .venv if missing and
# installs idempotently: the stamp file is keyed on the dependency list (setup.py) and this file.
PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default; on GPU machines: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
KEY := $(shell cat setup.py Makefile | sha1sum | cut -c1-12)
STAMP := $(VENV)/.anvil-installed-$(KEY)
BIN := $(VENV)/bin
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export WANDB_MODE ?= offline

.PHONY: install demo test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet --no-build-isolation "deepspeed>=0.19,<0.20"
	$(BIN)/pip install --quiet --no-build-isolation -e '.[test]'
	rm -f $(VENV)/.anvil-installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m launch.demo

# Two pytest-xdist workers, one test file each at a time (module fixtures built once): 19-23 min on
# 2 cores instead of 24-25 in one process (which `$(BIN)/pytest tests` still gives).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

# ruff's settings live in pyproject.toml ([tool.ruff]); the same checks run as a pre-commit hook.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark unattended (benchmarks/bench.py): the peers' own env (benchmarks/.venv-peers), the real
# inputs where this machine allows, each script even if another failed, results/*.json, one table in README.
# -P keeps benchmarks/ off sys.path: benchmarks/tokenize.py would shadow the stdlib tokenize module.
bench: $(STAMP)
	$(BIN)/python -P benchmarks/bench.py

clean-venv:
	rm -rf $(VENV)
